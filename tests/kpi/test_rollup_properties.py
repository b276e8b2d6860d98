"""Property: however facts arrive (in order, late, replayed) and however often the job
runs, the rollups end up equal to one full recomputation, and a rerun changes nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kpi.seed import at, seed
from zhizao.calendar import from_ms
from zhizao.storage.connection import Conn, connect
from zhizao.storage.facts import (
    ConnectivityRow,
    CountRow,
    FactBatch,
    MetricRow,
    StateRow,
    write_facts,
)
from zhizao.storage.rollups import run_rollups
from zhizao.wire import StateClass

_H = 3_600_000
_TABLES = ("rollup_device_hour", "rollup_device_day")
_RESET = (
    "TRUNCATE state_change, production_count, metric_point, device_connectivity, edge_status,"
    " rollup_device_hour, rollup_device_day, rollup_dirty, device_hour_tally, rollup_watermark,"
    " rollup_coverage"
)

_fact = st.one_of(
    st.builds(
        lambda t, s: ("state", t, s), st.integers(0, 10 * _H), st.sampled_from(list(StateClass))
    ),
    st.builds(lambda t, n: ("count", t, n), st.integers(0, 10 * _H), st.integers(0, 9)),
    st.builds(lambda t, q: ("metric", t, q), st.integers(0, 10 * _H), st.integers(0, 2)),
    st.builds(lambda t, o: ("conn", t, o), st.integers(0, 10 * _H), st.booleans()),
)
# Batches of facts, each written after the job ran up to some hour: late data included.
_history = st.lists(
    st.tuples(st.lists(_fact, min_size=1, max_size=8), st.integers(1, 12)), min_size=1, max_size=5
)


def _batch(device: int, facts: list[tuple[str, int, object]]) -> FactBatch:
    batch = FactBatch()
    for kind, t, value in facts:
        ts = at(0) + t
        if kind == "state":
            assert isinstance(value, StateClass)
            batch.states.append(StateRow(device, ts, value))
        elif kind == "count":
            batch.counts.append(CountRow(device, ts, 0, int(str(value))))
        elif kind == "metric":
            batch.metrics.append(MetricRow(device, 1, ts, 1.0, int(str(value))))
        else:
            batch.connectivity.append(ConnectivityRow(device, ts, bool(value)))
    return batch


async def _rows(conn: Conn) -> dict[str, list[tuple[object, ...]]]:
    """The rollup rows without computed_at: two ways of getting there differ only in it."""
    out = {}
    for table in _TABLES:
        cur = await conn.execute(
            "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position)"
            " FROM information_schema.columns"
            " WHERE table_name = %s AND column_name <> 'computed_at'",
            (table,),
        )
        row = await cur.fetchone()
        assert row is not None
        key = "day" if table.endswith("day") else "hour"
        cur = await conn.execute(f"SELECT {row[0]} FROM {table} ORDER BY device_id, {key}")
        out[table] = list(await cur.fetchall())
    return out


async def _check(url: str, history: list[tuple[list[tuple[str, int, object]], int]]) -> None:
    conn = await connect(url)
    async with conn:
        cur = await conn.execute("SELECT id FROM device WHERE code = 'CNC-1'")
        row = await cur.fetchone()
        assert row is not None
        device = int(row[0])
        await conn.execute(_RESET)
        await conn.commit()
        end = from_ms(at(12))
        begin = from_ms(at(0)) - timedelta(hours=1)
        await run_rollups(conn, since=begin, until=from_ms(at(0)))  # the initial backfill
        # The job's clock only moves forward; facts may be for any time before or after it.
        hours = sorted(hour for _, hour in history)
        for (facts, _), hour in zip(history, hours, strict=True):
            await run_rollups(conn, until=from_ms(at(hour)))
            await write_facts(conn, _batch(device, facts))
            await write_facts(conn, _batch(device, facts))  # replayed: absorbed
            await conn.commit()
        await run_rollups(conn, until=end)
        incremental = await _rows(conn)
        await run_rollups(conn, until=end)
        assert await _rows(conn) == incremental  # rerunning changes nothing
        await conn.execute(
            "TRUNCATE rollup_device_hour, rollup_device_day, rollup_watermark, rollup_coverage"
        )
        await conn.commit()
        await run_rollups(conn, since=begin, until=end)
        full = await _rows(conn)
    assert incremental == full


def test_incremental_rollups_equal_a_full_recomputation(db_url: str) -> None:
    async def _seed() -> None:
        conn = await connect(db_url)
        async with conn:
            await seed(conn)

    asyncio.run(_seed())

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_history)
    def run(history: list[tuple[list[tuple[str, int, object]], int]]) -> None:
        asyncio.run(_check(db_url, history))

    run()
