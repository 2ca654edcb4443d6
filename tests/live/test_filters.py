"""A filtered subscription sends exactly the rows the list answers for the same filter
(issue #25 §1): the live side evaluates the compiled MongoDB condition in Python
(mongomock's evaluator) against the stored row; both sides are compared on the same rows."""

from __future__ import annotations

import random

import orjson
import pytest

from tests.support.api import Api, make_settings
from tests.support.live import ready, ws_connect

pytestmark = pytest.mark.asyncio

COLUMNS = [
    {"key": "title", "type": "string"},
    {"key": "amount", "type": "integer"},
    {"key": "ratio", "type": "float"},
    {"key": "active", "type": "boolean"},
    {"key": "due", "type": "date"},
    {"key": "email", "type": "email"},
]
FILTERS = [
    [{"field": "amount", "op": "gt", "value": 5}],
    [{"field": "amount", "op": "between", "value": [2, 8]}],
    [{"field": "amount", "op": "neq", "value": 3}],
    [{"field": "title", "op": "contains", "value": "ab"}],
    [{"field": "title", "op": "starts_with", "value": "a"}],
    [{"field": "title", "op": "blank"}],
    [{"field": "ratio", "op": "lte", "value": 0.5}],
    [{"field": "active", "op": "eq", "value": True}],
    [{"field": "due", "op": "gte", "value": "2025-03-10"}],
    [{"field": "due", "op": "eq", "value": "2025-03-05"}],
    [{"field": "email", "op": "ends_with", "value": "example.com"}],
    [
        {
            "or": [
                {"field": "amount", "op": "lt", "value": 2},
                {"field": "active", "op": "eq", "value": False},
            ]
        }
    ],
    [{"field": "amount", "op": "in", "value": [1, 4, 9]}, {"field": "title", "op": "not_blank"}],
]


@pytest.fixture
def settings():
    return make_settings(events_max_connections_per_user=len(FILTERS) + 1)


def random_row(rng: random.Random) -> dict:
    row: dict = {}
    if rng.random() < 0.8:
        row["title"] = rng.choice(["Abc", "xaby", "alpha", "Beta", "", "zz ab"])
    if rng.random() < 0.8:
        row["amount"] = rng.randint(0, 10)
    if rng.random() < 0.8:
        row["ratio"] = round(rng.random(), 2)
    if rng.random() < 0.8:
        row["active"] = rng.random() < 0.5
    if rng.random() < 0.8:
        row["due"] = f"2025-03-{rng.randint(1, 20):02d}"
    if rng.random() < 0.6:
        row["email"] = rng.choice(["a@example.com", "b@other.org", "c@sub.example.com"])
    return row


async def test_filtered_subscriptions_match_the_list(client, api: Api, owner, factories):
    await factories.table(owner, key="deals", columns=COLUMNS)
    sockets = []
    for filters in FILTERS:
        live = await ready(await ws_connect(client, owner.access_token))
        subscribed = await live.subscribe("deals", filters=filters)
        assert subscribed == {"type": "subscribed", "table": "deals", "filtered": True}
        sockets.append(live)
    rng = random.Random(25)
    for _ in range(60):
        await api.call("POST", "/api/data/deals", owner, expect=201, json=random_row(rng))
    for filters, live in zip(FILTERS, sockets, strict=True):
        frames = await live.barrier()
        pushed = {f["row_id"] for f in frames if f["type"] == "row.created" and f["match"]}
        assert all(f["match"] for f in frames if f["type"] == "row.created")
        listed = await api.call(
            "GET",
            "/api/data/deals",
            owner,
            expect=200,
            params={"filters": orjson.dumps(filters).decode(), "limit": 1000},
        )
        assert pushed == {r["id"] for r in listed["items"]}, filters
        assert listed["items"], f"the filter selects nothing, the test proves little: {filters}"
        await live.ws.close()


async def test_an_update_leaving_the_filter_is_sent_with_match_false(
    client, api: Api, owner, factories
):
    await factories.table(owner, key="deals", columns=COLUMNS)
    live = await ready(await ws_connect(client, owner.access_token))
    await live.subscribe("deals", filters=[{"field": "amount", "op": "gt", "value": 5}])
    row = await api.call("POST", "/api/data/deals", owner, expect=201, json={"amount": 9})
    assert (await live.expect("row.created"))["match"] is True
    await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"amount": 1})
    left = await live.expect("row.updated")
    assert left["match"] is False and left["changed"] == ["amount"]
    await api.call("PATCH", f"/api/data/deals/{row['id']}", owner, expect=200, json={"amount": 0})
    assert await live.barrier() == []  # neither before nor after matches: not sent
    await live.ws.close()
