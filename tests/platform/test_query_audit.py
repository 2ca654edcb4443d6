"""The query-shape audit (issue #12 §1): every query the application issued during this test
session, and in a scenario of its own, is checked against the declared indexes by MongoDB's
rules (tests/support/query_audit.py). Runs last (tests/conftest.py orders it) so the session's
record is complete; run alone it checks its own scenario."""

from __future__ import annotations

from crm_core.platform.indexes import SYSTEM_INDEXES, TENANT_INDEXES
from crm_core.platform.storage import QueryRecord, recording
from handlers.routing import SERVICES
from models.accounts import SYSTEM_DOCUMENTS
from models.admin import ADMIN_DOCUMENTS
from tests.support.api import CONTRACTS, Factories, add_user, sent_campaign, tenant_db
from tests.support.query_audit import audit, declared_indexes, unserved

DECLARED = declared_indexes([*SYSTEM_DOCUMENTS, *ADMIN_DOCUMENTS])


async def create_contracts(api, owner):
    await Factories(api).table(owner, **CONTRACTS)


async def scenario(api, client) -> None:
    owner = await api.register()
    manager = await add_user(api, client, owner, "manager")
    await create_contracts(api, owner)
    row = await api.call(
        "POST", "/api/data/contracts", owner, json={"company_name": "A"}, expect=201
    )
    await api.call(
        "POST",
        "/api/data/contracts/bulk",
        owner,
        json={"items": [{"company_name": f"B{i}"} for i in range(3)]},
        expect=201,
    )
    await api.call("GET", "/api/data/contracts?sort_by=_id&limit=2", owner, expect=200)
    await api.call("GET", f"/api/data/contracts/{row['id']}", owner, expect=200)
    await api.call(
        "PATCH", f"/api/data/contracts/{row['id']}", owner, json={"total_sum": 5}, expect=200
    )
    await api.call(
        "POST",
        "/api/shares",
        owner,
        json={"table": "contracts", "user_id": manager.user_id, "access": "read"},
        expect=201,
    )
    await api.call("GET", "/api/data/contracts?sort_by=_id", manager, expect=200)
    await api.call("GET", "/api/meta/tables", manager, expect=200)
    await api.call(
        "PUT",
        "/api/meta/tables/contracts/view",
        owner,
        json={"column_order": [], "hidden": []},
    )
    await api.call("DELETE", f"/api/data/contracts/{row['id']}", owner, expect=204)
    await sent_campaign(api, owner)
    await api.client.post("/api/auth/refresh", json={"refresh_token": owner.refresh_token})


async def test_the_scenario_issues_only_index_served_queries(api, client):
    with recording() as log:
        await scenario(api, client)
    assert len(log) > 50
    assert audit(log.records, DECLARED) == []


async def test_every_query_of_the_session_is_index_served_or_allowed(session_queries):
    failures = audit(session_queries.records, DECLARED)
    assert failures == [], "\n".join(failures)


async def test_declared_tenant_indexes_exist(api, client):
    owner = await api.register()
    db = tenant_db(client, owner)
    for spec in TENANT_INDEXES:
        info = await db[spec.collection].index_information()
        assert spec.name in info, spec
        assert [tuple(k) for k in info[spec.name]["key"]] == [tuple(k) for k in spec.keys]
        assert bool(info[spec.name].get("unique")) == spec.unique


async def test_declared_system_indexes_exist(api, client):
    await api.register()
    db = client.app[SERVICES].storage.system_db
    for spec in SYSTEM_INDEXES:
        info = await db[spec.collection].index_information()
        assert spec.name in info, spec
        assert [tuple(k) for k in info[spec.name]["key"]] == [tuple(k) for k in spec.keys]


def _record(collection: str, kind: str = "find", query=None, sort=(), **kw) -> QueryRecord:
    from crm_core.platform.storage import filter_conditions

    return QueryRecord(
        "crm_t_" + "a" * 24,
        collection,
        kind,
        conditions=filter_conditions(query or {}),
        sort=tuple(sort),
        filter=query or {},
        **kw,
    )


