"""The embedded database's cheaper paths through mongomock (crm_core/platform/storage/
embedded.py): a filter's leading plain equalities decide the documents they can without
mongomock's filter, `count_documents` with a limit stops at the limit, and updates copy only
dicts and lists. Each answers what mongomock's own filter, count and copy answer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from bson import Int64, ObjectId
from mongomock import collection as mongomock_collection
from mongomock import filtering

from crm_core.platform.storage import embedded
from tests.support.api import tenant_db

MARK = ObjectId()
VALUES: list[Any] = [
    "a",
    "b",
    1,
    2,
    1.0,
    True,
    None,
    ["a", "x"],
    [1, 2],
    MARK,
    str(MARK),
    {"a": 1},
    Int64(1),
]


def _docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for n, value in enumerate([*VALUES, "missing"]):
        for j in (1, 2):
            doc: dict[str, Any] = {"_id": ObjectId(), "j": j, "n": n}
            if value != "missing":
                doc["k"] = value
            docs.append(doc)
    docs.append({"_id": ObjectId(), "": "a", "j": 1, "n": 99})
    return docs


SPECS: list[dict[str, Any]] = [
    {"k": "a"},
    {"k": 1},
    {"k": MARK},
    {"k": str(MARK)},
    {"k": True},
    {"k": None},
    {"k": 1, "j": 2},
    {"j": 1, "k": "a"},
    {"k": "a", "j": {"$gt": 1}},
    {"k": 2, "$or": [{"j": 1}, {"n": 3}]},
    {"": "a"},
    {"k.a": 1},
    {"j": 2, "n": {"$in": [1, 2, 3]}},
    # the unknown operator raises only once a document passes the equality before it
    {"k": "a", "n": {"$bogus": 1}},
    {"k": "zzz", "n": {"$bogus": 1}},
]


def _expected(docs: list[dict[str, Any]], spec: dict[str, Any]) -> Any:
    """mongomock's own answer: its filter over every document, or the error it raises."""
    try:
        return sorted(
            (d for d in docs if filtering.filter_applies(spec, d)), key=lambda d: d["_id"]
        )
    except Exception as exc:  # the error is the answer
        return type(exc)


async def _answer(read: Any) -> Any:
    try:
        found = await read
    except Exception as exc:  # the error is the answer
        return type(exc)
    return sorted(found, key=lambda d: d["_id"]) if isinstance(found, list) else found


@pytest.fixture
async def stored(api, owner, client):
    db = tenant_db(client, owner)
    docs = _docs()
    await db["things"].insert_many([dict(d) for d in docs])
    return db["things"], docs


@pytest.mark.parametrize("spec", SPECS, ids=repr)
async def test_equalities_answer_what_mongomocks_filter_answers(stored, spec):
    collection, docs = stored
    expected = _expected(docs, spec)
    assert await _answer(collection.find(spec).to_list(None)) == expected
    assert await _answer(collection.find(spec).sort("_id", 1).to_list(None)) == expected
    ids = [d["_id"] for d in docs]
    named = {"_id": {"$in": ids}, **spec}
    assert await _answer(collection.find(named).to_list(None)) == expected
    count = len(expected) if isinstance(expected, list) else expected
    assert await _answer(collection.count_documents(spec)) == count
    for skip, limit in ((0, 1), (1, 2), (0, 1000), (5, 1)):
        bounded = min(max(count - skip, 0), limit) if isinstance(count, int) else count
        answer = collection.count_documents(spec, skip=skip, limit=limit)
        assert await _answer(answer) == bounded, (skip, limit)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
async def test_updates_change_what_the_filter_selects(stored, spec):
    collection, docs = stored
    expected = _expected(docs, spec)
    result = await _answer(collection.update_many(spec, {"$set": {"hit": True}}))
    if not isinstance(expected, list):
        assert result == expected
        return
    hit = await collection.find({"hit": True}).to_list(None)
    assert sorted(d["_id"] for d in hit) == [d["_id"] for d in expected]


async def test_leading_equalities_decide_without_mongomocks_filter(stored, monkeypatch):
    """A filter of plain equalities only is answered without mongomock's filter, on a scan and
    on a read by `_id`s; one with other conditions runs it only on the documents whose
    equalities hold."""
    collection, docs = stored
    calls: list[object] = []

    def counting(spec: object, doc: Any) -> bool:
        if isinstance(doc, dict) and "j" in doc:  # this test's (not a sweeper's meanwhile)
            calls.append(spec)
        return filtering.filter_applies(spec, doc)

    monkeypatch.setattr(embedded, "filter_applies", counting)
    monkeypatch.setattr(mongomock_collection, "filter_applies", counting)
    assert len(await collection.find({"j": 1, "n": 0}).to_list(None)) == 1
    ids = [d["_id"] for d in docs]
    assert await collection.count_documents({"_id": {"$in": ids}, "j": 2}) == len(docs) // 2
    assert calls == []
    found = await collection.find({"n": 7, "k": {"$exists": True}}).to_list(None)
    assert len(found) == 2 and len(calls) == 2
    # a value of another type than the equality's (an array here) is mongomock's to judge
    assert len(await collection.find({"n": 7, "k": "a"}).to_list(None)) == 2
    assert len(calls) == 2 + 2


