"""The storage module: the query recorder and the embedded database's worker thread."""

from __future__ import annotations

import ast
import asyncio
import threading
from pathlib import Path

from mongomock import collection as mongomock_collection

from crm_core.platform.storage import filter_conditions, query_purpose, recording
from handlers.routing import SERVICES
from tests.support.api import CONTRACTS, Factories, rows_of, tenant_db


async def create_contracts(api, owner):
    await Factories(api).table(owner, **CONTRACTS)


async def test_recorder_counts_the_queries_of_one_request(api, owner):
    await create_contracts(api, owner)
    await api.call("POST", "/api/data/contracts", owner, json={"company_name": "A"}, expect=201)
    with recording() as log:
        page = await api.call(
            "GET", "/api/data/contracts?sort_by=total_sum&limit=5", owner, expect=200
        )
    assert page["total"] == 1
    name = (await rows_of(api.client, owner, "contracts")).name
    finds = [r for r in log.records if r.collection == name and r.kind == "find"]
    assert len(finds) == 1
    assert finds[0].sort[0] == ("total_sum", 1)
    assert finds[0].limited
    assert log.count("count", name) == 1
    assert log.round_trips == len(log.records) >= 3  # user, tenant, ... then the page
    assert {r.database for r in log.records} >= {"crm", f"crm_t_{owner.tenant_id}"}


async def test_recorder_blocks_nest_and_name_their_purpose(api, owner, client):
    db = tenant_db(client, owner)
    with recording() as outer:
        await api.call("GET", "/api/meta/tables", owner, expect=200)
        with recording() as inner, query_purpose("test.purpose"):
            await db["_roles"].find_one({"key": "owner"})
            await db["_roles"].count_documents({})
    # the recorder is process-wide: keep this company's queries (a background task of an
    # earlier test may still be writing elsewhere)
    inner_records = [r for r in inner.records if r.database == db.name]
    outer_records = [r for r in outer.records if r.database == db.name]
    assert [(r.kind, r.purpose) for r in inner_records] == [
        ("find_one", "test.purpose"),
        ("count", "test.purpose"),
    ]
    assert inner_records[0].conditions == (("key", "$eq"),)
    assert len(outer_records) > len(inner_records)
    assert outer_records[-2:] == inner_records
    assert all(r.purpose is None for r in outer_records[:-2])


def test_filter_conditions_flatten_and_and_name_operators():
    query = {
        "$and": [{"a": 1}, {"b": {"$gt": 2, "$lt": 5}}],
        "$or": [{"c": 1}, {"d": {"$in": [1]}}],
        "$expr": {"$eq": ["$x", 1]},
    }
    assert filter_conditions(query) == (
        ("a", "$eq"),
        ("b", "$gt"),
        ("b", "$lt"),
        ("c", "$or"),
        ("d", "$or"),
        ("", "$expr"),
    )
    assert filter_conditions({"doc": {"nested": 1}}) == (("doc", "$eq"),)


async def test_embedded_queries_run_off_the_event_loop(api, owner, monkeypatch):
    """While one embedded query is stuck in the database, the event loop still answers."""
    await create_contracts(api, owner)
    await api.call("POST", "/api/data/contracts", owner, json={"company_name": "A"}, expect=201)
    release = threading.Event()
    entered = threading.Event()
    threads: list[str] = []
    original = mongomock_collection.filter_applies

    def blocking_match(query, document):
        if document.get("company_name") == "A" and not entered.is_set():
            threads.append(threading.current_thread().name)
            entered.set()
            release.wait(timeout=30)
        return original(query, document)

    monkeypatch.setattr(mongomock_collection, "filter_applies", blocking_match)
    listing = asyncio.create_task(api.call("GET", "/api/data/contracts", owner))
    while not entered.is_set() and not listing.done():
        await asyncio.sleep(0.001)
    assert not listing.done(), await listing
    # the listing holds the database thread: /health (no database) still answers
    health = await api.call("GET", "/health", expect=200)
    assert health is not None
    assert not listing.done()
    release.set()
    page = await listing
    assert [r["company_name"] for r in page["items"]] == ["A"]
    assert len(threads) == 1 and threads[0].startswith("embedded-db")


async def test_custom_roles_store_no_key_so_the_sparse_unique_index_skips_them(api, owner, client):
    for name in ("Sales", "Support"):
        await api.call(
            "POST", "/api/roles", owner, json={"name": name, "permissions": []}, expect=201
        )
    custom = await tenant_db(client, owner)["_roles"].find({"builtin": False}).to_list(None)
    assert len(custom) == 2
    assert all("key" not in role for role in custom)


# ---- guards: what stays inside the storage package, what stays in the tests ----------------

ROOT = Path(__file__).resolve().parents[2]
APPLICATION = ("crm_core", "handlers", "tasks", "models", "crm_app")
STORAGE_PACKAGE = Path("crm_core/platform/storage")
# the query-audit rules (tests/support/query_audit.py): no production module defines them
AUDIT_NAMES = {"audit", "unserved", "declared_indexes", "ALLOWED", "Exemption", "index_keys_for"}


def _application_modules(root: Path):
    for package in APPLICATION:
        for path in sorted((root / package).rglob("*.py")):
            yield path.relative_to(root), ast.parse(path.read_text(encoding="utf-8"))


def beanie_handle_calls(root: Path) -> list[str]:
    """`get_motor_collection()` calls outside the storage package (`path:line`)."""
    found = []
    for relative, tree in _application_modules(root):
        if relative.is_relative_to(STORAGE_PACKAGE):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "get_motor_collection":
                found.append(f"{relative}:{node.lineno}")
    return found


def audit_rules_in_production(root: Path) -> list[str]:
    """Production modules that import the tests' query audit, or define its rules."""
    found = []
    for relative, tree in _application_modules(root):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
                found.append(f"{relative}:{node.lineno} imports {node.module}")
            elif isinstance(node, ast.Import) and any(
                a.name.startswith("tests") for a in node.names
            ):
                found.append(f"{relative}:{node.lineno} imports tests")
            elif isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in AUDIT_NAMES:
                found.append(f"{relative}:{node.lineno} defines {node.name}")
            elif isinstance(node, ast.Assign | ast.AnnAssign) and any(
                isinstance(t, ast.Name) and t.id in AUDIT_NAMES
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            ):
                found.append(f"{relative}:{node.lineno} defines an audit allow-list")
    return found


def test_only_the_storage_package_reaches_beanies_collection_handles():
    # named, typed collections come from crm_core/platform/storage (`system_collection`)
    assert beanie_handle_calls(ROOT) == []


def test_production_code_neither_imports_nor_defines_the_query_audit_rules():
    assert audit_rules_in_production(ROOT) == []


def test_system_collection_is_the_documents_collection(api, owner, client):
    from crm_core.platform.storage import system_collection
    from models.accounts import User

    collection = system_collection(User)
    assert collection.name == "users"
    assert collection.database.name == client.app[SERVICES].storage.system_db.name
