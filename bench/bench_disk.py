"""Disk per device: store a known day of facts, read what PostgreSQL uses for it.

    .venv/bin/python bench/bench_disk.py [--server-url postgresql://postgres@127.0.0.1/postgres]
                                         [--devices 5] [--metrics 8] [--every-s 10]

Builds a database of its own (dropped at the end unless --keep), migrates it, registers
one enterprise with ``--devices`` machines, and stores one day per device as a machine
tool sends it: ``--metrics`` process values every ``--every-s`` seconds (random walks,
as real spindle speeds and temperatures move, not constants that would compress to
nothing), a part counted every 60 s, 40 state changes; then rolls the day up and
VACUUMs. Prints each table's ``pg_total_relation_size`` (heap, indexes, TOAST) before
and after, the bytes per stored point, and the disk per device per year that follows
for that profile. Plain PostgreSQL: TimescaleDB's compression (docs/storage.md) is not
measured here. Asserts nothing (DESIGN: benchmarks print).
"""

from __future__ import annotations

import argparse
import asyncio
import random
from datetime import UTC, datetime, timedelta

from psycopg import sql

from zhizao.codes import make_credit_code
from zhizao.ledger import Ledger
from zhizao.regions import zhejiang_regions
from zhizao.registry import Device, Enterprise
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import Conn, connect, with_database
from zhizao.storage.facts import (
    COUNTER_CODES,
    CountRow,
    FactBatch,
    MetricRow,
    StateRow,
    metric_ids,
    write_facts,
    write_metrics,
)
from zhizao.storage.migrate import upgrade
from zhizao.storage.registry import store_ledger, upsert_regions
from zhizao.storage.rollups import run_rollups
from zhizao.wire import StateClass

DB = "zhizao_bench_disk"
DAY = datetime(2026, 3, 2, tzinfo=UTC)
TABLES = ("metric_point", "state_change", "production_count", "rollup_device_hour",
          "rollup_device_day", "device_hour_tally")  # fmt: skip
CHUNK = 50_000


async def _sizes(conn: Conn) -> dict[str, int]:
    sizes = {}
    for table in TABLES:
        cur = await conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,))
        row = await cur.fetchone()
        sizes[table] = int(row[0]) if row else 0
    return sizes


async def _run(  # noqa: PLR0915 - one measurement, step by step
    server: str, devices: int, metrics: int, every_s: int, keep: bool
) -> None:
    admin = await connect(with_database(server, "postgres"), autocommit=True)
    async with admin:
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DB)))  # fmt: skip
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    url = with_database(server, DB)
    await upgrade(DatabaseSettings(url=url))
    ent = make_credit_code("91330206MA2AGQ1E3")
    enterprise = Enterprise(
        credit_code=ent, name="宁波测试", region_code="330206", industry_code="C3670"
    )
    machines = [
        Device(enterprise=ent, code=f"CNC-{i:03d}", name=f"加工中心 {i}",
               device_type="cnc_machine_tool", is_nc=True, ideal_cycle_time_s=60.0)
        for i in range(devices)
    ]  # fmt: skip
    ledger = Ledger(clusters=[], enterprises=[enterprise], devices=machines, edges=[],
                    source="bench")  # fmt: skip
    rng = random.Random(7)
    conn = await connect(url)
    async with conn:
        await upsert_regions(conn, zhejiang_regions())
        await store_ledger(conn, ledger)
        await conn.commit()
        cur = await conn.execute("SELECT id FROM device ORDER BY code")
        ids = [int(r[0]) for r in await cur.fetchall()]
        names = await metric_ids(conn, [f"m{m}" for m in range(metrics)])
        await conn.commit()
        empty = await _sizes(conn)

        start_ms = int(DAY.timestamp() * 1000)
        steps = 86_400 // every_s
        points = 0
        rows: list[MetricRow] = []
        for device in ids:
            level = [rng.uniform(100, 8000) for _ in names]
            for step in range(steps):
                ts = start_ms + step * every_s * 1000
                for m, metric in enumerate(names.values()):
                    level[m] += rng.gauss(0, level[m] * 0.002)
                    rows.append(MetricRow(device, metric, ts, round(level[m], 2)))
                if len(rows) >= CHUNK:
                    points += await write_metrics(conn, rows)
                    await conn.commit()
                    rows = []
        if rows:
            points += await write_metrics(conn, rows)
        batch = FactBatch()
        for device in ids:
            batch.counts += [CountRow(device, start_ms + i * 60_000, COUNTER_CODES["good"], 1)
                             for i in range(1440)]  # fmt: skip
            states = [StateClass.RUNNING, StateClass.IDLE, StateClass.RUNNING,
                      StateClass.UNPLANNED_STOP]  # fmt: skip
            batch.states += [StateRow(device, start_ms + i * 2_160_000, states[i % 4])
                             for i in range(40)]  # fmt: skip
        await write_facts(conn, batch)
        await conn.commit()
        await run_rollups(conn, until=DAY + timedelta(days=1), history_days=0)
        await conn.commit()
    vacuum = await connect(url, autocommit=True)
    async with vacuum:
        await vacuum.execute("VACUUM (ANALYZE)")
        full = await _sizes(vacuum)

    used = {t: full[t] - empty[t] for t in TABLES}
    counts, states = len(batch.counts), len(batch.states)
    print(f"{devices} devices × {metrics} metrics every {every_s} s: {points:,} metric points,"
          f" {counts:,} counts, {states:,} state changes, one day")  # fmt: skip
    for table in TABLES:
        print(f"  {table:<20} {used[table] / 2**20:9.2f} MiB")
    per_point = used["metric_point"] / points
    per_device_day = sum(used.values()) / devices
    print(f"  metric_point: {per_point:.1f} bytes per point (heap and indexes)")
    print(
        f"  all facts and rollups: {per_device_day / 2**20:.2f} MiB per device-day,"
        f" {per_device_day * 365 / 2**30:.2f} GiB per device-year (no compression, no retention)"
    )
    if not keep:
        admin = await connect(with_database(server, "postgres"), autocommit=True)
        async with admin:
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(DB)))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--metrics", type=int, default=8)
    parser.add_argument("--every-s", type=int, default=10)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    asyncio.run(_run(args.server_url, args.devices, args.metrics, args.every_s, args.keep))


if __name__ == "__main__":
    main()
