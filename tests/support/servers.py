"""Real processes for the fault and many-process tests: a mongoeco wire-protocol server, a TCP
proxy in front of it that a test can cut and restore, a redis-server, and `crm serve` /
`crm worker` subprocesses.

Every server listens on a fixed loopback port chosen at creation, so a stopped one starts again
on the same address and its clients find it there. Each process writes its output to a log
file (`log_text()` reads it; a failed start quotes its tail).

mongoeco keeps its data in the server process's memory: a restarted server starts EMPTY. To
play a database outage that keeps the data, point the clients at a `TcpProxy` in front of the
server and `cut()` / `restore()` it: while cut, the proxy refuses new connections and drops the
open ones, as a stopped `mongod` would.

A missing tool (no Python 3.13 for mongoeco, no redis-server, no `crm` entry point) fails the
test when CI=true and skips it, saying what did not run, otherwise (`missing_tool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support.tools import free_port
from tests.support.waits import DEADLINE, until, until_sync

ROOT = Path(__file__).resolve().parents[2]
MONGOECO_VERSION = "4.11.0"  # as scripts/test-mongoeco
MONGOECO_VENV = ROOT / ".venv-mongoeco"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = DEADLINE  # bounds a hang: a cold `crm serve` imports a lot on a busy 2-core machine


def missing_tool(message: str) -> NoReturn:
    """Fail under CI (CI=true), skip loudly elsewhere: the test did NOT run."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll `condition` until it holds; an AssertionError naming `what` after `timeout` (which
    only bounds a hang: tests/support/waits.py)."""
    until_sync(condition, what, timeout)


# ---- processes -------------------------------------------------------------------------------


class PortTaken(AssertionError):
    """The process could not listen: another one took its port after `free_port()` chose it."""


PORT_TAKEN = ("address already in use", "errno 98")  # aiohttp, asyncio, redis-server
PORT_ATTEMPTS = 5


class ManagedProcess:
    """One subprocess with its output in `log_path`; `start()` may be called again after a
    stop (the log file is appended to, with a marker line per start).

    Started means ready: a subclass names the line its process prints once it serves
    (`ready_line`, looked for in the log since this start, so a line of an earlier start or
    another process on the port cannot stand for it) and may check more (`wait_ready`).
    A process given no port gets a free one; if another process takes that port before ours
    listens, the start moves to a new free port (`PortTaken`). Once started, the port is kept:
    a restart must come back on the address its clients know."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd or log_path.parent
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.port_chosen = False  # a free port chosen here: may move until the first start
        self._mark = 0  # where this start's output begins in the log

    def ready_line(self) -> str | None:
        """What the process prints once it serves (None: no such line)."""
        return None

    def move_to(self, port: int) -> None:
        """Use `port` instead (subclasses with a port: before their first start)."""
        raise NotImplementedError

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_once()
                break
            except PortTaken:
                if not self.port_chosen or attempt == PORT_ATTEMPTS:
                    raise
                self.move_to(free_port())
        self.port_chosen = False  # a restart comes back on this address

    def _start_once(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._mark = len(self.log_text())
        with self.log_path.open("ab") as log:
            log.write(f"---- start {self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
            )
        line = self.ready_line()
        if line is not None:
            self._wait(lambda: line in self.started_log(), f"{line!r} in its log")
        self.wait_ready()

    def started_log(self) -> str:
        """The log since the current (or last) start."""
        return self.log_text()[self._mark :]

    def wait_ready(self) -> None:
        """Subclasses wait for more than their ready line; the base checks it did not exit."""
        self._check_alive()

    def _check_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            started = self.started_log()
            error = PortTaken if any(s in started.lower() for s in PORT_TAKEN) else AssertionError
            raise error(
                f"{self.name} exited with status {code} while starting; its log ends:\n"
                + self.log_tail()
            )

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        def ready() -> bool:
            self._check_alive()
            return condition()

        try:
            wait_until(ready, f"{self.name}: {what}")
        except PortTaken:
            raise
        except AssertionError as exc:
            if "timed out" in str(exc):
                raise AssertionError(f"{exc}; its log ends:\n{self.log_tail()}") from None
            raise

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit; the exit status (SIGKILL after `timeout`)."""
        return self._stop(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: gone at once, no clean-up (a crashed process, a pulled plug)."""
        return self._stop(signal.SIGKILL, 10.0)

    def _stop(self, sig: int, timeout: float) -> int:
        if self.process is None:
            return 0
        self.signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# ---- mongoeco --------------------------------------------------------------------------------


def python313() -> str | None:
    """A Python 3.13 interpreter (PYTHON313, else the usual places), or None."""
    candidates = [os.environ.get("PYTHON313", ""), "python3.13"]
    candidates += sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.13*/bin/python3"))
    candidates += sorted(
        str(p) for p in (Path.home() / ".pyenv/versions").glob("3.13*/bin/python3")
    )
    for candidate in filter(None, candidates):
        found = shutil.which(candidate) if "/" not in candidate else candidate
        if not found or not os.access(found, os.X_OK):
            continue
        check = subprocess.run(
            [found, "-c", "import sys; assert sys.version_info[:2] == (3, 13)"],
            capture_output=True,
        )
        if check.returncode == 0:
            return found
    return None


_venv_lock = threading.Lock()


def mongoeco_python() -> str:
    """`.venv-mongoeco/bin/python` with mongoeco installed, made as scripts/test-mongoeco
    makes it when missing; `missing_tool` without Python 3.13."""
    python = MONGOECO_VENV / "bin" / "python"
    with _venv_lock:
        ready = (
            python.exists()
            and (
                subprocess.run([str(python), "-c", "import mongoeco.wire"], capture_output=True)
            ).returncode
            == 0
        )
        if ready:
            return str(python)
        base = python313()
        if base is None:
            missing_tool(
                "Python 3.13 not found (set PYTHON313): the mongoeco server, and so this "
                "real-driver test, did NOT run"
            )
        if not python.exists():
            subprocess.run([base, "-m", "venv", str(MONGOECO_VENV)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"mongoeco[wire]=={MONGOECO_VERSION}"],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            missing_tool(f"could not install mongoeco into .venv-mongoeco: {install.stderr[-500:]}")
        return str(python)


class MongoecoServer(ManagedProcess):
    """scripts/mongoeco_server.py on a fixed port. Its data lives in its memory: `terminate()`
    or `kill()` then `start()` gives an EMPTY database on the same address."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.script = [mongoeco_python(), str(ROOT / "scripts" / "mongoeco_server.py")]
        super().__init__("mongoeco", [*self.script, "--port", str(self.port)], log_path)
        self.port_chosen = port is None

    @property
    def uri(self) -> str:
        return mongodb_uri(self.port)

    def move_to(self, port: int) -> None:
        self.port = port
        self.argv = [*self.script, "--port", str(port)]

    def ready_line(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/"  # printed once it listens

    def wait_ready(self) -> None:
        self._wait(lambda: port_open(self.port), f"listening on {self.port}")


def mongodb_uri(port: int) -> str:
    return f"mongodb://{LOOPBACK}:{port}/?directConnection=true"


# ---- a TCP proxy that can be cut ---------------------------------------------------------------


class TcpProxy:
    """Forwards a fixed loopback port to `upstream_port`, in a thread of its own (its own event
    loop, so any test, sync or async, may use it).

    `cut()`: the listening socket closes (new connections are refused) and every open
    connection is dropped, both ways: to its clients the server is gone. `restore()`: it
    listens again on the same port. What is behind keeps its data.
    """

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.connections = 0  # accepted since creation
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread.start()

    @property
    def uri(self) -> str:
        return mongodb_uri(self.port)

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)  # type: ignore[arg-type]

    def start(self) -> TcpProxy:
        self._call(self._listen())
        return self

    def restore(self) -> None:
        if self._server is None:
            self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, LOOPBACK, self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()  # an RST, not a polite close: the peer's reads fail at once
        self._writers.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


# ---- an aiohttp app in a thread ----------------------------------------------------------------


class ThreadedApp:
    """Serves an aiohttp application (the fake SMS gateway, a webhook receiver) on a fixed
    loopback port from a thread with its own event loop, so it outlives any one test's loop
    (a module-wide fixture can share it) and answers while the test blocks."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        from aiohttp import web

        self.port = port or free_port()
        self.port_chosen = port is None  # may move if another process takes it first
        self._runner = web.AppRunner(app, access_log=None)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="threaded-app")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> ThreadedApp:
        from aiohttp import web

        async def serve() -> None:
            await self._runner.setup()
            for attempt in range(1, PORT_ATTEMPTS + 1):
                try:
                    await web.TCPSite(self._runner, LOOPBACK, self.port).start()
                    return
                except OSError as exc:  # taken since `free_port()` chose it
                    if exc.errno != errno.EADDRINUSE or not self.port_chosen:
                        raise
                    if attempt == PORT_ATTEMPTS:
                        raise
                    self.port = free_port()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=DEADLINE)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


