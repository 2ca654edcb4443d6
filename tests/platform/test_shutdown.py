"""SIGTERM under load (docs/operations.md, "Start-up and shutdown").

- `crm serve` as a real process: requests in flight finish, new connections are refused, the
  process exits 0 within the stop timeout of the shipped units.
- A worker mid-campaign with Redis: `crm_app.cli.run_worker` (what `crm worker` runs) stops on
  a real SIGTERM through the same signal wiring; the tasks it is running finish and are
  acknowledged, nothing is left `sending` or `unknown`, the next worker resends nothing.
  (A worker killed without a graceful stop is tests/sms/test_sms_redis.py's redelivery case.)
  It runs inside the test process because a separate `crm worker` needs a real MongoDB (the
  embedded database lives in one process); the broker, receiver and Redis stream are real.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import orjson
import pytest
from redis.asyncio import Redis

from crm_app.cli import run_worker, stop_on_signals
from handlers.app import create_app
from handlers.routing import SERVICES
from tests.support.api import TEST_SECRET, Api, wait_done
from tests.support.sms_gateway import phone, redis_settings
from tests.support.tools import free_port

STOP_TIMEOUT = 20  # TimeoutStopSec of deploy/systemd/crm-api.service


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def serve(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "CRM_ENV": "development",
        "SECRET_KEY": TEST_SECRET,
        "LOG_DIR": str(tmp_path / "logs"),
        # well above the bcrypt work even on a loaded machine: aiohttp (3.14) logs an
        # InvalidStateError when a handler ends exactly as this timeout expires
        "SHUTDOWN_TIMEOUT_SECONDS": "15",
        "BCRYPT_ROUNDS": "13",
    }
    for name in ("MONGODB_URL", "REDIS_URL", "ACCESS_LOG_FILE", "ERROR_LOG_FILE", "LOG_FILE"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "crm_app.cli", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with connect(port) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                if read_response(sock)[0] == 200:
                    break
        except OSError:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "crm serve did not start"
            time.sleep(0.1)
    yield process, port, tmp_path / "logs"
    if process.poll() is None:
        process.kill()
        process.wait()


def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones(serve):
    process, port, logs = serve
    body = orjson.dumps({"email": "nobody@example.com", "password": "wrong-password"})
    in_flight = []
    for index in range(3):
        sock = connect(port)
        # each handler is busy in a bcrypt check (BCRYPT_ROUNDS=13: about half a second)
        sock.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"X-Request-ID: in-flight-{index}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        in_flight.append(sock)
    time.sleep(0.2)  # let the server read them and start the handlers
    process.send_signal(signal.SIGTERM)

    # new connections are refused once the listener is closed
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        try:
            with connect(port):
                pass
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.02)
    # the requests were still running when new ones were already refused...
    answered_early = []
    for sock in in_flight:
        sock.setblocking(False)
        try:
            answered_early.append(bool(sock.recv(1, socket.MSG_PEEK)))
        except BlockingIOError:
            answered_early.append(False)
        sock.setblocking(True)
        sock.settimeout(STOP_TIMEOUT)
    assert answered_early.count(False) >= 1, "no request was in flight at SIGTERM"

    # ...and each one gets its whole answer
    for index, sock in enumerate(in_flight):
        status, headers, answer = read_response(sock)
        sock.close()
        assert status == 401, answer
        assert headers["x-request-id"] == f"in-flight-{index}"
        assert orjson.loads(answer)["error"]["code"] == "unauthorized"

    assert process.wait(timeout=STOP_TIMEOUT) == 0
    output = process.stdout.read().decode()
    assert "Traceback" not in output, output
    access = (logs / "access.log").read_text()
    for index in range(3):
        assert f"[in-flight-{index}] POST /api/auth/login 401" in access


async def test_sigterm_stops_a_worker_mid_campaign_without_sending_twice(
    aiohttp_client,
    clean_redis,
    gateway,
):
    settings = redis_settings(clean_redis, gateway, sms_rate_per_second=20)
    app = create_app(settings)
    api = Api(await aiohttp_client(app))
    owner = await api.register()
    storage = app[SERVICES].storage
    created = await api.call(
        "POST",
        "/api/sms/campaigns",
        owner,
        expect=202,
        json={"name": "stop", "text": "t", "recipients": [{"phone": phone(i)} for i in range(40)]},
    )

    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        worker = asyncio.create_task(run_worker(settings, stop, storage=storage))
        while len(gateway.accepted) < 5:
            await asyncio.sleep(0.01)
        at_sigterm = len(gateway.accepted)
        os.kill(os.getpid(), signal.SIGTERM)  # what systemd or docker sends
        # it stops within the unit's TimeoutStopSec, having finished its running batch
        await asyncio.wait_for(worker, timeout=30)
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    assert stop.is_set()
    # it was stopped mid-campaign, finished the batches it was running, and left nothing
    # half-done: no message in `sending`, none whose fate is unknown
    assert 5 <= at_sigterm < 40, at_sigterm
    campaign = await api.call("GET", f"/api/sms/campaigns/{created['id']}", owner, expect=200)
    assert campaign["counts"]["sending"] == 0 and campaign["counts"]["unknown"] == 0
    sent_by_first = campaign["counts"]["sent"]
    assert sent_by_first == len(gateway.accepted)

    # a worker started afterwards sends what is left (if anything) and resends nothing
    second = asyncio.Event()
    follower = asyncio.create_task(run_worker(settings, second, storage=storage))
    done = await wait_done(api, owner, created["id"])
    second.set()
    await asyncio.wait_for(follower, timeout=30)
    assert done["counts"]["sent"] == 40 and done["counts"]["unknown"] == 0
    per_phone = gateway.accepted_per_phone()
    assert len(per_phone) == 40 and set(per_phone.values()) == {1}
    redis = Redis.from_url(clean_redis)
    assert (await redis.xpending("crm:tasks", "crm-workers"))["pending"] == 0
    await redis.aclose()
