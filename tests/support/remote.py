"""An `Api` over plain HTTP to a `crm serve` subprocess (tests/support/servers.py), and the
environment those processes run with."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession

from tests.support.api import PATIENT_DATABASE, TEST_SECRET, Api
from tests.support.servers import CrmServe


class RemoteClient:
    """The few methods of aiohttp's TestClient that `Api` uses, against a real server."""

    def __init__(self, session: ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)


def crm_env(**settings: Any) -> dict[str, str]:
    """Environment for `crm serve` / `crm worker` in these tests (test settings, cheap
    bcrypt, patient database waits: tests/support/api.py `PATIENT_DATABASE`), plus `settings`
    by their environment names."""
    env = {"CRM_ENV": "test", "SECRET_KEY": TEST_SECRET, "BCRYPT_ROUNDS": "4"}
    env.update({key.upper(): str(value) for key, value in PATIENT_DATABASE.items()})
    env.update({key.upper(): str(value) for key, value in settings.items()})
    return env


def remote_api(http: ClientSession, server: CrmServe) -> Api:
    return Api(RemoteClient(http, server.url))  # type: ignore[arg-type]
