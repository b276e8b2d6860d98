"""KPI benchmark: a synthetic province, the KPI queries, the rollup job, raw-fact checks.

    .venv/bin/python bench/bench_kpi.py [--server-url postgresql://postgres@127.0.0.1/postgres]

Builds a database of its own (dropped at the end unless --keep): Zhejiang's 11 cities and
90 counties, 20 clusters, 500 enterprises with 20 devices each (10,000 devices), 365
days of day rollups written with COPY. One enterprise (the slice) instead gets 30 days
of raw facts, rolled up by the real job, so each query can be compared with the same
figure computed from the raw facts in the same run. Prints figures; asserts nothing
about time (DESIGN: benchmarks print, tests assert behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from psycopg import sql

from zhizao.codes import make_credit_code
from zhizao.networking import GroupBy, Method
from zhizao.oee import OeeComponents, compute, summed
from zhizao.regions import zhejiang_regions
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import Conn, connect, with_database
from zhizao.storage.facts import CountRow, FactBatch, MetricRow, StateRow, write_facts
from zhizao.storage.kpi import (
    Level,
    OeeScope,
    networking_parts,
    networking_rates,
    oee_for_days,
    oee_from_facts,
)
from zhizao.storage.migrate import upgrade
from zhizao.storage.registry import upsert_regions
from zhizao.storage.rollups import run_rollups
from zhizao.wire import StateClass

T = TypeVar("T")
DB = "zhizao_bench_kpi"
YEAR_START = date(2025, 7, 1)
DAYS = 365
MONTH = (date(2026, 3, 1), date(2026, 3, 31))
DEVICES_PER_ENTERPRISE = 20
ENTERPRISES = 500
INDUSTRIES = ["C3411", "C3670", "C1711", "C3824", "C2929", "C3311", "C3981", "C2438"]
SH_OFFSET = timedelta(hours=8)


def _say(text: str) -> None:
    print(text, flush=True)


async def _timed(job: Callable[[], Awaitable[T]], repeat: int = 15) -> tuple[T, float, float]:
    """Result, median and best wall time in ms (after one warm-up run)."""
    result = await job()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await job()
        times.append((time.perf_counter() - t0) * 1000)
    return result, statistics.median(times), min(times)


async def build_registry(conn: Conn, rng: random.Random) -> list[tuple[int, str]]:
    await upsert_regions(conn, zhejiang_regions())
    counties = [r.code for r in zhejiang_regions() if r.level == "county"]
    cities = [r.code for r in zhejiang_regions() if r.level == "city"]
    for i in range(20):
        await conn.execute(
            "INSERT INTO cluster (code, name, region_code, industry_code) VALUES (%s, %s, %s, %s)",
            (f"CL{i:02d}", f"产业集群 {i}", cities[i % len(cities)], INDUSTRIES[i % 8][:3]),
        )
    enterprises = []
    async with conn.cursor().copy(
        "COPY enterprise (credit_code, name, region_code, industry_code, above_designated_size,"
        " key_enterprise) FROM STDIN"
    ) as copy:
        for i in range(ENTERPRISES):
            county = counties[i % len(counties)]
            credit = make_credit_code(f"91{county}MA{i:07d}")
            enterprises.append(credit)
            await copy.write_row(
                (
                    credit,
                    f"企业 {i}",
                    county,
                    INDUSTRIES[i % 8],
                    rng.random() < 0.7,
                    rng.random() < 0.2,
                )
            )
    await conn.execute(
        "INSERT INTO enterprise_cluster SELECT e.id, c.id FROM enterprise e"
        " JOIN cluster c ON c.code = 'CL' || lpad(((e.id - 1) % 20)::text, 2, '0')"
    )
    await conn.execute(
        "INSERT INTO line (enterprise_id, code, name) SELECT e.id, 'L' || n, 'Line ' || n"
        " FROM enterprise e CROSS JOIN generate_series(1, 4) n"
    )
    async with conn.cursor().copy(
        "COPY device (enterprise_id, code, name, device_type, line_id, is_production_equipment,"
        " is_nc, key_process, ideal_cycle_time_s, commissioned_on) FROM STDIN"
    ) as copy:
        for e in range(1, ENTERPRISES + 1):
            for n in range(DEVICES_PER_ENTERPRISE):
                line = (e - 1) * 4 + n // 5 + 1
                commissioned = (
                    YEAR_START + timedelta(days=rng.randrange(DAYS))
                    if rng.random() < 0.05
                    else None
                )
                await copy.write_row(
                    (e, f"D{n:02d}", f"设备 {n}", "cnc_machine_tool", line, n != 19,
                     rng.random() < 0.6, rng.random() < 0.3, 30.0, commissioned)
                )  # fmt: skip
    cur = await conn.execute(
        "SELECT d.id, e.credit_code FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
        " ORDER BY d.id"
    )
    await conn.commit()
    return [(int(i), str(c)) for i, c in await cur.fetchall()]


async def copy_day_rollups(
    conn: Conn, devices: list[tuple[int, str]], skip: set[int], rng: random.Random
) -> int:
    """365 days of day rollups for every device but the slice's, with COPY."""
    rate = {c: rng.uniform(0.4, 0.98) for _, c in devices}
    rows = 0
    async with conn.cursor().copy(
        "COPY rollup_device_day (device_id, day, running_s, idle_s, unplanned_stop_s, offline_s,"
        " planned_stop_s, good, reject, ideal_time_s, points, good_points, online_reported,"
        " scheduled_s, sched_running_s, sched_idle_s, sched_unplanned_stop_s, sched_offline_s,"
        " sched_planned_stop_s, ideal_good_s) FROM STDIN"
    ) as copy:
        for device, credit in devices:
            if device in skip:
                continue
            lines = []
            for d in range(DAYS):
                day = YEAR_START + timedelta(days=d)
                networked = rng.random() < rate[credit]
                run = rng.randrange(30_000, 50_000) if networked else 0
                idle, stop = rng.randrange(0, 6000), rng.randrange(0, 3000)
                off = 57_600 - run - idle - stop if networked else 57_600
                good, reject = run // 35, run // 700
                lines.append(
                    f"{device}\t{day}\t{run}\t{idle}\t{stop}\t{max(off, 0)}\t28800"
                    f"\t{good}\t{reject}"
                    f"\t{(good + reject) * 30}\t{run * 2}\t{run * 2}\t{'t' if networked else 'f'}"
                    f"\t57600\t{run}\t{idle}\t{stop}\t{max(off, 0)}\t0\t{good * 30}\n"
                )
            await copy.write("".join(lines))
            rows += len(lines)
    await conn.commit()
    return rows


