"""The same facts give the same rollups and KPIs on TimescaleDB as on plain PostgreSQL.

Runs the migrations (hypertables, compression) and the rollup job on the TimescaleDB
WASM engine (tests/fix_timescale.py; skipped without node), then compares every rollup
row with the plain-PostgreSQL run of the same facts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fix_timescale import running_timescale_server
from tests.kpi import textbook
from tests.kpi.seed import ENT, at, seed
from zhizao.calendar import from_ms
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import Conn, connect
from zhizao.storage.facts import (
    ConnectivityRow,
    CountRow,
    FactBatch,
    MetricRow,
    StateRow,
    write_facts,
)
from zhizao.storage.kpi import Level, OeeScope, networking_parts, oee_for_days
from zhizao.storage.migrate import upgrade
from zhizao.storage.rollups import run_rollups, store_calendars
from zhizao.wire import StateClass as S

pytestmark = pytest.mark.timescale


def _facts(ids: dict[str, int]) -> FactBatch:
    d = ids["CNC-1"]
    return FactBatch(
        states=[StateRow(d, p.ts_ms, p.state) for p in textbook.states()]
        + [StateRow(ids["CNC-2"], at(1), S.RUNNING), StateRow(ids["CNC-2"], at(1.01), S.IDLE)],
        counts=[CountRow(d, c.ts_ms, 0, c.good) for c in textbook.counts()]
        + [CountRow(d, c.ts_ms, 1, c.reject) for c in textbook.counts()],
        metrics=[
            MetricRow(ids["PRESS-1"], 1, at(2), 1.0),
            MetricRow(ids["LOOM-1"], 1, at(3), 1.0, 2),
        ],
        connectivity=[ConnectivityRow(ids["LOOM-2"], at(4), True)],
    )


async def _run(
    conn: Conn,
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], object, object]:
    ids = await seed(conn)
    await store_calendars(conn, [textbook.calendar(ENT)])
    await conn.commit()
    await write_facts(conn, _facts(ids))
    await conn.commit()
    await write_facts(conn, _facts(ids))  # a replay changes nothing on either engine
    await conn.commit()
    start, end = textbook.day_bounds()
    await run_rollups(conn, since=from_ms(start), until=from_ms(end))
    rows = []
    for table, key in (("rollup_device_hour", "hour"), ("rollup_device_day", "day")):
        cur = await conn.execute(
            "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position)"
            " FROM information_schema.columns"
            " WHERE table_name = %s AND column_name NOT IN ('computed_at', 'device_id')",
            (table,),
        )
        cols = (await cur.fetchone() or [""])[0]
        cur = await conn.execute(
            # Device ids are identities: equal on both, since both registries load alike.
            f"SELECT device_id, {cols} FROM {table} ORDER BY device_id, {key}"
        )
        rows.append(list(await cur.fetchall()))
    day = textbook.DAY.date()
    oee = await oee_for_days(conn, OeeScope(Level.ENTERPRISE, ENT), day, day)
    networking = await networking_parts(conn, day, day)
    return rows[0], rows[1], oee.result, networking


async def test_rollups_and_kpis_are_identical_on_timescaledb(db_url: str, tmp_path: Path) -> None:
    plain = await connect(db_url)
    async with plain:
        expected = await _run(plain)
    with running_timescale_server(tmp_path) as server:
        result = await upgrade(DatabaseSettings(url=server.url))
        assert result.timescaledb
        ts = await connect(server.url)
        async with ts:
            got = await _run(ts)
    assert got == expected
