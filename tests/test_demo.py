"""``zhizao demo`` as a newcomer meets it: run twice against one data directory.

One module-scoped pair of runs (smoke scenario at 600×, a test database given with
``--db-url`` and a Mosquitto of this module's own, so no client id or topic is shared
with another test) serves most assertions: the second run simulates the next day and
leaves the first one's facts alone, every command it suggests works when pasted into
a shell, and its report stays on screen. The unreachable broker and database runs
need neither and are quick; the day-choosing rule is also tested as a pure function.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from edge.simulator.scenario import bundled, load_scenario
from tests.fix_db import RUN_ID, create_database, drop_database
from tests.fix_mqtt import Mosquitto
from zhizao.calendar import read_calendar_file
from zhizao.cli.demo import DEMO_ENTERPRISE, NO_EDGE, DemoError, demo_calendar_path, next_day
from zhizao.embedded import free_port

ZONE = ZoneInfo("Asia/Shanghai")
DAY1 = (datetime(2026, 3, 2, 8, tzinfo=ZONE), datetime(2026, 3, 2, 9, tzinfo=ZONE))
DAY2 = (DAY1[0] + timedelta(days=1), DAY1[1] + timedelta(days=1))

_FACTS = """
SELECT (SELECT count(*) FROM metric_point f WHERE {w})
     + (SELECT count(*) FROM state_change f WHERE {w})
     + (SELECT count(*) FROM production_count f WHERE {w}),
       (SELECT coalesce(sum(quantity), 0) FROM production_count f WHERE {w})
""".replace(
    "{w}",
    "f.device_id IN (SELECT d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
    " WHERE e.credit_code = %(ent)s) AND f.time BETWEEN %(start)s AND %(end)s",
)


def _facts(url: str, window: tuple[datetime, datetime]) -> tuple[int, int]:
    """(facts, parts produced) of the demo factory in a simulated window."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            _FACTS.encode(), {"ent": DEMO_ENTERPRISE, "start": window[0], "end": window[1]}
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _demo(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_DB_URL"}
    env["ZHIZAO_DEMO_HOME"] = str(home)
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "demo", "--scenario", "smoke", "--speed", "600",
         "--exit", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip


@dataclass
class Runs:
    home: Path
    db_url: str
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    day1_after_first: tuple[int, int]
    day1_after_second: tuple[int, int]
    day2_after_second: tuple[int, int]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path_factory.mktemp("demo-mosquitto"))
    mosquitto.start()
    yield mosquitto
    mosquitto.kill()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[Runs]:
    """The demo run twice against one data directory and one database of the user's own."""
    name = f"zhizao_demo_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)  # empty: the demo migrates it
    home = tmp_path_factory.mktemp("demo-home")
    try:
        args = ("--db-url", url, "--mqtt-url", broker.url, "--duration", "200")
        first = _demo(home, *args)
        assert first.returncode == 0, first.stderr + first.stdout
        day1 = _facts(url, DAY1)
        second = _demo(home, *args)
        assert second.returncode == 0, second.stderr + second.stdout
        yield Runs(home, url, first, second, day1, _facts(url, DAY1), _facts(url, DAY2))
    finally:
        drop_database(name)


def _ground_truth_parts(path: Path) -> int:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return sum(1 for r in records if r["type"] == "part")


def test_second_run_simulates_the_next_day_and_leaves_the_first_alone(runs: Runs) -> None:
    facts1, parts1 = runs.day1_after_first
    assert facts1 > 100
    # The first day's facts and counts are exactly what the first run stored: not replayed.
    assert runs.day1_after_second == runs.day1_after_first
    # Each day holds exactly the parts the simulator made that day: a replay into the
    # first day would have added the second run's parts, and a simulator that stopped
    # before the edge read its last values would have lost the day's last parts.
    truth1 = _ground_truth_parts(runs.home / "ground-truth-smoke-2026-03-02.jsonl")
    truth2 = _ground_truth_parts(runs.home / "ground-truth-smoke-2026-03-03.jsonl")
    assert truth1 == truth2 > 0
    assert 0 < parts1 == truth1
    facts2, parts2 = runs.day2_after_second
    assert facts2 > 100
    assert 0 < parts2 == truth2
    out = runs.second.stdout
    assert "simulated day 2026-03-03" in out
    assert "--fresh" in out  # the person is told how to start again
    title = re.search(r"OEE 按产线 by line — .*", out)
    assert title is not None, out
    assert "2026-03-03 周二 Tue 08:00–09:00 +08:00" in title[0], out
    # The second day's line L1 shows the second day's own production.
    row = re.search(r"│ L1 +│ ([\d.]+)% +│ ([\d.]+)% +│ ([\d.]+)% +│ ([\d.]+)% +│ (\d+) ", out)
    assert row is not None, out
    assert 0 < int(row[5]) <= parts2


def _suggested(out: str) -> tuple[str, list[str]]:
    """The export line and the commands the demo printed after its report."""
    after = out[out.index("where to look") :]
    export = re.findall(r"^  (export ZHIZAO_DB_URL=.*)$", after, flags=re.MULTILINE)
    commands = re.findall(r"^  (zhizao .*)$", after, flags=re.MULTILINE)
    assert len(export) == 1, after
    return export[0], commands


