"""An `Api` over plain HTTP to a `crm serve` subprocess (tests/support/servers.py), and the
environment those processes run with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
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


@asynccontextmanager
async def serve_behind(logs: Path, database_url: str) -> AsyncIterator[CrmServe]:
    """A started `crm serve` on `database_url` (a proxy an outage test cuts) with short
    database waits, so a cut shows as 503 within a second; its log's tail is printed when
    the body fails, and the process is stopped either way."""
    serve = CrmServe(
        logs / "serve.log",
        crm_env(
            mongodb_url=database_url,
            mongodb_server_selection_timeout_ms=1000,
            mongodb_connect_timeout_ms=1000,
        ),
    )
    serve.start()
    try:
        yield serve
    except BaseException:
        print(f"crm serve's log ({serve.log_path}):\n{serve.log_tail(80)}")
        raise
    finally:
        serve.terminate()