def slice_facts(device_ids: list[int], rng: random.Random) -> list[FactBatch]:
    """30 days of raw facts for the slice: a state change every ~10 min, counts every 5 min,
    one metric a minute, in batches of about a day per device."""
    start = datetime.combine(MONTH[0], datetime.min.time(), tzinfo=UTC) - SH_OFFSET
    start_ms = int(start.timestamp() * 1000)
    batches = []
    states = [StateClass.RUNNING] * 6 + [
        StateClass.IDLE,
        StateClass.SETUP,
        StateClass.UNPLANNED_STOP,
        StateClass.PLANNED_STOP,
    ]
    for device in device_ids:
        for day in range(31):
            batch = FactBatch()
            base = start_ms + day * 86_400_000
            t = base
            while t < base + 86_400_000:
                batch.states.append(StateRow(device, t, rng.choice(states)))
                t += rng.randrange(30_000, 1_200_000)
            for m in range(0, 1440, 5):
                batch.counts.append(
                    CountRow(device, base + m * 60_000 + 1, 0, rng.randrange(5, 10))
                )
                batch.counts.append(CountRow(device, base + m * 60_000 + 1, 1, rng.randrange(0, 2)))
            for m in range(1440):
                batch.metrics.append(MetricRow(device, 1, base + m * 60_000 + 7, 1.0))
            if rng.random() < 0.1:
                continue  # a day the device sends nothing: not networked that day
            batches.append(batch)
    return batches


