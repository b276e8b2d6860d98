"""KPIs follow the data (issue 9, points 10 and 11): late history, new devices, ledger edits.

Every figure is checked three ways: against numbers worked out by hand in the comments,
against the pure functions run over the raw facts (``oee_from_facts``), and, after a
ledger change, against rollups recomputed from scratch. No run here passes ``since``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from tests.kpi import textbook
from tests.kpi.seed import ENT, ENT2, seed, write
from zhizao.calendar import ShiftCalendar, from_ms, to_ms
from zhizao.networking import GroupBy, Method
from zhizao.oee import Flag
from zhizao.storage.connection import Conn
from zhizao.storage.facts import CountRow, FactBatch, StateRow
from zhizao.storage.kpi import (
    Level,
    OeeScope,
    nc_rates,
    oee_by_shift,
    oee_for_days,
    oee_from_facts,
)
from zhizao.storage.rollups import run_rollups, store_calendars
from zhizao.wire import StateClass as S

CNC1 = OeeScope(Level.DEVICE, "CNC-1", ENT)
DAY = textbook.DAY.date()  # Monday 2026-03-02, local
LATER = textbook.DAY + timedelta(days=10)  # 2026-03-12 00:00 local: the watermark's day


def two_shift_calendar() -> ShiftCalendar:
    """The textbook's 早班 and, before it, a shift nobody will report anything for."""
    cal = textbook.calendar(ENT).model_dump(by_alias=True)
    cal["shifts"] = [{"name": "凌晨班", "start": "00:00", "end": "05:00"}, *cal["shifts"]]
    return ShiftCalendar.model_validate(cal)


def historical_day(device: int) -> FactBatch:
    """The textbook shift as a historical import: nothing before 06:00 (OFFLINE)."""
    return FactBatch(
        states=[StateRow(device, p.ts_ms, p.state) for p in textbook.states()[1:]],
        counts=[
            row
            for c in textbook.counts()
            for row in (
                CountRow(device, c.ts_ms, 0, c.good),
                CountRow(device, c.ts_ms, 1, c.reject),
            )
        ],
    )


def _rounded(result: object) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in ("availability", "performance", "quality", "oee"):
        v = getattr(result, k)
        out[k] = None if v is None else round(v, 4)
    return out


async def _live_then_history(conn: Conn, **kwargs: int) -> dict[str, int]:
    """The watermark moves on with live data; then the 2nd's history arrives; a plain run."""
    ids = await seed(conn)
    await store_calendars(conn, [two_shift_calendar()])
    await conn.commit()
    live = to_ms(LATER)
    await write(conn, FactBatch(states=[StateRow(ids["CNC-1"], live, S.RUNNING)]))
    await run_rollups(conn, until=LATER + timedelta(hours=8), **kwargs)
    await write(conn, historical_day(ids["CNC-1"]))
    await run_rollups(conn, until=LATER + timedelta(hours=9), **kwargs)
    return ids


@pytest.mark.parametrize("history_days", [None, 3])
async def test_history_loaded_after_the_watermark_is_rolled_up_whole(
    conn: Conn, history_days: int | None
) -> None:
    # Default (62 days): the 2nd lies inside the horizon (its rows existed, OFFLINE, and
    # are recomputed); 3: it lies before it, and the data extends the rollups back to it.
    await _live_then_history(conn, **({} if history_days is None else {"history_days": 3}))
    day = await oee_for_days(conn, CNC1, DAY, DAY)
    c = day.result.components
    # Scheduled: 凌晨班 5 h + 早班 420 min = 18,000 + 25,200 = 43,200 s, the first 5 h OFFLINE.
    # APT 22,380 s (textbook). A = 22,380 / 43,200, P = 19,271 / 22,380,
    # Q = 18,848 / 19,271, OEE = 18,848 / 43,200.
    assert c.scheduled_s == 43_200
    assert c.offline_s == 18_000
    assert c.apt_s == 22_380
    assert _rounded(day.result) == {
        "availability": 0.5181, "performance": 0.8611, "quality": 0.978, "oee": 0.4363,
    }  # fmt: skip
    assert Flag.COVERAGE_GAP in day.result.flags
    start, end = textbook.day_bounds()
    [raw] = await oee_from_facts(conn, CNC1, from_ms(start), from_ms(end))
    assert raw.components == c

    shifts = dict(await oee_by_shift(conn, CNC1, DAY))
    early = shifts["凌晨班"].result
    assert early.pbt_s == 18_000  # planned time present, not "no planned time"
    assert early.components.offline_s == 18_000
    assert early.availability == 0.0
    assert Flag.COVERAGE_GAP in early.flags
    assert _rounded(shifts["早班"].result) == textbook.EXPECTED


