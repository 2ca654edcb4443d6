"""Ids from clients (issue #11 item 4: one parser, crm_core/platform/ids.py): a malformed id in a
path is simply not found (404 naming what), a malformed id in a body is a 400 naming the field;
either way nothing changes."""

from __future__ import annotations

import pytest

from models.accounts import User
from tests.support.api import tenant_db

MALFORMED = ["nope", "0" * 23, "0" * 25, "g" * 24, "%20" * 8]


@pytest.mark.parametrize("bad", MALFORMED)
async def test_malformed_path_ids_are_not_found(api, owner, bad):
    cases = [
        ("GET", f"/api/roles/{bad}", "Role not found"),
        ("PATCH", f"/api/roles/{bad}", "Role not found"),
        ("DELETE", f"/api/roles/{bad}", "Role not found"),
        ("GET", f"/api/users/{bad}", "User not found"),
        ("PATCH", f"/api/users/{bad}", "User not found"),
        ("DELETE", f"/api/users/{bad}", "User not found"),
        ("POST", f"/api/users/{bad}/password", "User not found"),
        ("DELETE", f"/api/shares/{bad}", "Share not found"),
    ]
    for method, path, message in cases:
        body = await api.call(method, path, owner, expect=404, json={})
        error = body["error"]
        assert (error["code"], error["message"], error.get("details")) == (
            "not_found",
            message,
            None,
        ), path


async def test_well_formed_unknown_ids_are_not_found_alike(api, owner):
    unknown = "0" * 24
    for path, message in [
        (f"/api/roles/{unknown}", "Role not found"),
        (f"/api/users/{unknown}", "User not found"),
    ]:
        body = await api.call("GET", path, owner, expect=404)
        assert body["error"]["message"] == message


async def test_malformed_body_ids_name_the_field(api, client, owner, create_table):
    await create_table(owner, "deals")
    role = (await api.call("GET", "/api/roles", owner, expect=200))["items"][0]
    for body, field in [
        ({"user_id": "zz"}, "user_id"),
        ({"user_id": "g" * 24}, "user_id"),
        ({"role_id": "0" * 23}, "role_id"),
        ({"role_id": "0" * 24}, "role_id"),  # well formed, not a role
    ]:
        answer = await api.call(
            "POST",
            "/api/shares",
            owner,
            expect=400,
            json={"table": "deals", "access": "read", **body},
        )
        assert answer["error"]["details"][0]["field"] == field
    assert await tenant_db(client, owner)["_shares"].count_documents({}) == 0

    answer = await api.call(
        "POST",
        "/api/users",
        owner,
        expect=400,
        json={
            "email": "new@example.com",
            "full_name": "New",
            "password": "long-enough",
            "role_ids": [role["id"], "nope", "0" * 24],
        },
    )
    assert [d["field"] for d in answer["error"]["details"]] == ["role_ids.1", "role_ids.2"]
    assert await User.find(User.email == "new@example.com").count() == 0