async def raw_networking(conn: Conn, enterprise: str, first: date, last: date) -> tuple[int, int]:
    """Networked and in-service device-days of one enterprise, straight from the facts."""
    cur = await conn.execute(
        """
        WITH dev AS (
            SELECT d.id, e.time_zone,
                   greatest(%(first)s::date, d.commissioned_on) AS s,
                   least(%(last)s::date + 1, d.decommissioned_on) AS e
            FROM device d JOIN enterprise e ON e.id = d.enterprise_id
            WHERE e.credit_code = %(ent)s AND d.is_production_equipment
        ), seen AS (
            SELECT device_id, time FROM metric_point WHERE quality = 0
            UNION ALL SELECT device_id, time FROM state_change WHERE quality = 0
            UNION ALL SELECT device_id, time FROM production_count
            UNION ALL SELECT device_id, time FROM device_event
            UNION ALL SELECT device_id, time FROM device_connectivity WHERE online
        ), days AS (
            SELECT DISTINCT dev.id, (seen.time AT TIME ZONE dev.time_zone)::date AS day
            FROM seen JOIN dev ON dev.id = seen.device_id
        )
        SELECT (SELECT count(*) FROM days JOIN dev ON dev.id = days.id
                WHERE days.day >= dev.s AND days.day < dev.e),
               (SELECT sum(greatest(e - s, 0)) FROM dev)
        """,
        {"ent": enterprise, "first": first, "last": last},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def main(server_url: str, keep: bool) -> None:
    rng = random.Random(20260301)
    admin = await connect(with_database(server_url, "postgres"), autocommit=True)
    async with admin:
        await admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB))
        )
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    url = with_database(server_url, DB)
    try:
        await upgrade(DatabaseSettings(url=url), timescale=False)
        conn = await connect(url)
        async with conn:
            await run(conn, rng)
    finally:
        if not keep:
            admin = await connect(with_database(server_url, "postgres"), autocommit=True)
            async with admin:
                await admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB))
                )


async def run(conn: Conn, rng: random.Random) -> None:
    devices, slice_ent, slice_ids = await setup(conn, rng)
    batches = await ingest_slice(conn, slice_ids, rng)
    until = await rollup_jobs(conn, devices, slice_ids, rng)
    del batches
    await queries(conn, devices, slice_ent, until)


async def setup(conn: Conn, rng: random.Random) -> tuple[list[tuple[int, str]], str, list[int]]:
    t0 = time.perf_counter()
    devices = await build_registry(conn, rng)
    slice_ent = devices[0][1]
    slice_ids = [d for d, c in devices if c == slice_ent]
    _say(f"registry: {len(devices):,} devices, {ENTERPRISES} enterprises"
         f" ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    t0 = time.perf_counter()
    rows = await copy_day_rollups(conn, devices, set(slice_ids), rng)
    copy_s = time.perf_counter() - t0
    # A year of rows would long have been vacuumed: index-only scans need the visibility map.
    await conn.set_autocommit(True)
    await conn.execute("VACUUM ANALYZE rollup_device_day")
    await conn.set_autocommit(False)
    _say(f"day rollups: {rows:,} rows by COPY ({copy_s:.1f} s, {rows / copy_s:,.0f} rows/s)")
    return devices, slice_ent, slice_ids


async def ingest_slice(conn: Conn, slice_ids: list[int], rng: random.Random) -> list[FactBatch]:
    """The slice's raw facts through write_facts (triggers on), and the triggers' cost."""
    batches = slice_facts(slice_ids, rng)
    points = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for batch in batches:
        await write_facts(conn, batch)
        await conn.commit()
    ingest_s = time.perf_counter() - t0
    _say(f"slice ingest: {points:,} facts in {ingest_s:.1f} s = {points / ingest_s:,.0f} facts/s"
         " (one connection, triggers on)")  # fmt: skip
    # Trigger cost: the same metric rows (under other metric ids) with the trigger off, then on.
    metrics = [m for b in batches[:200] for m in b.metrics]
    for enabled in (False, True):
        if not enabled:
            await conn.execute("ALTER TABLE metric_point DISABLE TRIGGER metric_point_rollup")
        await conn.commit()
        rows_in = [r._replace(metric_id=3 if enabled else 2) for r in metrics]
        t0 = time.perf_counter()
        for i in range(0, len(rows_in), 5000):
            await write_facts(conn, FactBatch(metrics=rows_in[i : i + 5000]))
            await conn.commit()
        rate = len(rows_in) / (time.perf_counter() - t0)
        state = "on " if enabled else "off"
        _say(f"metric insert, batches of 5,000, trigger {state}: {rate:,.0f} points/s")
        if not enabled:
            await conn.execute("ALTER TABLE metric_point ENABLE TRIGGER metric_point_rollup")
            await conn.commit()
    await trigger_cost(conn)
    return batches


async def trigger_cost(conn: Conn) -> None:
    """The trigger's share of server time, which wall clocks on a shared machine blur."""
    shares = []
    for k in range(7):
        cur = await conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO metric_point"
            " (device_id, metric_id, time, value, quality)"
            " SELECT 1 + g %% 100, %s, timestamptz '2026-01-01' + (g / 100) * interval '1 s', 1, 0"
            " FROM generate_series(1, 5000) g ON CONFLICT DO NOTHING",
            (100 + k,),
        )
        row = await cur.fetchone()
        assert row is not None
        plan = row[0][0]
        trigger = sum(t["Time"] for t in plan.get("Triggers", []))
        shares.append((trigger, plan["Execution Time"]))
        await conn.rollback()
    trigger_ms, total_ms = (
        statistics.median(t for t, _ in shares),
        statistics.median(t for _, t in shares),
    )
    share, per_point = trigger_ms / total_ms, trigger_ms / 5  # 5,000 points: ms -> µs each
    _say(f"trigger on an insert of 5,000 metric points: {trigger_ms:.1f} ms of {total_ms:.1f}"
         f" ms server time ({share:.0%}, {per_point:.2f} µs a point)")  # fmt: skip