async def test_rollups_reach_back_to_the_first_day_with_data_not_further(conn: Conn) -> None:
    ids = await _live_then_history(conn, history_days=3)
    cur = await conn.execute(
        "SELECT d.code, min(r.day), count(*) FROM rollup_device_day r"
        " JOIN device d ON d.id = r.device_id WHERE d.code IN ('CNC-1', 'CNC-2')"
        " GROUP BY d.code ORDER BY d.code"
    )
    # CNC-1 from its first day with data; CNC-2 (no data) from 3 days before the 12th;
    # both through the 12th, every day complete.
    assert await cur.fetchall() == [("CNC-1", DAY, 11), ("CNC-2", date(2026, 3, 9), 4)]
    cur = await conn.execute(
        "SELECT count(*), min(hour), max(hour) FROM rollup_device_hour WHERE device_id = %s",
        (ids["CNC-1"],),
    )
    assert await cur.fetchone() == (
        10 * 24 + 9,
        from_ms(textbook.day_bounds()[0]),
        LATER + timedelta(hours=8),
    )


async def test_a_device_added_with_a_past_commissioning_date_gets_its_hours(conn: Conn) -> None:
    await seed(conn)
    await run_rollups(conn, until=LATER)
    cur = await conn.execute(
        "INSERT INTO device (enterprise_id, code, name, device_type, commissioned_on)"
        " SELECT id, 'LOOM-3', '织机 3', 'loom', '2026-03-05' FROM enterprise"
        " WHERE credit_code = %s RETURNING id",
        (ENT2,),
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.commit()
    await run_rollups(conn, until=LATER + timedelta(hours=1))
    loom3 = OeeScope(Level.DEVICE, "LOOM-3", ENT2)
    week = await oee_for_days(conn, loom3, date(2026, 3, 1), date(2026, 3, 11))
    # No calendar: every hour from the 5th (local) to the 12th is scheduled, all OFFLINE.
    assert week.result.components.scheduled_s == 7 * 86_400
    assert week.result.components.offline_s == 7 * 86_400
    cur = await conn.execute(
        "SELECT min(day) FROM rollup_device_day WHERE device_id = %s", (int(row[0]),)
    )
    assert await cur.fetchone() == (date(2026, 3, 5),)


async def _rows(conn: Conn) -> dict[str, list[tuple[object, ...]]]:
    out = {}
    for table, key in (("rollup_device_hour", "hour"), ("rollup_device_day", "day")):
        cur = await conn.execute(
            "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position)"
            " FROM information_schema.columns WHERE table_name = %s"
            " AND column_name <> 'computed_at'",
            (table,),
        )
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(f"SELECT {row[0]} FROM {table} ORDER BY device_id, {key}")
        out[table] = list(await cur.fetchall())
    return out


async def _agrees_with_a_computation_from_scratch(conn: Conn, until: datetime) -> None:
    """Every row a from-scratch run computes is in the incremental rollups, equal.

    The incremental rollups may reach further back (coverage never shrinks: the history
    horizon moves on every day, and a device keeps the days it was once given), but only
    with whole earlier days, never with other rows.
    """
    incremental = await _rows(conn)
    await conn.execute(
        "TRUNCATE rollup_device_hour, rollup_device_day, rollup_watermark, rollup_coverage,"
        " rollup_dirty"
    )
    await conn.commit()
    await run_rollups(conn, until=until)
    scratch = await _rows(conn)
    for table in scratch:
        fresh = {row[:2]: row for row in scratch[table]}
        first: dict[object, object] = {}
        for device, key in sorted(fresh):
            first.setdefault(device, key)
        for row in incremental[table]:
            if row[:2] in fresh:
                assert row == fresh.pop(row[:2])
            else:
                assert row[1] < first[row[0]], (table, row[:2])
        assert not fresh, (table, sorted(fresh)[:3])


async def _textbook_day(conn: Conn) -> dict[str, int]:
    ids = await seed(conn)
    await store_calendars(conn, [textbook.calendar(ENT)])
    await conn.commit()
    batch = historical_day(ids["CNC-1"])
    batch.states.insert(0, StateRow(ids["CNC-1"], textbook.local(0), S.PLANNED_STOP))
    await write(conn, batch)
    await run_rollups(conn, until=LATER)
    return ids


async def test_a_cycle_time_change_recomputes_the_devices_rollups(conn: Conn) -> None:
    await _textbook_day(conn)
    before = await oee_for_days(conn, CNC1, DAY, DAY)
    assert _rounded(before.result) == textbook.EXPECTED
    await conn.execute(
        "UPDATE device SET ideal_cycle_time_s = 0.5 WHERE code = 'CNC-1'"
    )  # as the ledger import or an API would
    await conn.commit()
    report = await run_rollups(conn, until=LATER + timedelta(hours=1))
    after = await oee_for_days(conn, CNC1, DAY, DAY)
    # P = 0.5 s × 19,271 / 22,380 s = 0.4305; OEE = 0.5 × 18,848 / 25,200 = 0.3740.
    assert _rounded(after.result) == {
        "availability": 0.8881, "performance": 0.4305, "quality": 0.978, "oee": 0.374,
    }  # fmt: skip
    assert report.dirty_marks == 1  # one range mark for the device, not one per hour
    start, end = textbook.day_bounds()
    [raw] = await oee_from_facts(conn, CNC1, from_ms(start), from_ms(end))
    assert raw.components == after.result.components
    await _agrees_with_a_computation_from_scratch(conn, LATER + timedelta(hours=1))


async def test_service_date_changes_add_and_remove_hours(conn: Conn) -> None:
    ids = await _textbook_day(conn)
    until = LATER + timedelta(hours=1)
    d = ids["CNC-1"]

    async def days() -> tuple[object, ...]:
        cur = await conn.execute(
            "SELECT min(day), max(day), count(*), sum(scheduled_s) FROM rollup_device_day"
            " WHERE device_id = %s",
            (d,),
        )
        row = await cur.fetchone()
        assert row is not None
        return tuple(row)

    # Commissioned on the 5th: the days before leave the rollups (the textbook day too).
    await conn.execute("UPDATE device SET commissioned_on = '2026-03-05' WHERE id = %s", (d,))
    await conn.commit()
    await run_rollups(conn, until=until)
    # The 5th to the 12th (the run stops at 01:00 on the 12th): 8 days, and the
    # textbook's 早班 (420 min) on Thu 5, Fri 6, Mon 9, Tue 10, Wed 11: 5 shifts.
    assert await days() == (date(2026, 3, 5), date(2026, 3, 12), 8, 5 * 25_200.0)
    # Moved back to 1 March: the 1st to the 4th come back, with the textbook day.
    await conn.execute("UPDATE device SET commissioned_on = '2026-03-01' WHERE id = %s", (d,))
    await conn.commit()
    await run_rollups(conn, until=until)
    assert await days() == (date(2026, 3, 1), date(2026, 3, 12), 12, 8 * 25_200.0)
    day = await oee_for_days(conn, CNC1, DAY, DAY)
    assert _rounded(day.result) == textbook.EXPECTED
    # Decommissioned from the 10th: its last day in service is the 9th.
    await conn.execute("UPDATE device SET decommissioned_on = '2026-03-10' WHERE id = %s", (d,))
    await conn.commit()
    await run_rollups(conn, until=until)
    assert await days() == (date(2026, 3, 1), date(2026, 3, 9), 9, 6 * 25_200.0)
    await _agrees_with_a_computation_from_scratch(conn, until)


async def test_a_time_zone_change_moves_local_days(conn: Conn) -> None:
    ids = await seed(conn)
    # LOOM-1 runs from 2026-03-02 22:00 to 03-03 02:00 Shanghai time (14:00-18:00 UTC).
    start = to_ms(datetime.fromisoformat("2026-03-02T14:00+00:00"))
    await write(conn, FactBatch(states=[
        StateRow(ids["LOOM-1"], start, S.RUNNING),
        StateRow(ids["LOOM-1"], start + 4 * 3_600_000, S.IDLE),
    ]))  # fmt: skip
    until = datetime.fromisoformat("2026-03-04T00:00+00:00")
    await run_rollups(conn, until=until)
    await conn.execute(
        "UPDATE enterprise SET time_zone = 'Asia/Urumqi' WHERE credit_code = %s", (ENT2,)
    )
    await conn.commit()
    await run_rollups(conn, until=until)
    cur = await conn.execute(
        "SELECT day, running_s FROM rollup_device_day WHERE device_id = %s AND running_s > 0",
        (ids["LOOM-1"],),
    )
    # In Urumqi (UTC+6) that is 20:00 to 24:00 on the 2nd: all four hours on the 2nd.
    assert await cur.fetchall() == [(DAY, 4 * 3600.0)]
    await _agrees_with_a_computation_from_scratch(conn, until)


async def test_flag_changes_follow_at_once_and_equal_a_computation_from_scratch(
    conn: Conn,
) -> None:
    await _textbook_day(conn)
    ids_line = OeeScope(Level.LINE, "L1", ENT)
    await conn.execute(
        "UPDATE device SET is_production_equipment = false, is_nc = false WHERE code = 'CNC-1'"
    )
    await conn.commit()
    report = await run_rollups(conn, until=LATER + timedelta(hours=1))
    # The flags are not part of any rollup row: the queries read the ledger as it is now.
    assert report.dirty_marks == 0
    line = await oee_for_days(conn, ids_line, DAY, DAY)
    assert [d.device for d in line.devices] == ["CNC-2"]
    start, end = textbook.day_bounds()
    raw = await oee_from_facts(conn, ids_line, from_ms(start), from_ms(end))
    assert [d.components for d in raw] == [d.components for d in line.devices]
    figures = await nc_rates(conn, DAY, GroupBy.ENTERPRISE)
    [nc] = [f for f in figures if f.group == ENT and f.method is Method.RATIO_OF_SUMS]
    assert (nc.numerator, nc.denominator) == (1, 2)  # CNC-2 of CNC-2 and PRESS-1
    await _agrees_with_a_computation_from_scratch(conn, LATER + timedelta(hours=1))


async def test_a_ledger_import_with_a_new_cycle_time_is_applied_by_a_plain_run(
    conn: Conn,
) -> None:
    from tests.kpi.seed import ledger
    from zhizao.storage.registry import store_ledger

    await _textbook_day(conn)
    book = ledger()
    book.devices = [
        d.model_copy(update={"ideal_cycle_time_s": 0.5}) if d.code == "CNC-1" else d
        for d in book.devices
    ]
    await store_ledger(conn, book)  # the import's own upserts, nothing rollup-specific
    await conn.commit()
    await run_rollups(conn, until=LATER + timedelta(hours=1))
    after = await oee_for_days(conn, CNC1, DAY, DAY)
    assert _rounded(after.result)["performance"] == 0.4305  # 0.5 s × 19,271 / 22,380 s
    start, end = textbook.day_bounds()
    [raw] = await oee_from_facts(conn, CNC1, from_ms(start), from_ms(end))
    assert raw.components == after.result.components
