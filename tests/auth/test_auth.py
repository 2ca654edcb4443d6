from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from crm_core.accounts import auth as auth_module
from handlers.routing import SERVICES
from models.accounts import RefreshToken, User
from tests.support.api import TEST_SECRET, make_settings

REGISTER = {
    "company_name": "Acme",
    "email": "a@example.com",
    "password": "password1",
    "full_name": "Ann",
}


async def test_register_creates_tenant_database_and_owner(api, client):
    resp = await client.post("/api/auth/register", json=REGISTER)
    assert resp.status == 201
    body = await resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    me = await api.call(
        "GET",
        "/api/auth/me",
        expect=200,
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert me["user"]["email"] == "a@example.com"
    assert "password_hash" not in json.dumps(me) and "password" not in me["user"]
    assert "tenant.manage" in me["permissions"]
    services = client.app[SERVICES]
    names = await services.storage.client.list_database_names()
    assert f"crm_t_{me['tenant']['id']}" in names
    roles = await services.storage.tenant_db(me["tenant"]["id"])["_roles"].find().to_list(None)
    assert {r["key"] for r in roles} == {"owner", "admin", "manager", "viewer"}


async def test_email_unique_case_insensitively(api, client):
    await api.register(email="dup@example.com")
    resp = await client.post("/api/auth/register", json={**REGISTER, "email": "DUP@example.com"})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "conflict"
    assert await User.find(User.email == "dup@example.com").count() == 1


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least 8"),
        ("я" * 37, "at most 72 bytes"),  # 37 characters, 74 bytes
        ("x" * 73, "72"),
    ],
)
async def test_password_policy(client, password, reason):
    resp = await client.post("/api/auth/register", json={**REGISTER, "password": password})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"][0]["field"] == "password"
    assert reason in body["error"]["message"] + json.dumps(body["error"]["details"])
    assert await User.find_all().count() == 0


async def test_register_rejects_bad_email_and_unknown_fields(client):
    resp = await client.post("/api/auth/register", json={**REGISTER, "email": "not-an-email"})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["details"][0]["field"] == "email"
    resp = await client.post("/api/auth/register", json={**REGISTER, "role": "admin"})
    body = await resp.json()
    assert resp.status == 400
    assert body["error"]["details"] == [{"field": "role", "message": "unknown field"}]


async def test_registration_can_be_switched_off(aiohttp_client):
    from handlers.app import create_app

    client = await aiohttp_client(create_app(make_settings(registration_enabled=False)))
    resp = await client.post("/api/auth/register", json=REGISTER)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"


async def test_login_and_same_answer_for_unknown_email_and_wrong_password(api, client, monkeypatch):
    account = await api.register(email="b@example.com", password="password1")
    ok = await client.post(
        "/api/auth/login", json={"email": "B@Example.com", "password": "password1"}
    )
    assert ok.status == 200
    calls = []
    real_verify = auth_module.verify_password

    async def counting_verify(password, hashed):
        calls.append(hashed)
        return await real_verify(password, hashed)

    monkeypatch.setattr(auth_module, "verify_password", counting_verify)
    wrong = await client.post(
        "/api/auth/login", json={"email": account.email, "password": "wrong-password"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "wrong-password"}
    )
    assert wrong.status == unknown.status == 401
    wrong_error, unknown_error = (await wrong.json())["error"], (await unknown.json())["error"]
    # the same answer but for each request's own id
    assert wrong_error.pop("request_id") != unknown_error.pop("request_id")
    assert wrong_error == unknown_error
    # both paths verified one bcrypt hash, so they take about the same time
    assert len(calls) == 2 and all(h.startswith("$2b$") for h in calls)


async def test_repeated_failures_are_rate_limited(api, client):
    account = await api.register(email="c@example.com")
    for _ in range(5):
        resp = await client.post(
            "/api/auth/login", json={"email": account.email, "password": "bad-password"}
        )
        assert resp.status == 401
    resp = await client.post(
        "/api/auth/login", json={"email": account.email, "password": account.password}
    )
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0
    # another email from the same address is not yet limited
    other = await api.register(email="d@example.com")
    resp = await client.post(
        "/api/auth/login", json={"email": other.email, "password": other.password}
    )
    assert resp.status == 200


async def test_refresh_rotates_and_reuse_revokes_family(api, client):
    account = await api.register()
    first = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status == 200
    pair = await first.json()
    assert pair["refresh_token"] != account.refresh_token
    # the rotated token is stored hashed, never in clear
    assert await RefreshToken.find(RefreshToken.token_hash == pair["refresh_token"]).count() == 0
    # outside the grace window of a retried refresh (docs/api.md "Sessions")
    await RefreshToken.get_motor_collection().update_many(
        {"used_at": {"$ne": None}}, {"$set": {"used_at": datetime.now(UTC) - timedelta(minutes=1)}}
    )
    reuse = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert reuse.status == 401
    # the reuse revoked the whole family: the newest token no longer works either
    after = await client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert after.status == 401
    assert (await after.json())["error"]["code"] == "unauthorized"


