"""``zhizao demo`` and its board, as a newcomer meets them: the address and login
printed first, a browser that logs in with them and sees the demo factory's figures
arrive while the simulated day runs; and the login's rules (made once per data
directory, readable by its owner only, never a fixed password, a secret that only
the demo accepts).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from pydantic import ValidationError

from platform_api.settings import ApiSettings
from tests.board.test_board import TIMEOUT, pct
from tests.fix_db import RUN_ID, create_database, drop_database
from tests.fix_mqtt import Mosquitto
from zhizao.cli.demo import DEMO_ENTERPRISE
from zhizao.cli.demo_board import DEFAULT_PORT, LOGIN_FILE, demo_login, listen
from zhizao.embedded import free_port
from zhizao.settings import DEMO_SECRET

URL = re.compile(r"^看板 board\s+(http://\S+)")
LOGIN = re.compile(r"用户 user (\S+)\s+密码 password (\S+)")


def test_the_demo_login_is_made_once_per_data_directory_and_kept_private(
    tmp_path: Path,
) -> None:
    first, other = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    other.mkdir()
    login = demo_login(first)
    assert demo_login(first) == login  # kept: a second run prints the same login
    assert stat.S_IMODE((first / LOGIN_FILE).stat().st_mode) == 0o600
    again = demo_login(other)
    assert again.password != login.password
    assert again.jwt_secret != login.jwt_secret
    assert len(login.password) >= 10
    assert login.password != login.username
    # The secret is the demo's: the API refuses it unless the demo starts the API.
    assert login.jwt_secret.startswith(DEMO_SECRET)
    with pytest.raises(ValidationError, match="demo's secret"):
        ApiSettings(jwt_secret=login.jwt_secret)  # type: ignore[arg-type]
    assert ApiSettings(jwt_secret=login.jwt_secret, demo=True).demo  # type: ignore[arg-type]


def test_the_board_takes_another_port_when_the_default_one_is_taken() -> None:
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", DEFAULT_PORT))
    except OSError:
        holder.close()
        holder = None  # type: ignore[assignment]  # someone else holds it: the same case
    try:
        sock = listen("127.0.0.1", None)
        assert sock.getsockname()[1] != DEFAULT_PORT
        sock.close()
        wanted = free_port()
        sock = listen("127.0.0.1", wanted)
        assert sock.getsockname()[1] == wanted
        sock.close()
    finally:
        if holder is not None:
            holder.close()


class Demo:
    """``zhizao demo`` running, its output read line by line as it comes."""

    def __init__(self, home: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_DB_URL"}
        env.update(ZHIZAO_DEMO_HOME=str(home), COLUMNS="200")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zhizao.cli", "demo", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "\n".join(self.seen)
                continue
            self.seen.append(line)
            if match := pattern.search(line):
                return match
        raise AssertionError(f"no {pattern.pattern!r} in:\n" + "\n".join(self.seen))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


@pytest.fixture
def demo_db() -> Iterator[str]:
    name = f"zhizao_demo_b_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    mosquitto.folder.mkdir()
    mosquitto.start()
    yield mosquitto
    mosquitto.kill()


def test_a_newcomer_opens_the_printed_address_and_sees_the_day_run(
    page: Page, demo_db: str, broker: Mosquitto, tmp_path: Path, shots: Path
) -> None:
    port = free_port()
    demo = Demo(
        tmp_path / "home", "--scenario", "smoke", "--speed", "120", "--db-url", demo_db,
        "--mqtt-url", broker.url, "--board-port", str(port), "--duration", "150",
    )  # fmt: skip
    try:
        url = demo.wait_for(URL)[1]
        # The board's address is the first line the demo prints, and names the factory
        # on the simulated day.
        assert demo.seen[0].startswith("看板 board"), demo.seen
        assert url == (f"http://127.0.0.1:{port}/board/#/enterprise/{DEMO_ENTERPRISE}"
                       "?day=2026-03-02")  # fmt: skip
        user, password = demo.wait_for(LOGIN).groups()
        assert user == "demo"
        assert (tmp_path / "home" / LOGIN_FILE).exists()

        page.goto(url)
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", password)
        page.click("form.login button[type=submit]")
        expect(page.locator(f'#view [data-page="enterprise"][data-enterprise="{DEMO_ENTERPRISE}"]')
               ).to_be_visible(timeout=TIMEOUT)  # fmt: skip
        # Figures arrive while the simulated hour runs: OEE above zero, then higher
        # (more parts), without reloading the page.
        tile = page.locator('.tiles [data-kpi="oee"]')
        page.wait_for_function(
            """() => Number(document.querySelector('.tiles [data-kpi="oee"]')
                     ?.dataset.value || 0) > 0""",
            timeout=120_000,
        )
        first = float(tile.get_attribute("data-value") or 0)
        page.evaluate("window.__notReloaded = true")
        page.wait_for_function(
            f"""() => Number(document.querySelector('.tiles [data-kpi="oee"]')
                      ?.dataset.value || 0) !== {first}""",
            timeout=120_000,
        )
        assert page.evaluate("window.__notReloaded") is True
        demo.wait_for(re.compile("facts of the simulated day stored"))
        page.wait_for_timeout(12_000)  # a refresh after the last rollup
        token = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/token",
                           data={"username": user, "password": password}, timeout=30
                           ).json()["access_token"]  # fmt: skip
        oee = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/kpi/oee", timeout=30,
            params={"level": "enterprise", "code": DEMO_ENTERPRISE, "date": "2026-03-02"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["result"]  # fmt: skip
        expect(tile).to_have_text(pct(oee["oee"]), timeout=TIMEOUT)
        expect(page.locator("table.lines tr[data-line=L1]")).to_be_visible()
        shoot = shots / "demo-enterprise.png"
        page.screenshot(path=str(shoot), full_page=True)
    finally:
        code = demo.stop()
    assert code == 0, "\n".join(demo.seen)
    # The board stopped with the demo.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
