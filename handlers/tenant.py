"""`/api/tenant`: the company's own settings (docs/api.md "Company settings")."""

from __future__ import annotations

from handlers.routing import Call, Permission, RouteTable
from models.accounts import TenantOut, TenantPatch, tenant_out

routes = RouteTable("tenant")
MANAGE = Permission(code="tenant.manage")


@routes.get("/api/tenant", access=MANAGE, summary="The company's settings", response=TenantOut)
async def get_tenant(call: Call) -> TenantOut:
    return tenant_out(await call.services.tenants.get_settings(call.ctx))


@routes.patch(
    "/api/tenant",
    access=MANAGE,
    summary="Change the company's name, time zone or default phone region",
    body=TenantPatch,
    response=TenantOut,
)
async def update_tenant(call: Call, body: TenantPatch) -> TenantOut:
    """Only the fields given change. An unknown IANA time zone or phone region is a 400 naming
    the field. Changing the time zone rewrites no stored value: dates stay in UTC; naive dates
    sent afterwards and the `is_within` periods of date filters follow the new zone."""
    return tenant_out(await call.services.tenants.update_settings(call.ctx, body))