async def test_a_limited_count_stops_at_its_limit(stored, monkeypatch):
    collection, docs = stored
    calls: list[object] = []

    def counting(spec: object, doc: Any) -> bool:
        if isinstance(doc, dict) and "j" in doc:  # this test's (not a sweeper's meanwhile)
            calls.append(spec)
        return filtering.filter_applies(spec, doc)

    monkeypatch.setattr(embedded, "filter_applies", counting)
    monkeypatch.setattr(mongomock_collection, "filter_applies", counting)
    assert await collection.count_documents({"n": {"$gte": 0}}, limit=1) == 1
    assert len(calls) == 1
    assert await collection.count_documents({"n": {"$gte": 0}}, skip=2, limit=3) == 3
    assert len(calls) == 1 + 5
    assert await collection.count_documents({"n": {"$gte": 0}}) == len(docs)


async def test_an_update_leaves_the_stored_document_it_replaced_unchanged(api, owner, client):
    """Copy on write (docs/operations.md, "Embedded limits"): the document an update replaced
    keeps its values and shares no list or dict with the one stored in its place."""
    collection = tenant_db(client, owner)["things"]
    await collection.insert_one({"_id": 1, "tags": ["a"], "sub": {"n": [1]}, "v": 1})
    store = collection._crm_inner._store
    before = store._documents[1]
    kept = copy.deepcopy(before)
    result = await collection.update_one(
        {"_id": 1}, {"$push": {"tags": "b", "sub.n": 2}, "$inc": {"v": 1}}
    )
    assert result.modified_count == 1
    after = store._documents[1]
    assert before == kept
    assert after == {"_id": 1, "tags": ["a", "b"], "sub": {"n": [1, 2]}, "v": 2}
    assert after["tags"] is not before["tags"] and after["sub"] is not before["sub"]
    unchanged = await collection.update_one({"_id": 1}, {"$set": {"v": 2}})
    assert unchanged.modified_count == 0


def test_plain_copy_copies_containers_and_shares_immutable_values():
    moment = embedded.datetime(2026, 1, 2, 3, 4, 5)
    value = {"a": [1, {"b": [MARK, moment]}], "c": (1, [2]), "d": "x"}
    copied = embedded._plain_copy(value)
    assert copied == value
    assert copied["a"] is not value["a"] and copied["a"][1] is not value["a"][1]
    assert copied["a"][1]["b"][0] is MARK and copied["d"] is value["d"]
    assert copied["c"][1] is not value["c"][1]  # a tuple goes to copy.deepcopy


SET_VALUES: list[Any] = [
    "ascii",
    "Здравствуйте",
    "\ud800",  # a lone surrogate: BSON cannot hold it
    0,
    2**63 - 1,
    -(2**63),
    2**63,
    2**70,
    1.5,
    float("nan"),
    True,
    None,
    MARK,
    embedded.datetime(2026, 1, 2, 3, 4, 5),
    embedded.datetime(2026, 1, 2, 3, 4, 5, tzinfo=embedded.UTC),
    [1, [2]],
    {"a": 1},
    Int64(3),
]


@pytest.mark.parametrize("name", ["a", "$a", "a\0b", "0"])
@pytest.mark.parametrize("value", SET_VALUES, ids=repr)
def test_set_sets_what_mongomocks_set_sets(name, value):
    """`$set` of one field (`_set_field`) against mongomock's own `_set_updater`: the same
    document, or the same error."""
    answers = []
    for updater in (embedded._set_field, embedded._ORIGINAL_SET_UPDATER):
        for doc in ({"x": 1}, [1, 2]):
            try:
                updater(doc, name, value)
                answers.append(repr(doc))
            except Exception as exc:  # the error is the answer
                answers.append(type(exc).__name__)
    assert answers[:2] == answers[2:]


async def test_set_skips_the_trial_encoding_of_plain_values(api, owner, client, monkeypatch):
    collection = tenant_db(client, owner)["things"]
    await collection.insert_one({"_id": 1})
    encoded: list[object] = []
    real = mongomock_collection.BSON.encode

    def counting(document: object, *args: Any, **kwargs: Any) -> bytes:
        encoded.append(document)
        return real(document, *args, **kwargs)

    monkeypatch.setattr(mongomock_collection.BSON, "encode", counting)
    moment = embedded.datetime(2026, 1, 2, tzinfo=embedded.UTC)
    values = {"s": "sending", "n": 1, "at": moment, "by": MARK, "ok": True, "none": None}
    assert (await collection.update_one({"_id": 1}, {"$set": values})).modified_count == 1
    assert encoded == []
    with pytest.raises(OverflowError):
        await collection.update_one({"_id": 1}, {"$set": {"big": 2**70}})
    assert len(encoded) == 1
