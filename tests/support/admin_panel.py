"""A browser without script on the operator's panel, for the tests of /admin over HTTP."""

from __future__ import annotations

import re

ROOT_EMAIL, ROOT_PASSWORD = "root@example.com", "root-password-1"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Panel:
    """A browser on the panel: a cookie jar (the test client's) and the last form's token."""

    def __init__(self, client) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str, status: int = 200) -> str:
        resp = await self.client.get(path, allow_redirects=False)
        text = await resp.text()
        assert resp.status == status, (path, resp.status, text[:500])
        if match := CSRF.search(text):
            self.csrf = match.group(1)
        return text

    async def post(self, path: str, data: dict, status: int = 303, csrf: bool = True):
        form = {"csrf": self.csrf, **data} if csrf else data
        resp = await self.client.post(path, data=form, allow_redirects=False)
        text = await resp.text()
        assert resp.status == status, (path, resp.status, text[:500])
        return resp, text

    async def sign_in(self, email=ROOT_EMAIL, password=ROOT_PASSWORD, status=303):
        await self.get("/admin/login")
        return await self.post(
            "/admin/login", {"email": email, "password": password}, status=status
        )
