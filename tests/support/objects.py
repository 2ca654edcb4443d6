"""Objects of a tenant for each path parameter of the declared routes, made on first use: the
generated permission-matrix and isolation suites (tests/access/) fill every route's path with
them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.api import ENTITY_ROWS, Account, Factories, unique_number
from tests.support.attachments import upload

# How to make an existing object for each path parameter of the declared routes, in a tenant,
# for the generated permission-matrix and isolation suites. A route with a new `{name}` needs
# one maker here: an async function of (`TenantObjects`, the route's built-in entity or None)
# answering the value for the path. `in_table=True`: the object lives in the route's table
# (the `{table}` of the path, or the built-in entity of /api/leads/... routes), so it is made
# once per table.
PathMaker = Callable[["TenantObjects", str | None], Awaitable[str]]
PATH_PARAMS: dict[str, PathMaker] = {}
IN_TABLE: set[str] = set()


def path_param(name: str, in_table: bool = False) -> Callable[[PathMaker], PathMaker]:
    def register(maker: PathMaker) -> PathMaker:
        PATH_PARAMS[name] = maker
        if in_table:
            IN_TABLE.add(name)
        return maker

    return register


class TenantObjects:
    """Objects of one tenant, made by its `owner` on first use and kept: `await
    objects.get("row_id")` makes a table with a row the first time, answers the same id after.
    `caller` is who will call the route (for objects a user can only reach when they are its
    own, e.g. a personal token)."""

    def __init__(self, factories: Factories, owner: Account, caller: Account | None = None) -> None:
        self.factories = factories
        self.api = factories.api
        self.owner = owner
        self.caller = caller or owner
        self.values: dict[tuple[str | None, str], str] = {}

    async def get(self, name: str, entity: str | None = None) -> str:
        """The value of path parameter `name`; `entity`: the route's built-in entity table."""
        key = (entity if name in IN_TABLE else None, name)
        if key not in self.values:
            maker = PATH_PARAMS.get(name)
            assert maker is not None, f"no maker for path parameter {{{name}}} in PATH_PARAMS"
            self.values[key] = await maker(self, key[0])
        return self.values[key]

    async def table(self, entity: str | None) -> str:
        """The table an in-table object lives in."""
        return entity or await self.get("table")

    async def path(self, route: Any, **given: str) -> str:
        """The route's path with every parameter filled with an object of this tenant (or the
        value `given` for it)."""
        entity = getattr(route.access, "fixed_table", None)
        path = route.openapi_path
        for name in route.path_params:
            value = given[name] if name in given else await self.get(name, entity)
            path = path.replace(f"{{{name}}}", value)
        return path


@path_param("table")
async def _table(objects: TenantObjects, entity: str | None) -> str:
    return (await objects.factories.table(objects.owner, f"t{unique_number()}"))["key"]


@path_param("column")
async def _column(objects: TenantObjects, entity: str | None) -> str:
    await objects.get("table")  # the table's one column
    return "n"


@path_param("row_id", in_table=True)
async def _row_id(objects: TenantObjects, entity: str | None) -> str:
    table = await objects.table(entity)
    item = ENTITY_ROWS[entity] if entity else {"n": 1}
    return (await objects.factories.rows(objects.owner, table, [item]))[0]["id"]


@path_param("revision_id", in_table=True)
async def _revision_id(objects: TenantObjects, entity: str | None) -> str:
    row_id = await objects.get("row_id", entity)
    table = await objects.table(entity)
    path = f"/api/data/{table}/{row_id}/history"
    page = await objects.api.call("GET", path, objects.owner, expect=200)
    return str(page["items"][0]["id"])


@path_param("item_id")
async def _item_id(objects: TenantObjects, entity: str | None) -> str:
    # a row of a table of its own, deleted: an item of the trash
    table = (await objects.factories.table(objects.owner, f"g{unique_number()}"))["key"]
    (row,) = await objects.factories.rows(objects.owner, table, [{"n": 1}])
    await objects.api.call("DELETE", f"/api/data/{table}/{row['id']}", objects.owner, expect=204)
    page = await objects.api.call("GET", f"/api/trash?table={table}", objects.owner, expect=200)
    return str(page["items"][0]["id"])


@path_param("user_id")
async def _user_id(objects: TenantObjects, entity: str | None) -> str:
    return (await objects.factories.user(objects.owner, "viewer")).user_id


@path_param("role_id")
async def _role_id(objects: TenantObjects, entity: str | None) -> str:
    return (await objects.factories.role(objects.owner))["id"]


@path_param("share_id")
async def _share_id(objects: TenantObjects, entity: str | None) -> str:
    body = {"table": await objects.get("table"), "role_id": await objects.get("role_id")}
    share = await objects.api.call(
        "POST", "/api/shares", objects.owner, expect=201, json={**body, "access": "read"}
    )
    return share["id"]


@path_param("campaign_id")
async def _campaign_id(objects: TenantObjects, entity: str | None) -> str:
    campaign = await objects.factories.campaign(objects.owner)
    assert campaign["counts"]["sent"] == 1, campaign
    return campaign["id"]


@path_param("message_id")
async def _message_id(objects: TenantObjects, entity: str | None) -> str:
    campaign_id = await objects.get("campaign_id")
    page = await objects.api.call(
        "GET", f"/api/sms/campaigns/{campaign_id}/messages", objects.owner, expect=200
    )
    return page["items"][0]["id"]


@path_param("webhook_id")
async def _webhook_id(objects: TenantObjects, entity: str | None) -> str:
    # on a table of its own that nothing writes to: no delivery ever changes the world
    table = (await objects.factories.table(objects.owner, f"w{unique_number()}"))["key"]
    body = {"name": "w", "url": "http://127.0.0.1:9/", "events": ["row.deleted"]}
    hook = await objects.api.call(
        "POST", "/api/webhooks", objects.owner, expect=201, json={**body, "tables": [table]}
    )
    return str(hook["id"])


@path_param("delivery_id")
async def _delivery_id(objects: TenantObjects, entity: str | None) -> str:
    # a ping to the webhook's closed port: a finished (failed) delivery in its log
    hook_id = await objects.get("webhook_id")
    delivery = await objects.api.call(
        "POST", f"/api/webhooks/{hook_id}/test", objects.owner, expect=200
    )
    return str(delivery["id"])


@path_param("token_id")
async def _token_id(objects: TenantObjects, entity: str | None) -> str:
    # a personal token: only its maker reaches it, so it is made by the route's caller
    token = await objects.api.call(
        "POST", "/api/tokens", objects.caller, expect=201, json={"name": "t"}
    )
    return str(token["id"])


# an uploaded CSV waiting in the route's table (state `uploaded`)
@path_param("import_id", in_table=True)
async def _import_id(objects: TenantObjects, entity: str | None) -> str:
    table = await objects.table(entity)
    resp = await objects.api.client.post(
        f"/api/data/{table}/imports",
        data=b"n\n1\n",
        headers={**objects.owner.headers, "Content-Type": "text/csv"},
    )
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


@path_param("file_id")
async def _file(objects: TenantObjects, entity: str | None) -> str:
    # uploaded by the caller: its uploader may download a file no row holds yet (text, which
    # the suites read as text)
    return str((await upload(objects.api, objects.caller, b"a text file", "notes.txt"))["id"])
