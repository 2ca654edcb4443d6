"""Helpers of the import suites: a table to import into, an upload, waiting for a job."""

from __future__ import annotations

from tests.support.waits import until

COLUMNS = [
    {"key": "name", "type": "string", "required": True, "name": "Full name"},
    {"key": "email", "type": "email", "unique": True},
    {"key": "amount", "type": "float"},
    {"key": "due", "type": "date"},
    {"key": "vip", "type": "boolean"},
    {
        "key": "status",
        "type": "select",
        "options": [{"id": 1, "label": "New"}, {"id": 2, "label": "Won"}],
    },
]
GOOD_CSV = (
    "Full name,email,Amount,due,vip,status,notes\n"
    'Ann,ann@example.com,"1,5",15.08.2025,да,Won,x\n'
    "Bob,bob@example.com,2,2025-08-16,no,New,y\n"
)
BAD_ROWS_CSV = GOOD_CSV + ",nobody@example.com,3,,,,\nCid,not-an-email,abc,,,Lost,\n"


async def make_table(api, owner, key="people"):
    await api.call(
        "POST", "/api/meta/tables", owner, expect=201, json={"key": key, "columns": COLUMNS}
    )


async def upload(client, account, data, table="people", query="", content_type="text/csv"):
    resp = await client.post(
        f"/api/data/{table}/imports?{query}",
        data=data,
        headers={**account.headers, "Content-Type": content_type},
    )
    return resp.status, await resp.json()


async def finished(api, account, job, table="people"):
    """The import job once it is `completed` or `failed` (tests/support/waits.py: the deadline
    only bounds a hang)."""
    last = [None]

    async def done():
        last[0] = await api.call(
            "GET", f"/api/data/{table}/imports/{job['id']}", account, expect=200
        )
        return last[0] if last[0]["state"] in ("completed", "failed") else None

    try:
        return await until(done, f"import {job['id']} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last[0]}") from None


async def confirm(api, account, job, table="people", expect=202, **body):
    return await api.call(
        "POST", f"/api/data/{table}/imports/{job['id']}/confirm", account, expect=expect, json=body
    )


async def stored(api, account, table="people"):
    page = await api.call("GET", f"/api/data/{table}?sort_by=name&limit=1000", account, expect=200)
    return page["items"]
