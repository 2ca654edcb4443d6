"""The model-based test of history and trash: random sequences of create, update, delete,
restore and revert through the API, checked after every step against an in-memory model; and
replaying each row's history gives the stored row."""

from __future__ import annotations

import random

import pytest

from tests.support.history import replay

COLUMNS = [
    {"key": "a", "type": "integer"},
    {"key": "b", "type": "string"},
    {"key": "c", "type": "select", "options": [{"id": 1, "label": "x"}, {"id": 2, "label": "y"}]},
]
VALUES = {"a": [None, 1, 2, 3], "b": [None, "p", "q"], "c": [None, 1, 2]}


class Model:
    def __init__(self) -> None:
        self.live: dict[str, dict] = {}  # row id -> values
        self.trashed: dict[str, dict] = {}
        self.states: dict[str, list[tuple[str, dict]]] = {}  # row -> (revision id, values after)


def _values(rng: random.Random, keys: list[str]) -> dict:
    return {k: rng.choice(VALUES[k]) for k in keys}


def _stored(row: dict) -> dict:
    return {k: row[k] for k in VALUES if row.get(k) is not None}


async def _step(api, owner, rng: random.Random, model: Model) -> None:
    ops = ["create"]
    if model.live:
        ops += ["update", "update", "delete", "revert"]
    if model.trashed:
        ops.append("restore")
    op = rng.choice(ops)
    if op == "create":
        body = {k: v for k, v in _values(rng, list(VALUES)).items() if v is not None}
        row = await api.call("POST", "/api/data/t", owner, expect=201, json=body)
        model.live[row["id"]] = body
    elif op == "update":
        row_id = rng.choice(sorted(model.live))
        body = _values(rng, rng.sample(list(VALUES), rng.randint(1, 3)))
        await api.call("PATCH", f"/api/data/t/{row_id}", owner, expect=200, json=body)
        state = dict(model.live[row_id])
        for key, value in body.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        model.live[row_id] = state
    elif op == "delete":
        row_id = rng.choice(sorted(model.live))
        await api.call("DELETE", f"/api/data/t/{row_id}", owner, expect=204)
        model.trashed[row_id] = model.live.pop(row_id)
    elif op == "restore":
        row_id = rng.choice(sorted(model.trashed))
        trash = await api.call("GET", "/api/trash?limit=1000", owner, expect=200)
        (item,) = [i for i in trash["items"] if i["row_id"] == row_id]
        await api.call("POST", f"/api/trash/{item['id']}/restore", owner, expect=200)
        model.live[row_id] = model.trashed.pop(row_id)
    else:  # revert to a random earlier revision that left the row in its table
        row_id = rng.choice(sorted(model.live))
        page = await api.call("GET", f"/api/data/t/{row_id}/history?limit=1000", owner, expect=200)
        items = list(reversed(page["items"]))
        index = rng.randrange(len(items))
        target = items[index]
        path = f"/api/data/t/{row_id}/history/{target['id']}/revert"
        if target["action"] == "deleted":
            await api.call("POST", path, owner, expect=409)
            return
        await api.call("POST", path, owner, expect=200)
        model.live[row_id] = replay(list(reversed(items[: index + 1])))


async def _check(api, owner, model: Model) -> None:
    listed = await api.call("GET", "/api/data/t?limit=1000", owner, expect=200)
    assert {r["id"]: _stored(r) for r in listed["items"]} == model.live
    for row_id in model.trashed:
        await api.call("GET", f"/api/data/t/{row_id}", owner, expect=404)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_changes_match_the_model_and_replay(api, owner, create_table, seed):
    await create_table(owner, "t", COLUMNS)
    rng = random.Random(seed)
    model = Model()
    for _ in range(60):
        await _step(api, owner, rng, model)
        await _check(api, owner, model)
    for row_id, values in model.live.items():
        page = await api.call("GET", f"/api/data/t/{row_id}/history?limit=1000", owner, expect=200)
        assert replay(page["items"]) == values, row_id
    for row_id in model.trashed:
        page = await api.call("GET", f"/api/data/t/{row_id}/history?limit=1000", owner, expect=200)
        assert page["items"][0]["action"] == "deleted"
        assert replay(page["items"]) == {}
