"""The embedded engine's expressions that mongomock lacks or answers otherwise
(crm_core/platform/storage/embedded.py, docs/storage.md): each checked against the examples
and rules of the MongoDB 7 manual. On the mongoeco lane the same table runs against mongoeco."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.api import tenant_db


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


CASES: list[tuple[str, Any, Any]] = [
    # $dateAdd: a month past a shorter month's end is its last day
    (
        "dateAdd month end",
        {"$dateAdd": {"startDate": utc(2021, 1, 31), "unit": "month", "amount": 1}},
        utc(2021, 2, 28),
    ),
    # across a DST switch a day keeps the local time, 24 hours do not
    (
        "dateAdd day in a zone",
        {
            "$dateAdd": {
                "startDate": utc(2021, 3, 13, 17),
                "unit": "day",
                "amount": 1,
                "timezone": "America/New_York",
            }
        },
        utc(2021, 3, 14, 16),
    ),
    (
        "dateAdd hours",
        {"$dateAdd": {"startDate": utc(2021, 3, 13, 17), "unit": "hour", "amount": 24}},
        utc(2021, 3, 14, 17),
    ),
    ("dateAdd null", {"$dateAdd": {"startDate": None, "unit": "day", "amount": 1}}, None),
    # $dateDiff counts boundaries: one year between Dec 31 and Jan 1
    (
        "dateDiff year boundary",
        {"$dateDiff": {"startDate": utc(2020, 12, 31), "endDate": utc(2021, 1, 1), "unit": "year"}},
        1,
    ),
    (
        "dateDiff days in a zone",
        {
            "$dateDiff": {
                "startDate": utc(2024, 1, 1, 20),
                "endDate": utc(2024, 1, 1, 22),
                "unit": "day",
                "timezone": "Europe/Moscow",
            }
        },
        1,
    ),
    (
        "dateDiff weeks from Monday",
        {
            "$dateDiff": {
                "startDate": utc(2024, 1, 7),  # a Sunday
                "endDate": utc(2024, 1, 8),  # the Monday after
                "unit": "week",
                "startOfWeek": "monday",
            }
        },
        1,
    ),
    (
        "dateDiff weeks from Sunday (the default)",
        {"$dateDiff": {"startDate": utc(2024, 1, 7), "endDate": utc(2024, 1, 8), "unit": "week"}},
        0,
    ),
    (
        "dateDiff null",
        {"$dateDiff": {"startDate": None, "endDate": utc(2024, 1, 1), "unit": "day"}},
        None,
    ),
    # $round: half to even; integers stay; null stays null
    ("round half even down", {"$round": [10.5, 0]}, 10.0),
    ("round half even up", {"$round": [11.5, 0]}, 12.0),
    ("round negative", {"$round": [-10.5, 0]}, -10.0),
    ("round places", {"$round": [1234.5678, 2]}, 1234.57),
    ("round int", {"$round": [7, 0]}, 7),
    ("round null", {"$round": [None, 0]}, None),
    # date parts: null in, null out; a time zone moves the wall clock
    (
        "year in a zone",
        {"$year": {"date": utc(2024, 1, 1, 2), "timezone": "America/New_York"}},
        2023,
    ),
    ("year null", {"$year": {"date": None, "timezone": "UTC"}}, None),
    ("isoDayOfWeek Sunday", {"$isoDayOfWeek": {"date": utc(2024, 1, 7), "timezone": "UTC"}}, 7),
    ("dayOfMonth", {"$dayOfMonth": {"date": utc(2024, 2, 29, 23), "timezone": "Asia/Tokyo"}}, 1),
    # $not takes its argument in an array; null is false
    ("not false", {"$not": [False]}, True),
    ("not null", {"$not": [None]}, True),
    ("not true", {"$not": [True]}, False),
    # $toUpper / $toLower: defined for ASCII letters; null is ""
    ("toUpper ascii", {"$toUpper": {"$literal": "abc1 Z"}}, "ABC1 Z"),
    ("toLower null", {"$toLower": None}, ""),
    # $trim: the given characters, or the manual's whitespace
    ("trim chars", {"$trim": {"input": {"$literal": "xxaxx"}, "chars": "x"}}, "a"),
    ("trim default", {"$trim": {"input": {"$literal": "\u00a0 a\t\n"}}}, "a"),
    ("trim null", {"$trim": {"input": None}}, None),
    ("strLenCP", {"$strLenCP": {"$literal": "жук😀"}}, 4),
    ("substrCP", {"$substrCP": [{"$literal": "жук😀x"}, 2, 2]}, "к😀"),
    ("sortArray", {"$sortArray": {"input": [3, 1, 2], "sortBy": 1}}, [1, 2, 3]),
    ("arrayElemAt last", {"$arrayElemAt": [[1, 2, 3], -1]}, 3),
    ("arrayElemAt null", {"$arrayElemAt": [None, 0]}, None),
    ("arrayElemAt out of range", {"$ifNull": [{"$arrayElemAt": [[], 0]}, "none"]}, "none"),
    (
        "reduce",
        {
            "$reduce": {
                "input": ["a", "b", "c"],
                "initialValue": "",
                "in": {"$concat": ["$$value", "$$this"]},
            }
        },
        "abc",
    ),
]


# the embedded engine's own choices where MongoDB leaves the behaviour undefined (other letters'
# case) or where mongoeco, the real-driver lane's server, lacks the operator (`$not`)
EMBEDDED_ONLY: list[tuple[str, Any, Any]] = [
    ("toUpper leaves other letters", {"$toUpper": {"$literal": "abc é ж"}}, "ABC é ж"),
    ("toLower leaves other letters", {"$toLower": {"$literal": "ÉЖ A"}}, "ÉЖ a"),
]
if os.environ.get("CRM_TEST_MONGODB_URL"):
    CASES = [c for c in CASES if not c[0].startswith("not ")]
else:
    CASES += EMBEDDED_ONLY


@pytest.mark.parametrize(("name", "expression", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_expression_as_the_manual_documents(api, owner, name, expression, expected):
    collection = tenant_db(api.client, owner)["expressions"]
    await collection.insert_one({"n": 1})
    (doc,) = await collection.aggregate([{"$project": {"_id": 0, "x": expression}}]).to_list(None)
    assert doc.get("x") == expected


async def test_lookup_with_local_field_and_a_pipeline(api, owner):
    db = tenant_db(api.client, owner)
    await db["people"].insert_many([{"_id": 1, "team": "a"}, {"_id": 2, "team": "b"}])
    await db["teams"].insert_many(
        [{"_id": "a", "name": "A", "secret": 1}, {"_id": "b", "name": "B", "secret": 2}]
    )
    await db["deals"].insert_many([{"who": 1, "v": 5}, {"who": 1, "v": 7}, {"v": 9}])
    found = (
        await db["people"]
        .aggregate(
            [
                {
                    "$lookup": {
                        "from": "teams",
                        "localField": "team",
                        "foreignField": "_id",
                        "pipeline": [{"$project": {"_id": 0, "name": 1}}],
                        "as": "t",
                    }
                },
                {
                    "$lookup": {
                        "from": "deals",
                        "localField": "_id",
                        "foreignField": "who",
                        "pipeline": [{"$project": {"_id": 0, "v": 1}}],
                        "as": "d",
                    }
                },
                {"$sort": {"_id": 1}},
            ]
        )
        .to_list(None)
    )
    assert [(p["t"], p["d"]) for p in found] == [
        ([{"name": "A"}], [{"v": 5}, {"v": 7}]),
        ([{"name": "B"}], []),
    ]