async def test_refresh_rejects_unknown_and_expired(api, client):
    bad = await client.post("/api/auth/refresh", json={"refresh_token": "nope"})
    assert bad.status == 401
    account = await api.register()
    await RefreshToken.get_motor_collection().update_many(
        {}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    expired = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert expired.status == 401
    # the TTL index removes expired tokens (later on a real server), the code checks expiry too
    assert (await expired.json())["error"]["code"] == "unauthorized"


async def test_logout_revokes_access_and_refresh(api, client):
    account = await api.register()
    await api.call(
        "POST",
        "/api/auth/logout",
        account,
        expect=204,
        json={"refresh_token": account.refresh_token},
    )
    resp = await client.get("/api/auth/me", headers=account.headers)
    assert resp.status == 401
    resp = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
    assert resp.status == 401


def _token(claims, key=TEST_SECRET, algorithm="HS256"):
    return jwt.encode(claims, key, algorithm=algorithm)


def _claims(account, **changes):
    now = datetime.now(UTC)
    claims = {
        "sub": account.user_id,
        "tid": account.tenant_id,
        "jti": "x" * 32,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "typ": "access",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def test_bad_access_tokens(api, client):
    account = await api.register()
    now = datetime.now(UTC)
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = (
        base64.urlsafe_b64encode(
            json.dumps(
                {
                    "sub": account.user_id,
                    "tid": account.tenant_id,
                    "jti": "a",
                    "typ": "access",
                    "iat": int(now.timestamp()),
                    "exp": int(now.timestamp()) + 300,
                }
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    tampered = account.access_token[:-4] + (
        "AAAA" if account.access_token[-4:] != "AAAA" else "BBBB"
    )
    cases = {
        "expired": _token(
            _claims(account, exp=now - timedelta(seconds=5), iat=now - timedelta(minutes=20))
        ),
        "tampered": tampered,
        "alg none": f"{header}.{payload}.",
        "other key": _token(_claims(account), key="another-secret-key-that-is-long-enough-00"),
        "missing jti": _token(_claims(account, jti=None)),
        "missing tenant": _token(_claims(account, tid=None)),
        "wrong tenant": _token(_claims(account, tid="0" * 24)),
        "HS512": _token(_claims(account), algorithm="HS512"),
        "garbage": "not.a.token",
    }
    for name, token in cases.items():
        resp = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401, name
        assert (await resp.json())["error"]["code"] == "unauthorized", name
    resp = await client.get("/api/auth/me")
    assert resp.status == 401
    resp = await client.get("/api/auth/me", headers={"Authorization": "Basic abc"})
    assert resp.status == 401
    good = _token(_claims(account))
    resp = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {good}"})
    assert resp.status == 200


async def test_token_of_deleted_or_inactive_user(api, client):
    deleted = await api.register()
    inactive = await api.register()
    await User.get_motor_collection().delete_one({"email": deleted.email})
    await User.get_motor_collection().update_one(
        {"email": inactive.email}, {"$set": {"is_active": False}}
    )
    for account in (deleted, inactive):
        resp = await client.get("/api/auth/me", headers=account.headers)
        assert resp.status == 401
        resp = await client.post("/api/auth/refresh", json={"refresh_token": account.refresh_token})
        assert resp.status == 401
    resp = await client.post(
        "/api/auth/login", json={"email": inactive.email, "password": inactive.password}
    )
    assert resp.status == 401


def test_short_keys_are_refused():
    from crm_core.accounts.security import TokenCodec

    with pytest.raises(ValueError):
        TokenCodec("short", 60)


async def test_failures_from_one_address_are_rate_limited(aiohttp_client):
    from handlers.app import create_app

    client = await aiohttp_client(create_app(make_settings(login_max_failures_per_ip=3)))
    for n in range(3):
        resp = await client.post(
            "/api/auth/login", json={"email": f"x{n}@example.com", "password": "wrong-password"}
        )
        assert resp.status == 401
    resp = await client.post(
        "/api/auth/login", json={"email": "fresh@example.com", "password": "wrong-password"}
    )
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited"


async def test_shutdown_closes_the_database_client(aiohttp_client):
    from handlers.app import create_app
    from handlers.routing import SERVICES

    app = create_app(make_settings())
    client = await aiohttp_client(app)
    storage = app[SERVICES].storage
    assert storage.client is not None
    await client.close()
    assert storage.client is None
