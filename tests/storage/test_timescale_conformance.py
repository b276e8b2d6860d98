"""The TimescaleDB path: our migrations on a real TimescaleDB engine.

The engine is the WASM build of PGlite with TimescaleDB 2.23-dev (docs/timescale-wasm.md),
the only TimescaleDB that runs here. It checks what differs between the two paths:
hypertables, compression, retention and their reconciliation, and that the same
facts give the same stored rows and the same rollups as on plain PostgreSQL. It
cannot check TimescaleDB at scale (one connection, WASM speed): the benchmarks run
on plain PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fix_timescale import running_timescale_server
from zhizao.codes import make_credit_code
from zhizao.ledger import Ledger
from zhizao.registry import Device, EdgeGateway, Enterprise
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import Conn, connect
from zhizao.storage.facts import (
    ConnectivityRow,
    CountRow,
    FactBatch,
    MetricRow,
    StateRow,
    metric_ids,
    write_facts,
)
from zhizao.storage.migrate import HYPERTABLES, upgrade
from zhizao.storage.registry import store_ledger
from zhizao.storage.rollups import run_rollups
from zhizao.wire import StateClass

pytestmark = pytest.mark.timescale

ENT = make_credit_code("91330206MA2AGQ1E3")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z (08:00 in Shanghai)
MIN = 60_000


def _ledger() -> Ledger:
    ent = Enterprise(
        credit_code=ENT,
        name="宁波示范汽配有限公司",
        region_code="330206",
        industry_code="C3670",
        above_designated_size=True,
    )
    devices = [
        Device(
            enterprise=ENT,
            code="CNC-A01",
            name="加工中心",
            device_type="cnc_machine_tool",
            line_code="L1",
            is_nc=True,
            ideal_cycle_time_s=60.0,
        ),
        Device(
            enterprise=ENT,
            code="RB-01",
            name="机器人",
            device_type="industrial_robot",
            line_code="L1",
            is_nc=True,
            ideal_cycle_time_s=30.0,
        ),
    ]
    edge = EdgeGateway(enterprise=ENT, edge_id="nb-edge-01", device_codes=("CNC-A01", "RB-01"))
    return Ledger(enterprises=[ent], devices=devices, edges=[edge], source="test")


async def _load(conn: Conn) -> None:
    """The same two hours of one line on either engine."""
    await store_ledger(conn, _ledger())
    cur = await conn.execute("SELECT code, id FROM device ORDER BY code")
    ids = dict(await cur.fetchall())
    cnc, robot = ids["CNC-A01"], ids["RB-01"]
    metric = (await metric_ids(conn, ["spindle_speed"]))["spindle_speed"]
    batch = FactBatch(
        metrics=[MetricRow(cnc, metric, T0 + i * MIN, 8000.0 + i, 0) for i in range(120)],
        states=[
            StateRow(cnc, T0, StateClass.RUNNING),
            StateRow(
                cnc,
                T0 + 50 * MIN,
                StateClass.UNPLANNED_STOP,
                raw="ALM 1021",
                reason="spindle overload",
            ),
            StateRow(cnc, T0 + 70 * MIN, StateClass.RUNNING),
            StateRow(robot, T0, StateClass.SETUP),
            StateRow(robot, T0 + 20 * MIN, StateClass.RUNNING),
        ],
        counts=[CountRow(cnc, T0 + i * MIN, 0, 1) for i in range(0, 120, 2)]
        + [CountRow(cnc, T0 + 33 * MIN, 1, 2), CountRow(robot, T0 + 90 * MIN, 0, 150)],
        connectivity=[ConnectivityRow(robot, T0 + 100 * MIN, False, None, "session lost")],
    )
    await write_facts(conn, batch)
    await conn.commit()
    await run_rollups(conn, until=datetime.fromtimestamp((T0 + 120 * MIN) / 1000, tz=UTC))


async def _snapshot(conn: Conn) -> dict[str, list[tuple[object, ...]]]:
    queries = {
        "metric_point": "SELECT d.code, m.name, p.time, p.value, p.quality FROM metric_point p"
        " JOIN device d ON d.id = p.device_id JOIN metric_name m ON m.id = p.metric_id"
        " ORDER BY 1, 2, 3",
        "state_change": "SELECT d.code, s.time, s.state::text, s.raw, s.reason FROM state_change s"
        " JOIN device d ON d.id = s.device_id ORDER BY 1, 2",
        "production_count": "SELECT d.code, p.time, p.counter, p.quantity FROM production_count p"
        " JOIN device d ON d.id = p.device_id ORDER BY 1, 3, 2",
        "rollup_device_hour": "SELECT d.code, r.hour, r.running_s, r.idle_s, r.setup_s,"
        " r.unplanned_stop_s, r.planned_stop_s, r.offline_s, r.good, r.reject,"
        " r.ideal_time_s, r.points FROM rollup_device_hour r JOIN device d ON d.id = r.device_id"
        " ORDER BY 1, 2",
        "rollup_device_day": "SELECT d.code, r.day, r.running_s, r.offline_s, r.good, r.reject,"
        " r.ideal_time_s FROM rollup_device_day r JOIN device d ON d.id = r.device_id"
        " ORDER BY 1, 2",
        "hourly_by_date_bin": "SELECT date_bin('1 hour', time, 'epoch'::timestamptz) AS h,"
        " count(*), avg(value) FROM metric_point GROUP BY 1 ORDER BY 1",
    }
    out = {}
    for name, query in queries.items():
        cur = await conn.execute(query.encode())
        out[name] = list(await cur.fetchall())
    return out


async def test_migrations_on_timescaledb_and_results_match_plain_postgresql(
    tmp_path: Path, db_url: str
) -> None:
    with running_timescale_server(tmp_path) as server:
        settings = DatabaseSettings(url=server.url, metric_retention_days=30)
        first = await upgrade(settings)
        assert first.timescaledb is True
        assert first.version == (await upgrade(settings)).version  # second run: no-op

        conn = await connect(server.url)
        async with conn:
            cur = await conn.execute(
                "SELECT hypertable_name, compression_enabled"
                " FROM timescaledb_information.hypertables ORDER BY 1"
            )
            assert dict(await cur.fetchall()) == dict.fromkeys(sorted(HYPERTABLES), True)
            cur = await conn.execute(
                "SELECT attname FROM timescaledb_information.compression_settings"
                " WHERE hypertable_name = 'state_change' AND segmentby_column_index IS NOT NULL"
            )
            assert [r[0] for r in await cur.fetchall()] == ["device_id"]
            cur = await conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_compression' ORDER BY 1"
            )
            assert [r[0] for r in await cur.fetchall()] == sorted(HYPERTABLES)

        # A changed retention setting is reconciled on the next upgrade. (The engine
        # serves one connection at a time: each step closes its own.)
        await upgrade(DatabaseSettings(url=server.url, metric_retention_days=90))
        conn = await connect(server.url)
        async with conn:
            cur = await conn.execute(
                "SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_retention'"
            )
            assert await cur.fetchall() == [("metric_point", "90 days")]

        # So is a changed compression age (one policy per hypertable, replaced), and
        # retention turned off removes its policy.
        await upgrade(
            DatabaseSettings(url=server.url, metric_retention_days="off", compress_after_days=3)
        )
        conn = await connect(server.url)
        async with conn:
            cur = await conn.execute(
                "SELECT hypertable_name, config->>'compress_after'"
                " FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
                " ORDER BY 1"
            )
            assert await cur.fetchall() == [(t, "3 days") for t in sorted(HYPERTABLES)]
            cur = await conn.execute(
                "SELECT count(*) FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_retention'"
            )
            assert await cur.fetchone() == (0,)

            await _load(conn)
            on_timescale = await _snapshot(conn)
            await write_facts(conn, FactBatch(metrics=[MetricRow(1, 1, T0, 1.0, 0)]))
            replay = await conn.execute("SELECT count(*) FROM metric_point")
            assert (await replay.fetchone()) == (120,)  # a replayed point is absorbed

        assert server.returncode() is None, server.log_text()[-2000:]

    plain = await connect(db_url)
    async with plain:
        await _load(plain)
        on_postgresql = await _snapshot(plain)

    assert on_timescale["rollup_device_hour"], "the rollup produced nothing to compare"
    for name, rows in on_postgresql.items():
        assert on_timescale[name] == rows, f"{name} differs between TimescaleDB and PostgreSQL"
