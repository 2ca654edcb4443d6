"""One password rule (docs/api.md "Passwords"): registration, a password change, user creation and
the superuser's setting all accept and refuse the same passwords."""

from __future__ import annotations

import pytest

from crm_core.platform.settings import SettingsError
from models.accounts import User
from tests.support.api import make_settings

CASES = [
    ("seven77", False),  # 7 characters
    ("eight888", True),
    ("x" * 72, True),
    ("x" * 73, False),
    ("я" * 36, True),  # 36 characters, 72 bytes in UTF-8
    ("я" * 37, False),  # 37 characters, 74 bytes
]


@pytest.mark.parametrize(("password", "accepted"), CASES)
async def test_every_entry_point_applies_the_same_rule(api, client, password, accepted):
    owner = await api.register()
    # a user created by an admin
    resp = await client.post(
        "/api/users",
        headers=owner.headers,
        json={"email": "new@example.com", "full_name": "New", "password": password},
    )
    body = await resp.json()
    assert resp.status == (201 if accepted else 400), body
    if not accepted:
        assert body["error"]["details"][0]["field"] == "password"
    assert await User.find(User.email == "new@example.com").count() == int(accepted)
    # one's own password
    resp = await client.post(
        "/api/auth/password",
        headers=owner.headers,
        json={"current_password": owner.password, "new_password": password},
    )
    body = await resp.json()
    assert resp.status == (200 if accepted else 400), body
    if not accepted:
        assert body["error"]["details"][0]["field"] == "new_password"
    # the operator's account, from the environment
    if accepted:
        make_settings(crm_superuser_email="root@example.com", crm_superuser_password=password)
    else:
        with pytest.raises(SettingsError, match="8 characters to 72 bytes"):
            make_settings(crm_superuser_email="root@example.com", crm_superuser_password=password)