# ---- Redis -----------------------------------------------------------------------------------


class RedisServer(ManagedProcess):
    """A redis-server on a fixed loopback port, no persistence: a restart starts empty."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_tool(
                "redis-server is not on the PATH (apt-get install redis-server): this test "
                "did NOT run"
            )
        self.binary = binary
        self.port = port or free_port()
        super().__init__("redis", self._argv(log_path), log_path)
        self.port_chosen = port is None

    def _argv(self, log_path: Path) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(log_path.parent),
        ]

    def move_to(self, port: int) -> None:
        self.port = port
        self.argv = self._argv(self.log_path)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def ready_line(self) -> str:
        return "Ready to accept connections"

    def wait_ready(self) -> None:
        self._wait(lambda: port_open(self.port), f"listening on {self.port}")


# ---- the crm command -------------------------------------------------------------------------


def crm_executable() -> str:
    """The `crm` entry point of the virtualenv running the tests (.venv/bin/crm)."""
    candidate = Path(sys.executable).parent / "crm"
    if not candidate.exists():
        missing_tool(f"no `crm` entry point beside {sys.executable} (run ./scripts/install)")
    return str(candidate)


def crm_environment(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment less every setting the tests do not give (a developer's
    MONGODB_URL or REDIS_URL must not leak in), plus `env`; unbuffered output."""
    from crm_core.platform.settings import Settings

    ours = {name.upper() for name in Settings.model_fields}
    base = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    base.pop("CRM_TEST_MONGODB_URL", None)
    base["PYTHONUNBUFFERED"] = "1"
    base.update(env)
    return base