def test_every_suggested_command_works_when_pasted(runs: Runs) -> None:
    export, commands = _suggested(runs.second.stdout)
    assert shlex.split(export)[1] == f"ZHIZAO_DB_URL={runs.db_url}"
    assert len(commands) >= 5
    assert any(c.startswith("zhizao kpi oee ") for c in commands)
    # Pasted into a shell where the package is installed: the venv's bin on PATH.
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "zhizao").exists(), "the zhizao script is not installed beside python"
    env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_DB_URL"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", f"{export}\n{command}"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
        if command.startswith("zhizao kpi "):
            # A figure, and not only zeros: the demo's day is in that database.
            assert re.search(r"\b[1-9]\d*\.\d\d%", result.stdout), f"{command}\n{result.stdout}"
        else:
            assert "宁波瑞驰" in result.stdout, f"{command}\n{result.stdout}"


def test_the_report_stays_on_screen(runs: Runs) -> None:
    out, err = runs.second.stdout, runs.second.stderr
    # No service log line on the terminal, before or after the report: they are in the file.
    for line in (out + err).splitlines():
        assert not line.lstrip().startswith("{"), line
    assert err.strip() == ""
    log = runs.home / "demo.log"
    assert str(log) in out
    logged = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert any(entry["event"] == "rollups run" for entry in logged)  # the periodic one
    # Faults announced as they happen, in local time, before the day's facts are counted.
    breakdown = out.index("08:25+08:00 CNC-101 故障停机 breakdown: spindle alarm")
    assert out.index("08:20+08:00 RB-101 故障停机 breakdown") < breakdown
    assert breakdown < out.index("facts of the simulated day stored")
    # The report, then where to look, then the commands, and nothing after them.
    report = out.index("OEE 按产线 by line")
    assert report < out.index("where to look")
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("  zhizao "), last
    # Enterprises that no edge connects are explained, not shown as a rate of 0.
    rates = out[out.index("设备联网率 Equipment networking rate") : out.index("数控化率 NC rate")]
    ninghai = next(line for line in rates.splitlines() if "宁海县恒精压铸" in line)
    assert "0.00%" not in ninghai
    assert NO_EDGE.split(" (")[0] in ninghai
    demo_factory = next(line for line in rates.splitlines() if DEMO_ENTERPRISE in line)
    assert re.search(r"[1-9]\d*\.\d\d%", demo_factory), demo_factory


def _one_line_failure(result: subprocess.CompletedProcess[str], reason: str) -> None:
    text = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, text
    assert "✓" not in text, text
    assert len(text.splitlines()) == 1, text
    assert reason in text, text


def test_unreachable_broker_is_one_line_and_starts_nothing(tmp_path: Path, db_url: str) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    result = _demo(tmp_path, "--db-url", db_url, "--mqtt-url", nobody, "--duration", "60")
    _one_line_failure(result, f"cannot reach the MQTT broker {nobody}")


def test_a_port_where_no_mqtt_broker_answers_is_one_line(tmp_path: Path, db_url: str) -> None:
    """Something listens there (the kernel accepts the connection) but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"mqtt://127.0.0.1:{silent.getsockname()[1]}"
        result = _demo(tmp_path, "--db-url", db_url, "--mqtt-url", url, "--duration", "60")
    _one_line_failure(result, f"cannot reach the MQTT broker {url}: no MQTT answer")


def test_unreachable_database_is_one_line(tmp_path: Path, broker: Mosquitto) -> None:
    result = _demo(
        tmp_path, "--db-url", "postgresql://postgres@127.0.0.1:1/zhizao_demo",
        "--mqtt-url", broker.url, "--duration", "60",
    )  # fmt: skip
    _one_line_failure(result, "cannot connect to")


# -- the day-choosing rule, as a pure function ----------------------------------------------

SMOKE = load_scenario(bundled("smoke"))
FACTORY = load_scenario(bundled("factory"))
CALENDARS = [c for c in read_calendar_file(demo_calendar_path()) if c.enterprise == DEMO_ENTERPRISE]
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
AHEAD = timedelta(days=1)


def _next(scenario: object, latest: datetime | None, now: datetime = NOW) -> datetime:
    moved, _ = next_day(
        scenario,  # type: ignore[arg-type]
        latest, calendars=CALENDARS, zone=ZONE, now=now, max_future=AHEAD,
    )  # fmt: skip
    return moved.start


def test_first_run_plays_the_scenario_date_and_later_runs_the_next_working_day() -> None:
    assert _next(SMOKE, None) == SMOKE.start  # Monday 2026-03-02 08:00+08:00
    assert _next(SMOKE, DAY1[1]) == DAY2[0]  # after Monday's 09:00: Tuesday 08:00
    # A whole factory day ends on the next midnight, which is the next day's start.
    monday_end = FACTORY.start + timedelta(days=1)
    assert _next(FACTORY, monday_end) == monday_end
    # After Saturday 2026-03-07 comes Monday 2026-03-09: the calendar has no Sunday shift.
    saturday = datetime(2026, 3, 7, 9, tzinfo=ZONE)
    assert _next(SMOKE, saturday) == datetime(2026, 3, 9, 8, tzinfo=ZONE)
    # Facts older than the scenario (a user's own database) do not move it back.
    assert _next(SMOKE, datetime(2025, 1, 1, tzinfo=ZONE)) == SMOKE.start


def test_a_day_in_the_future_is_refused_naming_fresh() -> None:
    now = datetime(2026, 3, 3, 0, tzinfo=ZONE)  # the wall clock on Tuesday at midnight
    with pytest.raises(DemoError, match="--fresh"):
        _next(SMOKE, datetime(2026, 3, 4, 9, tzinfo=ZONE), now=now)
