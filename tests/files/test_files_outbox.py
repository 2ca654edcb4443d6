"""An import confirmed while the task broker refuses work (Redis down) is accepted (202) and
runs when the outbox's sweeper hands it to a broker that takes it (docs/operations.md,
"Faults: the broker"); the job never stays `queued`."""

from __future__ import annotations

from typing import Any

from handlers.routing import SERVICES
from tests.support.api import Api
from tests.support.files import GOOD_CSV, confirm, finished, make_table, stored, upload
from tests.support.outbox import outbox_drained


class RefusingImports:
    def __init__(self) -> None:
        self.refused = 0

    async def run_import(self, tenant_id: str, job_id: str, user_id: str) -> None:
        self.refused += 1
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


async def test_an_import_confirmed_while_the_broker_refuses_runs_once_it_is_back(
    api: Api, client: Any, owner: Any
) -> None:
    await make_table(api, owner)
    services = client.app[SERVICES]
    refusing = RefusingImports()
    services.imports.queue = refusing  # the API's hand-off fails; the sweeper's broker works
    status, job = await upload(client, owner, GOOD_CSV.encode())
    assert status == 201
    queued = await confirm(api, owner, job)
    assert refusing.refused == 1 and queued["state"] == "queued"
    done = await finished(api, owner, job)
    assert (done["state"], done["created"]) == ("completed", 2)
    assert sorted(r["name"] for r in await stored(api, owner)) == ["Ann", "Bob"]
    assert await outbox_drained(services.storage) == 0