def test_planning_rules():
    idx = [(("a", 1), ("b", 1), ("c", 1)), (("_id", 1),)]
    served = [
        _record("t", query={"a": 1}),
        _record("t", query={"a": 1, "b": {"$in": [1, 2]}}, sort=[("c", -1)]),
        _record("t", query={"a": 1, "b": 2, "c": {"$gt": 3}}),
        _record("t", query={"a": 1, "z": {"$ne": 2}}),
        _record("t", query={"_id": 5, "z": 1}),
        _record("t", query={"$or": [{"a": 1}, {"_id": 2}]}),
        _record("t", query={}, sort=[("_id", -1)], limited=True),
        _record("t", "count", query={"_id": 1}),
        _record("t", "count", query={"a": 1}, limited=True),
    ]
    for record in served:
        assert unserved(record, idx) is None, record
    scans = [
        _record("t", query={}),
        _record("t", query={"b": 1}),
        _record("t", query={"a": 1}, sort=[("z", 1)]),
        _record("t", query={"a": 1}, sort=[("b", 1), ("c", -1)]),
        _record("t", query={"$or": [{"a": 1}, {"z": 2}]}),
        _record("t", query={"z": {"$ne": 1}}),
        _record("t", "count", query={"a": 1}),
        _record("t", "count", query={"z": 1}, limited=True),
        _record("t", query={}, sort=[("_id", 1)]),
        _record("t", "aggregate", query={"a": 1}, stages=("$match", "$addFields", "$sort")),
    ]
    for record in scans:
        assert unserved(record, idx) is not None, record


def test_the_whole_sort_must_be_served_by_one_index():
    """A cursor page sorts by a column with `_id` breaking ties (crm_core/platform/cursors.py):
    every key of the sort, in order, must be the next keys of one index. The old plain column
    index `(n)` serves the first key only, so MongoDB would sort every matching row in memory;
    `(n, _id)`, the shape crm_core/tables/meta.py builds, serves the sort both ways."""
    old = [(("n", 1),), (("_id", 1),)]
    new = [(("n", 1), ("_id", 1)), (("_id", 1),)]
    cursor_page = {"n": {"$gte": 2}, "$or": [{"n": {"$gt": 2}}, {"n": 2, "_id": {"$gt": 1}}]}
    pages = [
        _record("t", query={}, sort=[("n", 1), ("_id", 1)], limited=True),
        _record("t", query={}, sort=[("n", -1), ("_id", -1)], limited=True),
        _record("t", query=cursor_page, sort=[("n", 1), ("_id", 1)], limited=True),
        _record("t", query={"n": {"$gt": 2}}, sort=[("n", -1), ("_id", -1)]),
    ]
    for record in pages:
        assert unserved(record, new) is None, record
        reason = unserved(record, old)
        assert reason is not None and "in-memory sort" in reason, record
    # equal on the column, the rest of the sort is `_id`: `(n)` has no `_id` after `n`, and
    # the `_id` index read in order would be read whole to find the column's rows
    equal = _record("t", query={"n": 2}, sort=[("n", 1), ("_id", 1)])
    assert unserved(equal, new) is None
    assert unserved(equal, old) is not None
    # a sort whose later keys run against the index's directions is no walk of it either
    mixed = _record("t", query={}, sort=[("n", 1), ("_id", -1)], limited=True)
    assert unserved(mixed, new) is not None


async def test_share_upserts_rely_on_partial_unique_indexes(api, client):
    owner = await api.register()
    first = await add_user(api, client, owner, "manager")
    second = await add_user(api, client, owner, "viewer")
    await create_contracts(api, owner)
    roles = await api.call("GET", "/api/roles", owner, expect=200)
    for subject in (
        {"user_id": first.user_id},
        {"user_id": second.user_id},
        {"role_id": roles["items"][2]["id"]},
        {"role_id": roles["items"][3]["id"]},
        {"user_id": first.user_id},  # again: the upsert changes the level, adds nothing
    ):
        await api.call(
            "POST",
            "/api/shares",
            owner,
            json={"table": "contracts", "access": "write", **subject},
            expect=201,
        )
    assert await tenant_db(client, owner)["_shares"].count_documents({}) == 4
