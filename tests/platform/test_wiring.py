"""Every service is complete when `build_services` returns it (issue #20 §4): its collaborators
and its queue are constructor arguments, not attributes set afterwards; work handed to the
queue before the broker runs is refused (it stays recorded for the sweeper), and once the
broker runs it reaches the broker. No domain module reads another object's private
attributes."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from crm_core.files.imports import ImportService
from crm_core.services import QueueNotRunning, build_services
from crm_core.sms.service import CampaignService
from crm_core.webhooks.service import WebhookService
from tasks.broker import BrokerQueue, start_broker, stop_broker

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", [CampaignService, ImportService, WebhookService])
def test_the_queue_is_a_constructor_argument(service):
    parameter = inspect.signature(service).parameters["queue"]
    assert parameter.default is inspect.Parameter.empty


def test_built_services_hold_their_collaborators(settings):
    services = build_services(settings)
    assert services.rows.events is services.webhooks
    # campaign events: the webhooks' campaign.finished, and campaign.progress for live events
    assert services.sms.events.webhooks is services.webhooks
    assert services.rows.changes.live is services.live.publisher
    assert services.sms.queue is services.queue
    assert services.imports.queue is services.queue
    assert services.webhooks.queue is services.queue


async def test_work_before_the_broker_runs_is_refused_then_reaches_the_broker(settings):
    services = build_services(settings)
    with pytest.raises(QueueNotRunning, match="the SMS queue is not running"):
        await services.queue.send_one("t", "m")
    with pytest.raises(QueueNotRunning):
        await services.queue.run_import("t", "j", "u")
    with pytest.raises(QueueNotRunning):
        await services.queue.deliver("t", "d")
    await services.storage.start([])
    broker = await start_broker(services)
    try:
        assert isinstance(services.sms_queue, BrokerQueue)
        assert services.sms_queue.broker is broker
        assert services.queue.probe is services.sms_queue
        assert await services.queue.probe.ping()
    finally:
        await stop_broker(broker)
        services.storage.close()


DOMAIN_CODE = [
    *(ROOT / "crm_core" / name for name in ("accounts", "admin", "files", "sms", "webhooks")),
    ROOT / "crm_core" / "services.py",
    ROOT / "tasks",
]


def _private_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_domain_module_reads_another_objects_private_attributes():
    files = [p for root in DOMAIN_CODE for p in ([root] if root.is_file() else root.rglob("*.py"))]
    assert [hit for path in sorted(files) for hit in _private_reads(path)] == []
