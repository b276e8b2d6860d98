"""Run ``zhizao demo`` as a newcomer would, open its board, time the first KPI, and
save the README's screenshot.

    .venv/bin/python -m scripts.board_screenshots [--out docs/board.png] [--no-shot]
        [--scenario factory] [--speed 600] [--db-url URL] [--mqtt-url URL]

What it does, in order, timing each step from the moment ``zhizao demo`` starts:

1. starts ``python -m zhizao.cli demo --fresh`` in a data directory of its own (a new
   temporary one: embedded PostgreSQL and broker, nothing reused; ``--db-url`` and
   ``--mqtt-url`` are passed on when given);
2. reads the board's address and the generated login from the demo's first lines;
3. opens the address in Debian's Chromium (headless, Playwright; ``ZHIZAO_CHROMIUM``
   overrides ``/usr/bin/chromium``), logs in through the login page;
4. waits for the first OEE figure on screen (the demo factory's page), and for the
   first one above zero (parts counted: the simulated day is running);
5. unless ``--no-shot``: waits until the simulated day has run, opens line L1 of the
   demo factory and saves the page as ``--out`` (and the enterprise page beside it as
   ``*-enterprise.png``); then stops the demo (SIGINT) and prints the timings.

The figures are the README's "time to first KPI"; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("ZHIZAO_CHROMIUM", "/usr/bin/chromium")
URL = re.compile(r"^看板 board\s+(http://\S+)")
LOGIN = re.compile(r"用户 user (\S+)\s+密码 password (\S+)")
DAY_DONE = "facts of the simulated day stored"


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    started: float
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def read(self) -> None:
        for line in self.proc.stdout or ():
            self.lines.put(line.rstrip("\n"))

    def match(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        found = self.until(pattern, timeout)
        if not isinstance(found, re.Match):
            raise SystemExit(f"the demo did not print {pattern.pattern!r}")
        return found

    def until(self, pattern: re.Pattern[str] | str, timeout: float) -> re.Match[str] | str:
        """The first line (from now) matching ``pattern``; the demo's output is echoed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            print(f"  demo| {line}", flush=True)
            if isinstance(pattern, str):
                if pattern in line:
                    return line
            elif match := pattern.search(line):
                return match
        raise SystemExit(f"the demo did not print {pattern!r} in {timeout:g} s")

    def since(self) -> float:
        return time.monotonic() - self.started


def start_demo(args: argparse.Namespace, home: Path) -> Demo:
    env = {**os.environ, "ZHIZAO_DEMO_HOME": str(home), "COLUMNS": "200"}
    env.pop("ZHIZAO_DB_URL", None)
    command = [sys.executable, "-m", "zhizao.cli", "demo", "--fresh", "--scenario", args.scenario]
    if args.speed:
        command += ["--speed", str(args.speed)]
    if args.db_url:
        command += ["--db-url", args.db_url]
    if args.mqtt_url:
        command += ["--mqtt-url", args.mqtt_url]
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - this interpreter running the demo
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )
    demo = Demo(proc, started)
    threading.Thread(target=demo.read, daemon=True).start()
    return demo


def first_oee(page: Page, *, above_zero: bool, timeout_s: float) -> str:
    """Wait for the page's OEE tile to show a figure (above zero if asked); its text."""
    page.wait_for_function(
        """([above]) => {
            const el = document.querySelector('.tiles [data-kpi="oee"]');
            if (!el || el.dataset.value === "") return false;
            return above ? Number(el.dataset.value) > 0 : true;
        }""",
        arg=[above_zero],
        timeout=timeout_s * 1000,
        polling=200,
    )
    return page.locator('.tiles [data-kpi="oee"]').inner_text()


def time_first_kpi(
    page: Page, demo: Demo, url: str, user: str, password: str
) -> list[tuple[str, float, str]]:
    """Log in, then wait for the factory's OEE: (what, seconds since the demo began, shown)."""
    page.goto(url)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")
    page.wait_for_selector('#view [data-page="enterprise"]', timeout=120_000)
    t_page = demo.since()
    shown = first_oee(page, above_zero=False, timeout_s=300)
    t_first = demo.since()
    counted = first_oee(page, above_zero=True, timeout_s=600)
    return [
        ("logged in, factory page", t_page, ""),
        ("first OEE on screen", t_first, f"({shown})"),
        ("first OEE above zero (parts)", demo.since(), f"({counted})"),
    ]


def screenshots(page: Page, demo: Demo, url: str, out: Path) -> None:
    """When the day has run: line L1 as ``out``, the factory's page beside it."""
    demo.until(DAY_DONE, 1200)
    base, enterprise = url.split("#", 1)
    line = enterprise.replace("/enterprise/", "/line/").replace("?", "/L1?")
    page.goto(f"{base}#{line}&refresh=5")
    page.wait_for_selector('#view [data-page="line"] .tl-row', timeout=60_000)
    page.wait_for_timeout(1500)  # charts drawn
    page.screenshot(path=str(out), full_page=True)
    page.goto(url)
    page.wait_for_selector('#view [data-page="enterprise"]', timeout=60_000)
    page.wait_for_timeout(1500)
    beside = out.with_name(f"{out.stem}-enterprise{out.suffix}")
    page.screenshot(path=str(beside), full_page=True)
    print(f"screenshots: {out}, {beside}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "board.png")
    parser.add_argument("--no-shot", action="store_true", help="only time the first KPI")
    parser.add_argument("--scenario", default="factory")
    parser.add_argument("--speed", type=float, default=None)
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--mqtt-url", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zhizao-board-demo-") as tmp:
        demo = start_demo(args, Path(tmp))
        try:
            url = demo.match(URL, 300)[1]
            t_url = demo.since()
            login = demo.match(LOGIN, 30)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(locale="zh-CN", viewport={"width": 1440, "height": 900})
                timings = time_first_kpi(page, demo, url, login[1], login[2])
                print(f"\nboard address printed        {t_url:6.1f} s after `zhizao demo`")
                for what, seconds, text in timings:
                    print(f"{what:<29} {seconds:6.1f} s  {text}")
                if not args.no_shot:
                    screenshots(page, demo, url, args.out)
                browser.close()
        finally:
            if demo.proc.poll() is None:
                demo.proc.send_signal(signal.SIGINT)
                try:
                    demo.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    demo.proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
