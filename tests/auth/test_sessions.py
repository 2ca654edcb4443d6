"""Sessions that really end (issue #10 §5, #14 §1): token epochs, password change, temporary
passwords and the 415 for bodies that are not JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from beanie import PydanticObjectId

from models.accounts import RefreshToken, User
from tests.support.api import TEST_SECRET, add_user


async def _status(client, account, path="/api/auth/me") -> int:
    resp = await client.get(path, headers=account.headers)
    return resp.status


async def _refresh(client, refresh_token: str):
    return await client.post("/api/auth/refresh", json={"refresh_token": refresh_token})


async def test_tokens_from_before_a_deactivation_stay_dead_after_reactivation(api, client, owner):
    viewer = await add_user(api, client, owner, "viewer")
    await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", owner, expect=200, json={"is_active": False}
    )
    await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", owner, expect=200, json={"is_active": True}
    )
    resp = await client.get("/api/auth/me", headers=viewer.headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    assert (await _refresh(client, viewer.refresh_token)).status == 401
    # signing in again works and the new session is good
    again = await api.login(viewer.email, "user-password")
    assert await _status(client, again) == 200
    # a rename later does not bring the old tokens back
    await api.call(
        "PATCH", f"/api/users/{viewer.user_id}", owner, expect=200, json={"full_name": "V"}
    )
    assert await _status(client, viewer) == 401
    assert await _status(client, again) == 200


async def test_access_tokens_die_with_their_revoked_refresh_family(api, client, owner):
    rotated = await _refresh(client, owner.refresh_token)
    pair = await rotated.json()
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await client.get("/api/auth/me", headers=headers)).status == 200
    # presenting the used refresh token again (after the grace window of a retry) revokes the
    # family: its access tokens end now
    await RefreshToken.get_motor_collection().update_many(
        {"used_at": {"$ne": None}}, {"$set": {"used_at": datetime.now(UTC) - timedelta(minutes=1)}}
    )
    assert (await _refresh(client, owner.refresh_token)).status == 401
    assert (await client.get("/api/auth/me", headers=headers)).status == 401
    assert (await _refresh(client, pair["refresh_token"])).status == 401


async def test_logout_ends_the_family_and_other_devices_refresh_once(api, client, owner):
    laptop = await api.login(owner.email, owner.password)
    await api.call(
        "POST", "/api/auth/logout", owner, expect=204, json={"refresh_token": owner.refresh_token}
    )
    assert await _status(client, owner) == 401
    assert (await _refresh(client, owner.refresh_token)).status == 401
    # the other device's access token ended with the epoch; its refresh token still works
    assert await _status(client, laptop) == 401
    resp = await _refresh(client, laptop.refresh_token)
    assert resp.status == 200
    headers = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
    assert (await client.get("/api/auth/me", headers=headers)).status == 200


async def test_password_change_ends_every_other_session(api, client, owner):
    laptop = await api.login(owner.email, owner.password)
    resp = await client.post(
        "/api/auth/password",
        headers=owner.headers,
        json={"current_password": owner.password, "new_password": "a-new-password"},
    )
    assert resp.status == 200, await resp.text()
    pair = await resp.json()
    assert pair["must_change_password"] is False
    for old in (owner, laptop):
        assert await _status(client, old) == 401
        assert (await _refresh(client, old.refresh_token)).status == 401
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await client.get("/api/auth/me", headers=headers)).status == 200
    assert (await _refresh(client, pair["refresh_token"])).status == 200
    old_login = await client.post(
        "/api/auth/login", json={"email": owner.email, "password": owner.password}
    )
    assert old_login.status == 401
    await api.login(owner.email, "a-new-password")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"current_password": "wrong-password", "new_password": "a-new-password"},
            "current_password",
        ),
        ({"current_password": "correct-horse", "new_password": "correct-horse"}, "new_password"),
        ({"current_password": "correct-horse", "new_password": "short"}, "new_password"),
        ({"current_password": "correct-horse"}, "new_password"),
        ({"current_password": "correct-horse", "new_password": "x" * 73}, "new_password"),
    ],
)
async def test_password_change_errors_change_nothing(api, client, owner, body, field):
    before = await User.get(owner.user_id)
    resp = await client.post("/api/auth/password", headers=owner.headers, json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error" and error["details"][0]["field"] == field
    after = await User.get(owner.user_id)
    assert after.password_hash == before.password_hash and after.token_epoch == before.token_epoch
    assert await _status(client, owner) == 200


async def test_password_change_guesses_are_throttled(api, client, settings, owner):
    wrong = {"current_password": "wrong-password", "new_password": "a-new-password"}
    for _ in range(settings.login_max_failures):
        resp = await client.post("/api/auth/password", headers=owner.headers, json=wrong)
        assert resp.status == 400
    right = {"current_password": owner.password, "new_password": "a-new-password"}
    resp = await client.post("/api/auth/password", headers=owner.headers, json=right)
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited"
    assert "Retry-After" in resp.headers


async def test_password_change_needs_a_session(client):
    resp = await client.post(
        "/api/auth/password", json={"current_password": "x", "new_password": "a-new-password"}
    )
    assert resp.status == 401


async def test_temporary_password_must_be_changed_at_next_sign_in(api, client, owner):
    manager = await add_user(api, client, owner, "manager")
    answer = await api.call("POST", f"/api/users/{manager.user_id}/password", owner, expect=200)
    temporary = answer["temporary_password"]
    assert len(temporary) >= 16
    stored = await User.get(manager.user_id)
    assert stored.must_change_password and temporary not in stored.password_hash
    # every session of the user ended
    assert await _status(client, manager) == 401
    assert (await _refresh(client, manager.refresh_token)).status == 401
    assert (
        await client.post(
            "/api/auth/login", json={"email": manager.email, "password": "user-password"}
        )
    ).status == 401
    # signing in with it works, but only the password change, me and logout are reachable
    resp = await client.post(
        "/api/auth/login", json={"email": manager.email, "password": temporary}
    )
    pair = await resp.json()
    assert resp.status == 200 and pair["must_change_password"] is True
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    me = await client.get("/api/auth/me", headers=headers)
    assert me.status == 200 and (await me.json())["user"]["must_change_password"] is True
    for method, path in [("GET", "/api/data/leads"), ("GET", "/api/users"), ("GET", "/api/roles")]:
        resp = await client.request(method, path, headers=headers)
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "password_change_required"
    refreshed = await _refresh(client, pair["refresh_token"])
    assert refreshed.status == 200 and (await refreshed.json())["must_change_password"] is True
    refreshed_headers = {"Authorization": f"Bearer {(await refreshed.json())['access_token']}"}
    resp = await client.post(
        "/api/auth/password",
        headers=refreshed_headers,
        json={"current_password": temporary, "new_password": "my-own-password"},
    )
    assert resp.status == 200
    fresh = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
    assert (await client.get("/api/data/leads", headers=fresh)).status == 200
    assert not (await User.get(manager.user_id)).must_change_password


async def test_temporary_password_follows_the_granter_rule(api, client, owner):
    admin = await add_user(api, client, owner, "admin")
    viewer = await add_user(api, client, owner, "viewer")
    # an admin (no tenant.manage) cannot take over the owner
    resp = await client.post(f"/api/users/{owner.user_id}/password", headers=admin.headers)
    assert resp.status == 403
    # a role with users.manage only cannot take over a viewer (who reads leads)
    helpdesk = await api.call(
        "POST",
        "/api/roles",
        owner,
        expect=201,
        json={"name": "Helpdesk", "permissions": ["users.manage", "users.read"]},
    )
    desk_email = "desk@example.com"
    await api.call(
        "POST",
        "/api/users",
        owner,
        expect=201,
        json={
            "email": desk_email,
            "full_name": "Desk",
            "password": "desk-password",
            "role_ids": [helpdesk["id"]],
        },
    )
    desk = await api.login(desk_email, "desk-password")
    resp = await client.post(f"/api/users/{viewer.user_id}/password", headers=desk.headers)
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["code"] == "forbidden" and "leads.read" in body["error"]["message"]
    for target in (owner, viewer):
        assert not (await User.get(target.user_id)).must_change_password
        assert await _status(client, target) == 200
    # one's own password goes through POST /api/auth/password
    resp = await client.post(f"/api/users/{admin.user_id}/password", headers=admin.headers)
    assert resp.status == 409
    # the owner can, and the admin can reset the viewer
    await api.call("POST", f"/api/users/{viewer.user_id}/password", admin, expect=200)
    await api.call("POST", f"/api/users/{admin.user_id}/password", owner, expect=200)


async def test_temporary_password_of_another_company_is_404(api, client, owner):
    other = await api.register(company="Other")
    resp = await client.post(f"/api/users/{other.user_id}/password", headers=owner.headers)
    assert resp.status == 404
    assert not (await User.get(other.user_id)).must_change_password
    assert await _status(client, other) == 200


async def test_access_token_epoch_claim_is_checked(api, client, owner):
    claims = jwt.decode(owner.access_token, TEST_SECRET, algorithms=["HS256"])
    assert claims["ep"] == 0
    for epoch in (1, "0", None, 0.0, True):
        forged = jwt.encode({**claims, "ep": epoch}, TEST_SECRET, algorithm="HS256")
        resp = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {forged}"})
        assert resp.status == 401, epoch


async def test_refresh_tokens_from_an_older_session_epoch_are_refused(api, client, owner):
    # a refresh token stored before the sessions ended (e.g. by a login racing a password
    # change) carries the older session epoch and is refused, its family revoked
    await User.get_motor_collection().update_one(
        {"_id": PydanticObjectId(owner.user_id)},
        {"$inc": {"session_epoch": 1}},
    )
    assert (await _refresh(client, owner.refresh_token)).status == 401
    assert await RefreshToken.find(RefreshToken.revoked_at == None).count() == 0  # noqa: E711


# ---- 415 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None],
)
async def test_json_routes_refuse_other_content_types(api, client, owner, content_type):
    body = b'{"key": "deals", "columns": []}'
    headers = dict(owner.headers)
    if content_type:
        headers["Content-Type"] = content_type
    resp = await client.post("/api/meta/tables", data=body, headers=headers)
    assert resp.status == 415
    error = (await resp.json())["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    tables = await api.call("GET", "/api/meta/tables", owner, expect=200)
    assert "deals" not in {t["key"] for t in tables["items"]}


async def test_public_json_routes_refuse_form_bodies(client):
    resp = await client.post(
        "/api/auth/login",
        data={"email": "a@example.com", "password": "correct-horse"},
    )
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"


async def test_json_content_types_are_accepted(api, client, owner):
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        resp = await client.patch(
            "/api/users/" + owner.user_id,
            data=b'{"full_name": "Ann"}',
            headers={**owner.headers, "Content-Type": content_type},
        )
        assert resp.status == 200, content_type
    # an empty body needs no content type (logout without a refresh token)
    resp = await client.post("/api/auth/logout", headers=owner.headers)
    assert resp.status == 204


async def test_a_concurrent_profile_edit_does_not_bring_ended_tokens_back(api, client, owner):
    import asyncio

    manager = await add_user(api, client, owner, "manager")
    password = "user-password"
    for round_ in range(3):
        new_password = f"changed-password-{round_}"
        rename, change = await asyncio.gather(
            client.patch(
                f"/api/users/{manager.user_id}",
                headers=owner.headers,
                json={"full_name": f"Round {round_}"},
            ),
            client.post(
                "/api/auth/password",
                headers=manager.headers,
                json={"current_password": password, "new_password": new_password},
            ),
        )
        assert rename.status == 200 and change.status == 200, await change.text()
        old_headers = manager.headers
        manager.access_token = (await change.json())["access_token"]
        password = new_password
        assert (await client.get("/api/auth/me", headers=old_headers)).status == 401
        assert await _status(client, manager) == 200
    stored = await User.get(manager.user_id)
    assert stored.full_name == "Round 2" and stored.token_epoch == 3


async def test_tokens_from_before_epochs_count_as_epoch_zero(api, client, owner):
    claims = jwt.decode(owner.access_token, TEST_SECRET, algorithms=["HS256"])
    del claims["ep"]
    legacy = {"Authorization": f"Bearer {jwt.encode(claims, TEST_SECRET, algorithm='HS256')}"}
    assert (await client.get("/api/auth/me", headers=legacy)).status == 200
    await api.call(
        "POST", "/api/auth/logout", owner, expect=204, json={"refresh_token": owner.refresh_token}
    )
    assert (await client.get("/api/auth/me", headers=legacy)).status == 401
