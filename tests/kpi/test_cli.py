"""``zhizao rollup run`` and ``zhizao kpi ...`` print figures in Chinese and English."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.kpi import textbook
from tests.kpi.seed import ENT, seed
from zhizao.calendar import from_ms
from zhizao.cli import kpi, rollup
from zhizao.storage.connection import connect
from zhizao.storage.facts import CountRow, FactBatch, StateRow, write_facts
from zhizao.wire import StateClass as S

SAMPLE = Path(__file__).parents[2] / "zhizao" / "data" / "calendar_2026.yaml"

# zhizao/cli/__init__.py registers the two groups the same way.
app = typer.Typer()
app.add_typer(rollup.app, name="rollup")
app.add_typer(kpi.app, name="kpi")


def test_rollup_then_kpi_commands(db_url: str) -> None:
    async def prepare() -> None:
        conn = await connect(db_url)
        async with conn:
            ids = await seed(conn)
            d = ids["CNC-1"]
            await write_facts(conn, FactBatch(
                states=[StateRow(d, p.ts_ms, p.state) for p in textbook.states()],
                counts=[CountRow(d, c.ts_ms, 0, c.good) for c in textbook.counts()],
            ))  # fmt: skip
            await conn.commit()

    asyncio.run(prepare())
    runner = CliRunner()
    start, end = textbook.day_bounds()
    since, until = from_ms(start).isoformat(), from_ms(end).isoformat()
    result = runner.invoke(
        app, ["rollup", "run", "--since", since, "--until", until, "--db-url", db_url]
    )
    assert result.exit_code == 0, result.output
    assert "device-hours" in result.output

    day = textbook.DAY.date().isoformat()
    result = runner.invoke(
        app,
        ["kpi", "oee", "line", "L1", "--enterprise", ENT, "--date", day, "--db-url", db_url],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "OEE 设备综合效率" in result.output
    assert "故障停机损失 breakdowns" in result.output

    result = runner.invoke(
        app,
        ["kpi", "networking", "--group-by", "city", "--date", day, "--evidence", "330200",
         "--db-url", db_url],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "设备联网率" in result.output
    assert "CNC-1" in result.output

    result = runner.invoke(app, ["kpi", "nc", "--group-by", "province", "--date", day,
                                     "--db-url", db_url])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "数控化率" in result.output

    result = runner.invoke(app, ["kpi", "calendar", str(SAMPLE), "--db-url", db_url])
    assert result.exit_code == 0, result.output
    assert "stored 2 calendar" in result.output

    result = runner.invoke(
        app, ["kpi", "shifts", "enterprise", ENT, "--date", day, "--db-url", db_url],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "白班" in result.output
    assert "夜班" in result.output


def test_an_instant_without_offset_is_refused(db_url: str) -> None:
    result = CliRunner().invoke(
        app, ["rollup", "run", "--since", "2026-03-01T00:00", "--db-url", db_url]
    )
    assert result.exit_code == 2
    assert "UTC offset" in result.output


def test_times_are_local_and_history_needs_no_since(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.kpi.test_follow_the_data import LATER, historical_day, two_shift_calendar
    from zhizao.storage.rollups import store_calendars

    async def prepare(history: bool) -> None:
        conn = await connect(db_url)
        async with conn:
            if not history:
                ids = await seed(conn)
                await store_calendars(conn, [two_shift_calendar()])
                live = StateRow(ids["CNC-1"], int(LATER.timestamp() * 1000), S.RUNNING)
                await write_facts(conn, FactBatch(states=[live]))
            else:
                cur = await conn.execute("SELECT id FROM device WHERE code = 'CNC-1'")
                row = await cur.fetchone()
                assert row is not None
                await write_facts(conn, historical_day(int(row[0])))
                # The ledger's cycle time was too long: a plain run applies the new one.
                await conn.execute("UPDATE device SET ideal_cycle_time_s = 2 WHERE id = %s", row)
            await conn.commit()

    runner = CliRunner()
    wide = {"COLUMNS": "250"}

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args, "--db-url", db_url], env=wide)
        assert result.exit_code == 0, result.output
        return result.output

    asyncio.run(prepare(history=False))
    run("rollup", "run", "--until", "2026-03-12T08:00+08:00")
    asyncio.run(prepare(history=True))  # the 2nd, loaded after the watermark moved on
    out = run("rollup", "run", "--until", "2026-03-12T09:00+08:00")
    assert "rolled up until 2026-03-12 09:00+08:00" in out

    day = "2026-03-02"
    out = run("kpi", "shifts", "--level", "device", "--code", "CNC-1", "--enterprise", ENT,
              "--date", day)  # fmt: skip
    assert "2026-03-02 00:00+08:00" in out  # 凌晨班: no data at all, but planned
    assert "2026-03-02 06:00+08:00" in out
    assert "2026-03-02 14:00+08:00" in out
    assert "+00:00" not in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert "数据缺口 coverage_gap" in lines["凌晨班"]
    assert "0.00%" in lines["凌晨班"]  # A = 0 of 5 planned hours, not "no planned time"
    # P = 2 s × 19,271 / 22,380 s = 172.22 %: flagged, as `kpi oee` does.
    assert "172.22%" in lines["早班"]
    assert "性能>100% performance_over_100" in lines["早班"]
    assert "性能开动率超过100%" in out

    out = run("kpi", "oee", "device", "CNC-1", "--enterprise", ENT, "--date", day,
              "--shift", "早班")  # fmt: skip
    assert "2026-03-02 06:00+08:00 … 2026-03-02 14:00+08:00" in out
    assert "88.81%" in out  # A of the textbook shift
    out = run("kpi", "oee", "--level", "device", "--code", "CNC-1", "--enterprise", ENT,
              "--date", day)  # fmt: skip
    assert "51.81%" in out  # A = 22,380 / 43,200: the day is whole without --since

    # "Today" is the enterprise's local date: 17:30 UTC on the 1st is 01:30 on the 2nd.
    monkeypatch.setattr(kpi, "CLOCK", lambda: datetime(2026, 3, 1, 17, 30, tzinfo=UTC))
    out = run("kpi", "shifts", "device", "CNC-1", "--enterprise", ENT)
    assert "CNC-1 2026-03-02" in out
    assert "凌晨班" in out
    out = run("kpi", "oee", "device", "CNC-1", "--enterprise", ENT)
    assert "2026-03-02 … 2026-03-02" in out
    out = run("kpi", "nc", "--group-by", "enterprise")
    assert "(2026-03-02, by enterprise)" in out
    out = run("kpi", "networking", "--group-by", "enterprise", "--evidence", ENT)
    assert "2026-03-02 … 2026-03-02" in out
    # CNC-1's last good point that day: the end of the shift (a state) at 14:00 local.
    assert "2026-03-02 14:00:00+08:00" in out
    assert "不计入分母 excluded" in out
    assert "AC-1" in out
    out = run("kpi", "networking", "--current", "--group-by", "enterprise")
    assert "current at 2026-03-02 01:30+08:00" in out
