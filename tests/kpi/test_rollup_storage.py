"""Rollup jobs and KPI queries on a real PostgreSQL: textbook shift, late data, idempotency."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tests.kpi import textbook
from tests.kpi.seed import ENT, at, seed, write
from zhizao.calendar import from_ms
from zhizao.oee import Flag
from zhizao.storage.connection import Conn
from zhizao.storage.facts import CountRow, FactBatch, MetricRow, StateRow
from zhizao.storage.kpi import Level, OeeScope, oee_for_days, oee_for_interval, oee_from_facts
from zhizao.storage.rollups import run_rollups, store_calendars
from zhizao.wire import StateClass as S

CNC1 = OeeScope(Level.DEVICE, "CNC-1", ENT)


async def _snapshot(conn: Conn, table: str) -> dict[tuple[object, ...], tuple[object, ...]]:
    key = "day" if table == "rollup_device_day" else "hour"
    cur = await conn.execute(f"SELECT * FROM {table} ORDER BY device_id, {key}")
    return {(r[0], r[1]): tuple(r) for r in await cur.fetchall()}


def _textbook_facts(device: int) -> FactBatch:
    return FactBatch(
        states=[StateRow(device, p.ts_ms, p.state) for p in textbook.states()],
        counts=[
            row
            for c in textbook.counts()
            for row in (
                CountRow(device, c.ts_ms, 0, c.good),
                CountRow(device, c.ts_ms, 1, c.reject),
            )
        ],
    )


def _rounded(result: object) -> dict[str, float]:
    return {
        k: round(getattr(result, k), 4) for k in ("availability", "performance", "quality", "oee")
    }


async def test_textbook_shift_through_facts_rollups_and_queries(conn: Conn) -> None:
    ids = await seed(conn)
    await store_calendars(conn, [textbook.calendar(ENT)])
    await conn.commit()
    await write(conn, _textbook_facts(ids["CNC-1"]))
    _start, end = textbook.day_bounds()
    await run_rollups(conn, until=from_ms(end))

    day = await oee_for_days(conn, CNC1, textbook.DAY.date(), textbook.DAY.date())
    assert day.source == "rollup_device_day"
    assert _rounded(day.result) == textbook.EXPECTED
    assert day.result.pbt_s == 420 * 60

    s, e = textbook.shift_bounds()
    shift = await oee_for_interval(conn, CNC1, from_ms(s), from_ms(e))
    assert shift.source == "rollup_device_hour"
    assert shift.result.components == day.result.components

    # A period not aligned to hours is computed from the facts, with the same answer here.
    odd = await oee_for_interval(conn, CNC1, from_ms(s - 1_800_000), from_ms(e + 1_800_000))
    assert odd.source == "facts"
    assert _rounded(odd.result) == textbook.EXPECTED


async def test_line_oee_is_the_sum_of_its_devices(conn: Conn) -> None:
    ids = await seed(conn)
    await write(conn, _textbook_facts(ids["CNC-1"]))
    await write(conn, FactBatch(
        states=[StateRow(ids["CNC-2"], at(-1), S.RUNNING), StateRow(ids["CNC-2"], at(3), S.IDLE)],
        counts=[CountRow(ids["CNC-2"], at(1), 0, 1000), CountRow(ids["CNC-2"], at(2), 1, 10)],
    ))  # fmt: skip
    _start, end = textbook.day_bounds()
    await run_rollups(conn, until=from_ms(end))
    first = textbook.DAY.date()
    line = await oee_for_days(conn, OeeScope(Level.LINE, "L1", ENT), first, first)
    parts = [
        await oee_for_days(conn, OeeScope(Level.DEVICE, c, ENT), first, first)
        for c in ("CNC-1", "CNC-2")
    ]
    assert [d.device for d in line.devices] == ["CNC-1", "CNC-2"]
    assert line.result.components == parts[0].result.components + parts[1].result.components
    enterprise = await oee_for_days(conn, OeeScope(Level.ENTERPRISE, ENT), first, first)
    region = await oee_for_days(conn, OeeScope(Level.REGION, "330200"), first, first)
    cluster = await oee_for_days(conn, OeeScope(Level.CLUSTER, "NB-AUTO"), first, first)
    # The press on line L2 has no data: a whole day OFFLINE in the enterprise's figures.
    assert enterprise.result.components.offline_s == line.result.components.offline_s + 86_400
    assert region.result.components == enterprise.result.components == cluster.result.components
    assert Flag.COVERAGE_GAP in enterprise.result.flags


async def test_rollups_match_a_computation_from_raw_facts(conn: Conn) -> None:
    ids = await seed(conn)
    await write(conn, _textbook_facts(ids["CNC-1"]))
    start, end = textbook.day_bounds()
    await run_rollups(conn, until=from_ms(end))
    raw = await oee_from_facts(conn, CNC1, from_ms(start), from_ms(end))
    day = await oee_for_days(conn, CNC1, textbook.DAY.date(), textbook.DAY.date())
    assert raw[0].components == day.result.components


async def test_rerunning_changes_nothing(conn: Conn) -> None:
    ids = await seed(conn)
    await write(conn, _textbook_facts(ids["CNC-1"]))
    until = from_ms(textbook.day_bounds()[1])
    await run_rollups(conn, until=until)
    hours, days = (
        await _snapshot(conn, "rollup_device_hour"),
        await _snapshot(conn, "rollup_device_day"),
    )
    again = await run_rollups(conn, until=until)
    assert again.device_hours > 0  # the last hour of every device was looked at again ...
    assert await _snapshot(conn, "rollup_device_hour") == hours  # ... and nothing changed,
    assert await _snapshot(conn, "rollup_device_day") == days  # not even computed_at
    backfill = await run_rollups(conn, since=from_ms(textbook.day_bounds()[0]), until=until)
    assert backfill.device_hours >= 24
    assert await _snapshot(conn, "rollup_device_hour") == hours


async def test_late_data_recomputes_only_the_affected_buckets(conn: Conn) -> None:
    ids = await seed(conn)
    d = ids["CNC-1"]
    await write(
        conn,
        FactBatch(states=[StateRow(d, at(0), S.RUNNING)], metrics=[MetricRow(d, 1, at(0.5), 1.0)]),
    )
    until = from_ms(at(12))
    await run_rollups(conn, until=until)
    before = await _snapshot(conn, "rollup_device_hour")

    # A metric point of hour 3 arrives late: only that hour (and the day) change.
    await write(conn, FactBatch(metrics=[MetricRow(d, 1, at(3.2), 2.0)]))
    report = await run_rollups(conn, until=until)
    after = await _snapshot(conn, "rollup_device_hour")
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {(d, from_ms(at(3)))}
    cur = await conn.execute(
        "SELECT points FROM rollup_device_hour WHERE device_id = %s AND hour = %s",
        (d, from_ms(at(3))),
    )
    assert await cur.fetchone() == (1,)  # the late point is counted in its hour
    assert report.dirty_marks == 1

    # A late breakdown from 05:30 to 07:10: hours 5, 6 and 7 change, nothing else.
    await write(
        conn,
        FactBatch(
            states=[StateRow(d, at(5.5), S.UNPLANNED_STOP), StateRow(d, at(7 + 1 / 6), S.RUNNING)]
        ),
    )
    await run_rollups(conn, until=until)
    final = await _snapshot(conn, "rollup_device_hour")
    changed = {k for k in final if final[k] != after.get(k)}
    assert changed == {(d, from_ms(at(h))) for h in (5, 6, 7)}
    day = await oee_for_interval(conn, CNC1, from_ms(at(0)), from_ms(at(12)))
    assert day.result.components.unplanned_stop_s == 100 * 60


async def test_device_commissioned_mid_period_counts_from_that_day(conn: Conn) -> None:
    # CNC-1 enters service on 2026-03-04 (local); the facts say it ran all week.
    ids = await seed(conn, commissioned=date(2026, 3, 4))
    d = ids["CNC-1"]
    await write(conn, FactBatch(states=[StateRow(d, at(-48), S.RUNNING)]))
    await run_rollups(conn, since=from_ms(at(-48)), until=datetime(2026, 3, 8, 16, tzinfo=UTC))
    report = await oee_for_days(conn, CNC1, date(2026, 3, 1), date(2026, 3, 8))
    assert report.result.components.scheduled_s == 5 * 86_400  # 4th to 8th
    cur = await conn.execute("SELECT min(day) FROM rollup_device_day WHERE device_id = %s", (d,))
    assert (await cur.fetchone()) == (date(2026, 3, 4),)


async def test_device_decommissioned_mid_period_stops_counting(conn: Conn) -> None:
    ids = await seed(conn, decommissioned=date(2026, 3, 5))
    d = ids["CNC-1"]
    await write(conn, FactBatch(states=[StateRow(d, at(-8), S.RUNNING)]))
    await run_rollups(conn, since=from_ms(at(-8)), until=datetime(2026, 3, 8, 16, tzinfo=UTC))
    report = await oee_for_days(conn, CNC1, date(2026, 3, 2), date(2026, 3, 8))
    assert report.result.components.scheduled_s == 3 * 86_400  # 2nd, 3rd, 4th
    assert report.result.availability == 1.0


async def test_state_crossing_local_midnight_is_split_between_days(conn: Conn) -> None:
    ids = await seed(conn)
    d = ids["CNC-1"]
    # Local 2026-03-02 22:00 to 03-03 02:00 running (14:00-18:00 UTC), then idle.
    await write(
        conn, FactBatch(states=[StateRow(d, at(14), S.RUNNING), StateRow(d, at(18), S.IDLE)])
    )
    await run_rollups(conn, since=from_ms(at(14)), until=from_ms(at(20)))
    cur = await conn.execute(
        "SELECT day, running_s, idle_s FROM rollup_device_day WHERE device_id = %s"
        " AND day >= '2026-03-02' ORDER BY day",
        (d,),
    )
    assert await cur.fetchall() == [
        (date(2026, 3, 2), 2 * 3600.0, 0.0),
        (date(2026, 3, 3), 2 * 3600.0, 2 * 3600.0),
    ]


async def test_make_up_working_day_is_scheduled_through_the_stored_calendar(conn: Conn) -> None:
    from pathlib import Path

    from zhizao.calendar import read_calendar_file

    ids = await seed(conn)
    sample = Path(__file__).parents[2] / "zhizao" / "data" / "calendar_2026.yaml"
    await store_calendars(conn, read_calendar_file(sample))
    await conn.commit()
    d = ids["PRESS-1"]  # line L2: the enterprise calendar (two shifts, Mon-Fri)
    sat = datetime(2026, 2, 13, 16, tzinfo=UTC)  # 2026-02-14 00:00 local, 调休 Saturday
    await write(conn, FactBatch(states=[StateRow(d, int(sat.timestamp() * 1000), S.RUNNING)]))
    await run_rollups(conn, since=sat, until=sat + timedelta(days=3))
    cur = await conn.execute(
        "SELECT day, scheduled_s / 3600 FROM rollup_device_day WHERE device_id = %s"
        " AND day BETWEEN '2026-02-14' AND '2026-02-16' ORDER BY day",
        (d,),
    )
    # 调休 Saturday worked; 15th holiday (only the night shift of the 14th ends); 16th none.
    assert await cur.fetchall() == [
        (date(2026, 2, 14), 22.5),
        (date(2026, 2, 15), 7.5),
        (date(2026, 2, 16), 0.0),
    ]


async def test_concurrent_writers_of_the_same_devices_never_wait_for_each_other(
    conn: Conn, db_url: str
) -> None:
    import asyncio

    from zhizao.storage.connection import connect
    from zhizao.storage.facts import write_facts

    ids = await seed(conn)
    a, b = ids["CNC-1"], ids["CNC-2"]
    other = await connect(db_url)
    async with other:
        # Two ingest workers, each with an open transaction over both devices.
        await write_facts(conn, FactBatch(metrics=[MetricRow(a, 1, at(0.1), 1.0)],
                                          states=[StateRow(b, at(0.2), S.RUNNING)]))  # fmt: skip
        await asyncio.wait_for(
            write_facts(
                other,
                FactBatch(
                    metrics=[MetricRow(b, 1, at(0.3), 1.0)],
                    states=[StateRow(a, at(0.4), S.RUNNING)],
                ),
            ),
            timeout=5,
        )  # would wait for the first transaction if the marks were upserts
        await other.commit()
    await conn.commit()
    await run_rollups(conn, until=from_ms(at(1)))
    cur = await conn.execute(
        "SELECT device_id, points FROM rollup_device_hour WHERE hour = %s AND device_id = ANY(%s)"
        " ORDER BY device_id",
        (from_ms(at(0)), [a, b]),
    )
    assert await cur.fetchall() == [(a, 2), (b, 2)]
    cur = await conn.execute(
        "SELECT count(*) FROM device_hour_tally WHERE device_id = ANY(%s)", ([a, b],)
    )
    assert await cur.fetchone() == (2,)  # compacted to one row per device and hour


async def test_shift_window_comes_from_the_stored_calendar(conn: Conn) -> None:
    from zhizao.storage.kpi import shift_interval

    await seed(conn)
    await store_calendars(conn, [textbook.calendar(ENT)])
    await conn.commit()
    start, end = await shift_interval(conn, ENT, None, textbook.DAY.date(), "早班")
    assert (start, end) == tuple(from_ms(t) for t in textbook.shift_bounds())


async def test_an_enterprise_in_a_half_hour_zone_is_skipped_not_fatal(conn: Conn) -> None:
    ids = await seed(conn)
    await conn.execute(
        "UPDATE enterprise SET time_zone = 'Asia/Kolkata' WHERE credit_code = %s", (ENT,)
    )
    await conn.commit()
    await write(conn, FactBatch(states=[StateRow(ids["LOOM-1"], at(0), S.RUNNING)]))
    report = await run_rollups(conn, until=from_ms(at(2)))
    assert report.device_hours > 0  # the other enterprise's devices were rolled up
    cur = await conn.execute(
        "SELECT count(*) FROM rollup_device_hour WHERE device_id = %s", (ids["CNC-1"],)
    )
    assert await cur.fetchone() == (0,)


async def test_oee_by_shift_gives_each_shift_of_the_day(conn: Conn) -> None:
    from zhizao.storage.kpi import oee_by_shift

    ids = await seed(conn)
    await store_calendars(conn, [textbook.calendar(ENT)])
    await conn.commit()
    await write(conn, _textbook_facts(ids["CNC-1"]))
    await run_rollups(conn, until=from_ms(textbook.day_bounds()[1]))
    shifts = await oee_by_shift(conn, CNC1, textbook.DAY.date())
    assert [name for name, _ in shifts] == ["早班"]
    assert _rounded(shifts[0][1].result) == textbook.EXPECTED
