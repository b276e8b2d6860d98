"""``zhizao rollup run`` and ``zhizao kpi ...`` print figures in Chinese and English."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from typer.testing import CliRunner

from tests.kpi import textbook
from tests.kpi.seed import ENT, seed
from zhizao.calendar import from_ms
from zhizao.cli import kpi, rollup
from zhizao.storage.connection import connect
from zhizao.storage.facts import CountRow, FactBatch, StateRow, write_facts

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
