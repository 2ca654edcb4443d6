"""`/api/leads`, `/api/legal-entities`, `/api/individuals` (docs/api.md "Standard entities"): the
row routes of `/api/data/{table}` bound to the built-in tables, so filters, sorting, per-user order,
bulk operations and aliases work on them unchanged. Access comes from `leads.read|write` etc."""

from __future__ import annotations

from dataclasses import replace

from crm_core.tables.builtin import BUILTIN_TABLES
from handlers import data, files, history
from handlers.routing import RouteTable, TableAccess

routes = RouteTable("entities")

for _spec in BUILTIN_TABLES:
    _slug, _key = _spec["slug"], _spec["key"]
    for _route in [*data.routes.routes, *files.routes.routes, *history.routes.routes]:
        assert isinstance(_route.access, TableAccess)
        routes.routes.append(
            replace(
                _route,
                path=_route.path.replace("/api/data/{table}", f"/api/{_slug}"),
                access=replace(_route.access, fixed_table=_key),
                tag=_slug,
                summary=_route.summary.replace("rows", _spec["name"].lower()).replace(
                    "row", _spec["singular"]
                ),
                operation_id=f"{_key}_{_route.handler.__name__}",
            )
        )