class CrmServe(ManagedProcess):
    """`crm serve --port PORT` with `env`; started once GET /health answers 200. Runs in the
    log's folder, so no developer's .env is read."""

    def __init__(self, log_path: Path, env: Mapping[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        argv = [crm_executable(), "serve", "--host", LOOPBACK, "--port", str(self.port)]
        super().__init__(f"crm serve :{self.port}", argv, log_path, crm_environment(env))
        self.port_chosen = port is None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def move_to(self, port: int) -> None:
        self.port = port
        self.name = f"crm serve :{port}"
        self.argv = [*self.argv[:-1], str(port)]

    def ready_line(self) -> str:
        return f"Running on {self.url}"  # aiohttp's line once this process listens

    def wait_ready(self) -> None:
        self._wait(self._healthy, "GET /health answering 200")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                return int(answer.status) == 200
        except (urllib.error.URLError, OSError):
            return False


class CrmWorker(ManagedProcess):
    """`crm worker` with `env`; started once its log says "worker started"."""

    READY_LINE = "worker started"

    def __init__(self, log_path: Path, env: Mapping[str, str]) -> None:
        super().__init__("crm worker", [crm_executable(), "worker"], log_path, crm_environment(env))

    def ready_line(self) -> str:
        return self.READY_LINE


@contextlib.contextmanager
def running(*processes: ManagedProcess) -> Iterator[None]:
    """Start each (in order), and on the way out SIGTERM those still running (then SIGKILL)."""
    started: list[ManagedProcess] = []
    try:
        for process in processes:
            process.start()
            started.append(process)
        yield
    finally:
        for process in reversed(started):
            process.terminate()


async def eventually(condition: Any, what: str, timeout: float = DEADLINE) -> None:
    """Polls the coroutine function `condition` until it answers true; fails naming `what`
    after `timeout` seconds (only bounds a hang: real processes on a shared 2-core machine)."""
    await until(condition, what, timeout, interval=0.1)