async def rollup_jobs(
    conn: Conn, devices: list[tuple[int, str]], slice_ids: list[int], rng: random.Random
) -> datetime:
    """A backfill of the slice's month, then a routine run over every device."""
    await conn.execute("DELETE FROM rollup_dirty")  # the backfill recomputes the month anyway
    await conn.commit()
    since = datetime.combine(MONTH[0], datetime.min.time(), tzinfo=UTC) - SH_OFFSET
    until = since + timedelta(days=31)
    report = await run_rollups(conn, since=since, until=until, device_ids=slice_ids)
    _say(f"rollup backfill (slice, {len(slice_ids)} devices x 31 days from raw facts):"
         f" {report.device_hours:,} device-hours in {report.seconds:.1f} s"
         f" = {report.device_hours_per_s:,.0f} device-hours/s")  # fmt: skip

    # Routine run: an hour of states and counts for every device, then the scheduled job.
    now = datetime(2026, 7, 1, 1, tzinfo=UTC)
    await conn.execute(
        "INSERT INTO rollup_watermark (computed_until) VALUES (%s)"
        " ON CONFLICT (singleton) DO UPDATE SET computed_until = excluded.computed_until",
        (now - timedelta(hours=1),),
    )
    # Every device gets hour rows from its first day with data (or history_days back) on
    # its first run. Build that once here, with a one-day horizon, so that the routine run
    # below measures the steady state a running platform is in.
    report = await run_rollups(conn, until=now - timedelta(hours=1), history_days=1)
    _say(f"first run (coverage of every device, one-day horizon): {report.device_hours:,}"
         f" device-hours in {report.seconds:.1f} s")  # fmt: skip
    t0 = time.perf_counter()
    base = int((now - timedelta(hours=1)).timestamp() * 1000)
    hour = FactBatch()
    for d, _ in devices:
        for k in range(12):  # a state change every 5 minutes
            state = rng.choice([StateClass.RUNNING, StateClass.IDLE])
            hour.states.append(StateRow(d, base + k * 300_000 + d % 1000, state))
        for k in range(120):  # a good and a reject count every 30 s
            hour.counts.append(CountRow(d, base + k * 30_000 + 3, 0, 1))
            hour.counts.append(CountRow(d, base + k * 30_000 + 3, 1, 0))
    for i in range(0, len(hour.states), 20_000):
        await write_facts(conn, FactBatch(states=hour.states[i : i + 20_000]))
    for i in range(0, len(hour.counts), 20_000):
        await write_facts(conn, FactBatch(counts=hour.counts[i : i + 20_000]))
    await conn.commit()
    _say(f"one hour of states and counts for {len(devices):,} devices written"
         f" ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    report = await run_rollups(conn, until=now, history_days=1)
    per_run = report.seconds
    _say(f"rollup routine run (every device, last hour plus the one before, {len(hour):,} facts):"
         f" {report.device_hours:,} device-hours in {per_run:.1f} s"
         f" = {report.device_hours_per_s:,.0f} device-hours/s")  # fmt: skip
    _say(f"    run every 5 min: {per_run / 300:.0%} of one core, whatever the metric rate"
         " (metrics reach the job only as one tally row per device-hour)")  # fmt: skip
    await conn.set_autocommit(True)
    await conn.execute("VACUUM ANALYZE")
    await conn.set_autocommit(False)
    return until


async def queries(
    conn: Conn, devices: list[tuple[int, str]], slice_ent: str, until: datetime
) -> None:
    figures, med, best = await _timed(
        lambda: networking_rates(conn, MONTH[0], MONTH[1], GroupBy.CITY)
    )
    ratio = [f for f in figures if f.method is Method.RATIO_OF_SUMS]
    _say(f"networking rate, province by city, one month: median {med:.1f} ms"
         f" (best {best:.1f} ms), {len(ratio)} cities")  # fmt: skip
    for f in ratio[:3]:
        _say(f"    {f.group}: {f.rate:.4f} ({f.numerator:,.0f}/{f.denominator:,.0f} device-days)")

    line = OeeScope(Level.LINE, "L1", slice_ent)
    first30, last30 = MONTH[0], MONTH[0] + timedelta(days=29)
    oee, med, best = await _timed(lambda: oee_for_days(conn, line, first30, last30))
    r = oee.result
    _say(f"OEE of one line over 30 days (rollups): median {med:.1f} ms (best {best:.1f} ms):"
         f" OEE {r.oee:.4f}, A {r.availability:.4f}, P {r.performance:.4f}, Q {r.quality:.4f}"
         f" flags {[str(f) for f in r.flags]}")  # fmt: skip
    other_line = OeeScope(Level.LINE, "L1", devices[-1][1])
    _, med, best = await _timed(lambda: oee_for_days(conn, other_line, first30, last30))
    _say(f"OEE of another line over 30 days: median {med:.1f} ms (best {best:.1f} ms)")

    # The same figures from the raw facts of the slice.
    start = datetime.combine(first30, datetime.min.time(), tzinfo=UTC) - SH_OFFSET
    end = start + timedelta(days=30)
    raw, med, best = await _timed(
        lambda: oee_from_facts(conn, line, start, end, horizon=until), repeat=3
    )
    raw_oee = compute(summed(d.components for d in raw))
    # Day rows are rounded to the millisecond; raw sums carry float noise below that.
    same = all(
        math.isclose(getattr(raw_oee.components, f), getattr(r.components, f), abs_tol=1e-3)
        for f in OeeComponents.__dataclass_fields__
    )
    verdict = "components equal to the millisecond" if same else f"DIFFERENT {raw_oee.components}"
    _say(f"OEE of the line from raw facts: {med:.0f} ms (best {best:.0f} ms):"
         f" OEE {raw_oee.oee:.4f} -> {verdict}")  # fmt: skip
    (num, den), med, best = await _timed(
        lambda: raw_networking(conn, slice_ent, MONTH[0], MONTH[1]), repeat=3
    )
    parts, med2, _ = await _timed(lambda: networking_parts(conn, MONTH[0], MONTH[1]))
    rolled = parts[slice_ent]
    same_rate = (num, den) == (rolled.numerator, rolled.denominator)
    _say(f"networking of the slice for the month: raw facts {num}/{den} in {med:.0f} ms;"
         f" rollups {rolled.numerator}/{rolled.denominator} (all 500 enterprises at once)"
         f" in {med2:.1f} ms -> {'identical' if same_rate else 'DIFFERENT'}")  # fmt: skip
    cur = await conn.execute("SELECT pg_size_pretty(pg_total_relation_size('rollup_device_day'))")
    size = await cur.fetchone()
    _say(f"rollup_device_day: {size[0] if size else '?'}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    args = parser.parse_args()
    asyncio.run(main(args.server_url, args.keep))


if __name__ == "__main__":
    cli()
