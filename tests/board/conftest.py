"""Fixtures of the real-browser tests: the API with the board as a real server on a
seeded database, and Debian's Chromium driven by Playwright.

- ``board_template``: a database with the world of :mod:`tests.board.world` (the API
  tests' province, one day of facts, rolled up), used as a template;
- ``board``: ``zhizao api run`` on a copy of it, shared by the read-only tests;
  ``own_board``: a server on a copy of the module's own, for the tests that add facts;
- ``browser``: Chromium from ``/usr/bin/chromium`` (``ZHIZAO_CHROMIUM`` overrides),
  never a downloaded browser; ``page``: a fresh context (its own sessionStorage)
  with the zh-CN locale in a time zone that is not the enterprises' (America/New_York),
  so every time shown must have been converted to the enterprise's zone;
- screenshots go to ``ZHIZAO_BOARD_SHOTS`` when set, else to the test's temporary
  folder (``shots``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.api.conftest import SECRET
from tests.api.world import PASSWORD
from tests.board.world import seed_day
from tests.fix_db import RUN_ID, create_database, drop_database

T = TypeVar("T")
CHROMIUM = os.environ.get("ZHIZAO_CHROMIUM", "/usr/bin/chromium")
BROWSER_ZONE = "America/New_York"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BoardServer:
    """A running ``zhizao api run`` and what a test needs to talk to it."""

    base: str
    db_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def board(self) -> str:
        return f"{self.base}/board/"

    def token(self, username: str) -> str:
        if username not in self.tokens:
            answer = httpx.post(
                f"{self.base}/api/v1/auth/token",
                data={"username": username, "password": PASSWORD}, timeout=30,
            )  # fmt: skip
            answer.raise_for_status()
            self.tokens[username] = answer.json()["access_token"]
        return self.tokens[username]

    def api(self, username: str, path: str, **params: Any) -> Any:
        """GET /api/v1{path} as ``username``: what the board must show."""
        answer = httpx.get(
            f"{self.base}/api/v1{path}", params=params, timeout=30,
            headers={"Authorization": f"Bearer {self.token(username)}"},
        )  # fmt: skip
        answer.raise_for_status()
        return answer.json()


def _serve(db_url: str, log: Path) -> BoardServer:
    port = _free_port()
    env = {
        **os.environ,
        "ZHIZAO_API_JWT_SECRET": SECRET,
        # Every test logs in through the form: the login limit must not refuse them.
        "ZHIZAO_API_LOGIN_FAILURES_PER_ADDR": "1000",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zhizao.cli", "api", "run", "--port", str(port),
             "--db-url", db_url],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"zhizao api run exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return BoardServer(base, db_url, proc, log)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"zhizao api run did not get ready: {log.read_text(errors='replace')}")


def _stop(server: BoardServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def board_template(template_db: str) -> Iterator[str]:
    name = f"zhizao_board_{RUN_ID}"
    url = create_database(name, template=template_db)
    run_async(seed_day(url))
    yield name
    drop_database(name)


def _copy(template: str) -> tuple[str, str]:
    name = f"zhizao_bt_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    return name, create_database(name, template=template)


@pytest.fixture(scope="session")
def board(board_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoardServer]:
    name, url = _copy(board_template)
    server = _serve(url, tmp_path_factory.mktemp("board-api") / "api.log")
    yield server
    _stop(server)
    drop_database(name)


@pytest.fixture(scope="module")
def own_board(
    board_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BoardServer]:
    """A server on a database of the module's own, for the tests that add facts (each
    adds facts the others do not read: parts in the evening, a point of today)."""
    name, url = _copy(board_template)
    server = _serve(url, tmp_path_factory.mktemp("own-board") / "api.log")
    yield server
    _stop(server)
    drop_database(name)


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from a test: in a thread of its own, since
    Playwright's sync API keeps an event loop running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


@pytest.fixture(scope="module")
def playwright(board_template: str) -> Iterator[Playwright]:
    # Playwright's sync API keeps an event loop running in the main thread while it
    # lives: per module, so that no test elsewhere finds that loop (asyncio.run and
    # pytest-asyncio refuse to run inside one), and after the template, whose fixtures
    # call asyncio.run.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: apt-get install chromium fonts-noto-cjk (.ci/run does)"
    )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


@dataclass
class Watched:
    """A page, and what it did: requests made, errors thrown in it."""

    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(
        locale="zh-CN", timezone_id=BROWSER_ZONE, viewport={"width": 1440, "height": 900}
    )
    page = context.new_page()
    seen = Watched(page)
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    yield seen
    context.close()
    assert seen.errors == [], "the board threw errors in the browser"


@pytest.fixture
def page(watched: Watched) -> Page:
    return watched.page


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("ZHIZAO_BOARD_SHOTS")
    if wanted:
        path = Path(wanted)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("board-shots")
