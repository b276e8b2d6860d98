"""Incremental rollup jobs: facts → ``rollup_device_hour`` → ``rollup_device_day``.

What drives them (migration 0005): statement-level triggers on the fact tables mark
each (device, UTC hour) bucket that received rows in ``rollup_dirty`` and count the
points in ``device_hour_tally``, in the inserting transaction, from the rows that
were actually inserted, so a replayed batch marks and counts nothing. A run of
:func:`run_rollups`:

1. carries every device forward from the previous run's watermark to now: a state
   holds until the next change, so hours without any fact still need a row (RUNNING
   since 08:00 is RUNNING at 11:00; a device never heard from is OFFLINE);
2. keeps every device *covered* (migration 0007, ``rollup_coverage``): complete hour
   rows from the local midnight of its first day with data, or of the day
   ``history_days`` before today when that is earlier, never before its commissioning
   day. A new device, a commissioning date moved back, or facts of a day before the
   covered range (a historical import) extend the coverage back, computing every hour
   of it, also those without any fact (OFFLINE: a shift nobody reported is a coverage
   gap, not a shift without planned time);
3. recomputes the buckets marked dirty before the carried window: a metric, count or
   event dirties its own hour; a state or connectivity change also every hour up to the
   next change (its state lasts until then), and the hour before (a stop it shortened
   may have become a micro-stop); a ledger change (triggers on ``device`` and
   ``enterprise``, or :func:`store_calendars`) marks a range of hours, clipped here to
   the device's coverage;
4. sums the recomputed hours into the devices' local days.

So a plain run never needs ``since``: the cost is the hours that changed, the hours new
coverage adds (once), and the carried window.

Each chunk of devices is one transaction that consumes its dirty marks together
with writing the rollups, so a crash loses no mark. A run holds a session-level advisory
lock from start to end: :func:`run_rollups` waits for it (the CLI), :func:`try_run_rollups`
returns None when another run holds it (the rollup services, ``ingest.rollup_service``,
of which several may run: one computes, the others stand by). A run killed mid-way
releases the lock with its connection; its open chunk rolls back with its marks.
Upserts only touch rows whose values differ: rerunning changes nothing, not even
``computed_at``. Day rows are sums
of hour rows, which is exact for time zones at whole-hour offsets from UTC (every
zone in China); the job refuses others rather than mis-assign time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from time import perf_counter
from zoneinfo import ZoneInfo

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from zhizao.calendar import (
    Schedule,
    ShiftCalendar,
    from_ms,
    merge,
    scheduled_intervals,
    subtract,
    to_ms,
)
from zhizao.errors import InvalidValue, StorageError
from zhizao.intervals import HOUR_MS, Bucket, CountPoint, StatePoint, hour_edges, split
from zhizao.oee import OeeComponents
from zhizao.storage.connection import Conn
from zhizao.wire import StateClass

log = structlog.get_logger(__name__)

_LOCK_KEY = 0x7A68_726F_6C6C  # serialises rollup runs (two schedulers, a CLI backfill)
_EPOCH = "'epoch'::timestamptz + {} * interval '1 ms'"
FAR_PAST_MS = -62_135_596_800_000  # 0001-01-01
FAR_FUTURE_MS = 253_402_300_799_000  # 9999-12-31

DEFAULT_HISTORY_DAYS = 62
_HOUR_FLUSH = 20_000  # hour rows per upsert statement: bounds the job's memory

Progress = Callable[[int, int], None]


class RollupSettings(BaseSettings):
    """How the rollup job runs, wherever it runs (rollup service, ingest, demo, CLI)."""

    model_config = SettingsConfigDict(env_prefix="ZHIZAO_KPI_", extra="ignore")

    #: IDLE or UNPLANNED_STOP episodes shorter than this are micro-stops. Changing it
    #: needs a recompute of history (``zhizao rollup run --since ...``).
    micro_stop_s: float = Field(default=120.0, ge=0)
    #: Seconds between scheduled runs.
    interval_s: float = Field(default=60.0, gt=0)
    #: Devices per transaction.
    chunk_devices: int = Field(default=500, ge=1)
    #: How far back a device's rollups reach when it has no data that old: complete
    #: hours from the local day this many days before today (never before the device's
    #: commissioning day). 62 keeps the current and the previous calendar month whole.
    #: Facts of older days extend a device's rollups back to them regardless.
    history_days: int = Field(default=DEFAULT_HISTORY_DAYS, ge=0)


def rollup_settings(**overrides: object) -> RollupSettings:
    return RollupSettings(**overrides)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RollupReport:
    """What one run did."""

    since: datetime | None
    until: datetime
    devices: int
    device_hours: int
    device_days: int
    dirty_marks: int
    seconds: float

    @property
    def device_hours_per_s(self) -> float:
        return self.device_hours / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: int
    enterprise_id: int
    line_id: int | None
    ideal_cycle_time_s: float | None
    zone: ZoneInfo
    service_start_ms: int
    service_end_ms: int


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_midnight_ms(day: date, zone: ZoneInfo) -> int:
    return to_ms(datetime.combine(day, datetime.min.time(), tzinfo=zone))


def check_zone(name: str) -> ZoneInfo:
    """The zone, if every UTC offset it has used lately is a whole number of hours."""
    if not _whole_hours(name):
        raise InvalidValue(
            "time_zone", name, "rollups need a whole-hour UTC offset (local days of hours)"
        )
    return _zone(name)


@cache
def _whole_hours(name: str) -> bool:
    probe = datetime(2020, 1, 1, tzinfo=_zone(name))
    for month in range(0, 12 * 10, 3):
        offset = (probe + timedelta(days=30 * month)).utcoffset()
        if offset is not None and offset.total_seconds() % 3600:
            return False
    return True


async def device_infos(conn: Conn, ids: Sequence[int] | None) -> dict[int, DeviceInfo]:
    """What the job needs of each device; devices of zones it cannot serve are left out."""
    cur = await conn.execute(
        """
        SELECT d.id, d.enterprise_id, d.line_id, d.ideal_cycle_time_s, e.time_zone,
               d.commissioned_on, d.decommissioned_on
        FROM device d JOIN enterprise e ON e.id = d.enterprise_id
        WHERE %(all)s OR d.id = ANY(%(ids)s)
        ORDER BY d.id
        """,
        {"all": ids is None, "ids": list(ids or [])},
    )
    out: dict[int, DeviceInfo] = {}
    for pk, ent, line, ict, tz, comm, decomm in await cur.fetchall():
        try:
            zone = check_zone(str(tz))
        except InvalidValue as exc:
            # One enterprise in an unsupported zone must not stop everybody's rollups.
            log.warning("device skipped by rollups", device_id=pk, error=str(exc))
            continue
        out[int(pk)] = DeviceInfo(
            id=int(pk),
            enterprise_id=int(ent),
            line_id=None if line is None else int(line),
            ideal_cycle_time_s=None if ict is None else float(ict),
            zone=zone,
            service_start_ms=FAR_PAST_MS if comm is None else _local_midnight_ms(comm, zone),
            service_end_ms=FAR_FUTURE_MS if decomm is None else _local_midnight_ms(decomm, zone),
        )
    return out


async def load_stored_calendars(conn: Conn) -> dict[tuple[int, int | None], ShiftCalendar]:
    """Stored calendars by (enterprise id, line id or None)."""
    cur = await conn.execute("SELECT enterprise_id, line_id, definition FROM shift_calendar")
    return {
        (int(ent), None if line is None else int(line)): ShiftCalendar.model_validate(
            definition if isinstance(definition, dict) else json.loads(definition)
        )
        for ent, line, definition in await cur.fetchall()
    }


def calendar_of(
    calendars: dict[tuple[int, int | None], ShiftCalendar], info: DeviceInfo
) -> ShiftCalendar | None:
    if info.line_id is not None and (info.enterprise_id, info.line_id) in calendars:
        return calendars[(info.enterprise_id, info.line_id)]
    return calendars.get((info.enterprise_id, None))


async def store_calendars(
    conn: Conn, calendars: Iterable[ShiftCalendar], *, recompute_since: datetime | None = None
) -> int:
    """Insert or replace calendars; mark the affected devices' rollups for recomputation.

    The hour rollups of the enterprise's (or line's) devices at or after
    ``recompute_since`` (all of them when None) are marked dirty with one range mark
    per device, so the next run brings scheduled time in line with the new calendar.
    Returns how many stored.
    """
    stored = 0
    for cal in calendars:
        cur = await conn.execute(
            "SELECT id FROM enterprise WHERE credit_code = %s", (cal.enterprise,)
        )
        row = await cur.fetchone()
        if row is None:
            raise InvalidValue("enterprise", cal.enterprise, "is not in the registry")
        enterprise_id = int(row[0])
        line_id: int | None = None
        if cal.line is not None:
            cur = await conn.execute(
                "INSERT INTO line (enterprise_id, code, name) VALUES (%s, %s, %s)"
                " ON CONFLICT (enterprise_id, code) DO UPDATE SET code = excluded.code"
                " RETURNING id",
                (enterprise_id, cal.line, cal.line),
            )
            line_row = await cur.fetchone()
            line_id = None if line_row is None else int(line_row[0])
        await conn.execute(
            """
            INSERT INTO shift_calendar (enterprise_id, line_id, name, definition)
            VALUES (%s, %s, %s, %s::jsonb)
            ON CONFLICT (enterprise_id, coalesce(line_id, 0)) DO UPDATE
            SET name = excluded.name, definition = excluded.definition, updated_at = now()
            WHERE shift_calendar.definition IS DISTINCT FROM excluded.definition
            """,
            (enterprise_id, line_id, cal.name, cal.model_dump_json(by_alias=True)),
        )
        await _mark_calendar_devices(conn, enterprise_id, line_id, recompute_since)
        stored += 1
    return stored


async def _mark_calendar_devices(
    conn: Conn, enterprise_id: int, line_id: int | None, since: datetime | None
) -> None:
    # A line calendar concerns that line's devices; the enterprise calendar those
    # without a line calendar of their own (marking a few extra is harmless).
    await conn.execute(
        """
        INSERT INTO rollup_dirty (device_id, hour, state_changed, hour_end)
        SELECT d.id, coalesce(%(since)s::timestamptz, '-infinity'), false, 'infinity'
        FROM device d
        WHERE d.enterprise_id = %(ent)s AND (%(line)s::int IS NULL OR d.line_id = %(line)s)
        """,
        {"ent": enterprise_id, "line": line_id, "since": since},
    )


async def delete_calendar(
    conn: Conn, enterprise_id: int, line_id: int | None, *, recompute_since: datetime | None = None
) -> bool:
    """Remove the enterprise's (``line_id`` None) or a line's own calendar; mark the
    rollups it scheduled like :func:`store_calendars`. False if there was none."""
    cur = await conn.execute(
        "DELETE FROM shift_calendar"
        " WHERE enterprise_id = %s AND line_id IS NOT DISTINCT FROM %s::int RETURNING id",
        (enterprise_id, line_id),
    )
    if await cur.fetchone() is None:
        return False
    await _mark_calendar_devices(conn, enterprise_id, line_id, recompute_since)
    return True


# --- fact loading ---------------------------------------------------------------------

_RANGES = "unnest(%(ids)s::int4[], %(lo)s::int8[], %(hi)s::int8[]) AS r(device_id, lo, hi)"
_MS = "(extract(epoch FROM {}) * 1000)::int8"


@dataclass(slots=True)
class Facts:
    transitions: dict[int, list[tuple[int, int, StateClass]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    counts: dict[int, list[CountPoint]] = field(default_factory=lambda: defaultdict(list))
    tally: dict[tuple[int, int], tuple[int, int, int | None, int | None, int | None]] = field(
        default_factory=dict
    )
    online_hours: set[tuple[int, int]] = field(default_factory=set)


# Transitions, each with a rank: at one instant a loss of connectivity outranks a state.
_TRANSITIONS = f"""
    SELECT r.device_id, {_MS.format("s.time")}, CASE WHEN s.quality = 2 THEN 'OFFLINE'
        ELSE s.state::text END, 0
    FROM {_RANGES} JOIN state_change s
      ON s.device_id = r.device_id AND s.time >= {_EPOCH.format("r.lo")}
     AND s.time < {_EPOCH.format("r.hi")}
    UNION ALL
    SELECT r.device_id, {_MS.format("c.time")}, 'OFFLINE', 1
    FROM {_RANGES} JOIN device_connectivity c
      ON c.device_id = r.device_id AND NOT c.online AND c.time >= {_EPOCH.format("r.lo")}
     AND c.time < {_EPOCH.format("r.hi")}
    UNION ALL
    SELECT r.device_id, {_MS.format("es.time")}, 'OFFLINE', 2
    FROM {_RANGES} JOIN edge_device ed ON ed.device_id = r.device_id
    JOIN edge_status es ON es.edge_pk = ed.edge_pk AND NOT es.online
     AND es.time >= {_EPOCH.format("r.lo")} AND es.time < {_EPOCH.format("r.hi")}
"""  # noqa: S608 - module constants only; values are bound

# The change in effect at ``lo`` and the first one at or after ``hi``, per device:
# episodes that cross the edges of the range need their true length.
_EDGE_TRANSITIONS = f"""
    SELECT r.device_id, x.ms, x.state, x.rank
    FROM {_RANGES}
    CROSS JOIN LATERAL (
        (SELECT {_MS.format("s.time")} AS ms, CASE WHEN s.quality = 2 THEN 'OFFLINE'
                ELSE s.state::text END AS state, 0 AS rank
         FROM state_change s WHERE s.device_id = r.device_id AND s.time < {_EPOCH.format("r.lo")}
         ORDER BY s.time DESC LIMIT 1)
        UNION ALL
        (SELECT {_MS.format("s.time")}, s.state::text, 0
         FROM state_change s WHERE s.device_id = r.device_id AND s.time >= {_EPOCH.format("r.hi")}
         ORDER BY s.time LIMIT 1)
        UNION ALL
        (SELECT {_MS.format("c.time")}, 'OFFLINE', 1
         FROM device_connectivity c
         WHERE c.device_id = r.device_id AND NOT c.online AND c.time < {_EPOCH.format("r.lo")}
         ORDER BY c.time DESC LIMIT 1)
        UNION ALL
        (SELECT {_MS.format("es.time")}, 'OFFLINE', 2
         FROM edge_device ed JOIN edge_status es ON es.edge_pk = ed.edge_pk
         WHERE ed.device_id = r.device_id AND NOT es.online AND es.time < {_EPOCH.format("r.lo")}
         ORDER BY es.time DESC LIMIT 1)
        UNION ALL
        (SELECT {_MS.format("c.time")}, 'OFFLINE', 1
         FROM device_connectivity c
         WHERE c.device_id = r.device_id AND NOT c.online AND c.time >= {_EPOCH.format("r.hi")}
         ORDER BY c.time LIMIT 1)
    ) AS x
"""  # noqa: S608 - module constants only; values are bound

_COUNTS = f"""
    SELECT r.device_id, {_MS.format("date_bin('1 hour', p.time, 'epoch'::timestamptz)")},
           coalesce(sum(p.quantity) FILTER (WHERE p.counter = 0), 0)::int8,
           coalesce(sum(p.quantity) FILTER (WHERE p.counter = 1), 0)::int8
    FROM {_RANGES} JOIN production_count p
      ON p.device_id = r.device_id AND p.time >= {_EPOCH.format("r.lo")}
     AND p.time < {_EPOCH.format("r.hi")}
    GROUP BY 1, 2
"""  # noqa: S608 - module constants only; values are bound

_TALLY = f"""
    SELECT r.device_id, {_MS.format("t.hour")}, sum(t.points)::int8, sum(t.good_points)::int8,
           {_MS.format("min(t.first_seen)")}, {_MS.format("max(t.last_seen)")},
           {_MS.format("max(t.last_good)")}
    FROM {_RANGES} JOIN device_hour_tally t
      ON t.device_id = r.device_id AND t.hour >= {_EPOCH.format("r.lo")}
     AND t.hour < {_EPOCH.format("r.hi")}
    GROUP BY r.device_id, t.hour
"""  # noqa: S608 - module constants only; values are bound

_ONLINE = f"""
    SELECT DISTINCT r.device_id, {_MS.format("date_bin('1 hour', c.time, 'epoch'::timestamptz)")}
    FROM {_RANGES} JOIN device_connectivity c
      ON c.device_id = r.device_id AND c.online AND c.time >= {_EPOCH.format("r.lo")}
     AND c.time < {_EPOCH.format("r.hi")}
"""  # noqa: S608 - module constants only; values are bound


# Each insert statement appends its own tally rows; the job folds those of the hours it
# recomputes into one row per (device, hour), leaving single rows untouched.
_COMPACT_TALLY = f"""
    WITH many AS (
        SELECT t.device_id, t.hour FROM {_RANGES} JOIN device_hour_tally t
          ON t.device_id = r.device_id AND t.hour >= {_EPOCH.format("r.lo")}
         AND t.hour < {_EPOCH.format("r.hi")}
        GROUP BY t.device_id, t.hour HAVING count(*) > 1
    ), gone AS (
        DELETE FROM device_hour_tally t USING many
        WHERE t.device_id = many.device_id AND t.hour = many.hour
        RETURNING t.*
    )
    INSERT INTO device_hour_tally (device_id, hour, points, good_points, first_seen, last_seen,
                                   last_good)
    SELECT device_id, hour, sum(points), sum(good_points), min(first_seen), max(last_seen),
           max(last_good)
    FROM gone GROUP BY device_id, hour
"""  # noqa: S608 - module constants only; values are bound


async def compact_tally(conn: Conn, bounds: dict[int, tuple[int, int]]) -> None:
    ids = sorted(bounds)
    await conn.execute(
        _COMPACT_TALLY.encode(),
        {"ids": ids, "lo": [bounds[i][0] for i in ids], "hi": [bounds[i][1] for i in ids]},
    )


async def load_facts(conn: Conn, bounds: dict[int, tuple[int, int]]) -> Facts:
    ids = sorted(bounds)
    params = {
        "ids": ids,
        "lo": [bounds[i][0] for i in ids],
        "hi": [bounds[i][1] for i in ids],
    }
    facts = Facts()
    for query in (_TRANSITIONS, _EDGE_TRANSITIONS):
        cur = await conn.execute(query.encode(), params)
        for device, ms, state, rank in await cur.fetchall():
            facts.transitions[int(device)].append((int(ms), int(rank), StateClass(state)))
    cur = await conn.execute(_COUNTS.encode(), params)
    for device, ms, good, reject in await cur.fetchall():
        facts.counts[int(device)].append(CountPoint(int(ms), int(good), int(reject)))
    cur = await conn.execute(_TALLY.encode(), params)
    for device, ms, points, good_points, first, last, last_good in await cur.fetchall():
        facts.tally[(int(device), int(ms))] = (
            int(points),
            int(good_points),
            first,
            last,
            last_good,
        )
    cur = await conn.execute(_ONLINE.encode(), params)
    facts.online_hours = {(int(d), int(ms)) for d, ms in await cur.fetchall()}
    return facts


# --- the job --------------------------------------------------------------------------

_HOUR_COLUMNS = (
    "running_s", "idle_s", "setup_s", "unplanned_stop_s", "planned_stop_s", "offline_s",
    "good", "reject", "ideal_time_s", "points", "first_seen", "last_seen",
    "scheduled_s", "sched_running_s", "sched_idle_s", "sched_setup_s",
    "sched_unplanned_stop_s", "sched_planned_stop_s", "sched_offline_s",
    "overtime_running_s", "micro_idle_s", "micro_unplanned_s", "ideal_good_s",
    "unrated_running_s", "good_points", "online_reported", "last_good",
)  # fmt: skip
_HOUR_TYPES = (
    ["float8"] * 6 + ["int8", "int8", "float8", "int8", "int8", "int8"]
    + ["float8"] * 12 + ["int8", "bool", "int8"]
)  # fmt: skip
_MS_COLUMNS = {"first_seen", "last_seen", "last_good"}


def _hour_upsert() -> str:
    select = ", ".join(
        (_EPOCH.format(f"u.{c}") if c in _MS_COLUMNS else f"u.{c}") for c in _HOUR_COLUMNS
    )
    arrays = ", ".join(f"%s::{t}[]" for t in ("int4", "int8", *_HOUR_TYPES))
    names = ", ".join(("device_id", "hour_ms", *_HOUR_COLUMNS))
    cols = ", ".join(_HOUR_COLUMNS)
    return f"""
        INSERT INTO rollup_device_hour (device_id, hour, {cols})
        SELECT u.device_id, {_EPOCH.format("u.hour_ms")}, {select}
        FROM unnest({arrays}) AS u({names})
        ON CONFLICT (device_id, hour) DO UPDATE SET
            {", ".join(f"{c} = excluded.{c}" for c in _HOUR_COLUMNS)}, computed_at = now()
        WHERE ({", ".join(f"rollup_device_hour.{c}" for c in _HOUR_COLUMNS)})
            IS DISTINCT FROM ({", ".join(f"excluded.{c}" for c in _HOUR_COLUMNS)})
    """  # noqa: S608 - module constants only; values are bound


_HOUR_UPSERT = _hour_upsert()

_DAY_SUMS = (
    "running_s", "idle_s", "setup_s", "unplanned_stop_s", "planned_stop_s", "offline_s",
    "good", "reject", "ideal_time_s", "points", "good_points",
    "scheduled_s", "sched_running_s", "sched_idle_s", "sched_setup_s",
    "sched_unplanned_stop_s", "sched_planned_stop_s", "sched_offline_s",
    "overtime_running_s", "micro_idle_s", "micro_unplanned_s", "ideal_good_s",
    "unrated_running_s",
)  # fmt: skip
_DAY_COLUMNS = (*_DAY_SUMS, "online_reported", "first_seen", "last_seen", "last_good")


def _day_upsert() -> str:
    # Seconds are whole milliseconds: rounding the sums to them makes a day independent
    # of the order the hours are added in (float addition is not associative).
    sums = ", ".join(
        f"round(sum(h.{c})::numeric, 3)" if c.endswith("_s") else f"sum(h.{c})" for c in _DAY_SUMS
    )
    cols = ", ".join(_DAY_COLUMNS)
    return f"""
        WITH t AS (
            SELECT DISTINCT device_id, day FROM unnest(%(ids)s::int4[], %(days)s::date[])
                AS t(device_id, day)
        ), agg AS (
            SELECT t.device_id, t.day, {sums}, bool_or(h.online_reported), min(h.first_seen),
                   max(h.last_seen), max(h.last_good)
            FROM t JOIN device d ON d.id = t.device_id
            JOIN enterprise e ON e.id = d.enterprise_id
            JOIN rollup_device_hour h ON h.device_id = t.device_id
             AND h.hour >= (t.day::timestamp AT TIME ZONE e.time_zone)
             AND h.hour < ((t.day + 1)::timestamp AT TIME ZONE e.time_zone)
            GROUP BY t.device_id, t.day
        ), gone AS (
            DELETE FROM rollup_device_day r USING t
            WHERE r.device_id = t.device_id AND r.day = t.day
              AND NOT EXISTS (SELECT 1 FROM agg WHERE agg.device_id = t.device_id
                                                  AND agg.day = t.day)
        )
        INSERT INTO rollup_device_day (device_id, day, {cols})
        SELECT * FROM agg
        ON CONFLICT (device_id, day) DO UPDATE SET
            {", ".join(f"{c} = excluded.{c}" for c in _DAY_COLUMNS)}, computed_at = now()
        WHERE ({", ".join(f"rollup_device_day.{c}" for c in _DAY_COLUMNS)})
            IS DISTINCT FROM ({", ".join(f"excluded.{c}" for c in _DAY_COLUMNS)})
    """  # noqa: S608 - module constants only; values are bound


_DAY_UPSERT = _day_upsert()

_NEXT_CHANGE = """
    SELECT u.device_id, u.ms, (extract(epoch FROM least(
        (SELECT min(s.time) FROM state_change s
          WHERE s.device_id = u.device_id
            AND s.time >= 'epoch'::timestamptz + u.ms * interval '1 ms'),
        (SELECT min(c.time) FROM device_connectivity c
          WHERE c.device_id = u.device_id AND NOT c.online
            AND c.time >= 'epoch'::timestamptz + u.ms * interval '1 ms'),
        (SELECT min(es.time) FROM edge_device ed JOIN edge_status es ON es.edge_pk = ed.edge_pk
          WHERE ed.device_id = u.device_id AND NOT es.online
            AND es.time >= 'epoch'::timestamptz + u.ms * interval '1 ms')
    )) * 1000)::int8
    FROM unnest(%s::int4[], %s::int8[]) AS u(device_id, ms)
"""


def device_buckets(
    info: DeviceInfo,
    *,
    calendar: ShiftCalendar | None,
    transitions: Sequence[tuple[int, int, StateClass]],
    counts: Sequence[CountPoint],
    ranges: Sequence[tuple[int, int]],
    horizon_ms: int,
    micro_stop_ms: int,
) -> dict[int, Bucket]:
    """Hour buckets of one device over ``ranges`` (hour-aligned), within its service."""
    ordered = [StatePoint(ms, state) for ms, _, state in sorted(transitions, key=lambda t: t[:2])]
    out: dict[int, Bucket] = {}
    for lo, hi in ranges:
        a, b = max(lo, info.service_start_ms), min(hi, info.service_end_ms, horizon_ms)
        if a >= b:
            continue
        schedule = Schedule(scheduled_intervals(calendar, info.zone, a, b))
        out.update(
            split(
                ordered, counts, schedule, a, b,
                edges=hour_edges(a, b), horizon_ms=horizon_ms, micro_stop_ms=micro_stop_ms,
            )
        )  # fmt: skip
    return out


async def _process_chunk(
    conn: Conn,
    *,
    infos: dict[int, DeviceInfo],
    calendars: dict[tuple[int, int | None], ShiftCalendar],
    ranges: dict[int, list[tuple[int, int]]],
    horizon_ms: int,
    micro_stop_ms: int,
) -> tuple[int, int]:
    bounds = {d: (rs[0][0], rs[-1][1]) for d, rs in ranges.items() if rs}
    if not bounds:
        return 0, 0
    await compact_tally(conn, bounds)
    facts = await load_facts(conn, bounds)
    columns: list[list[object]] = [[] for _ in range(2 + len(_HOUR_COLUMNS))]
    touched_days: set[tuple[int, date]] = set()
    out_of_service: list[tuple[int, int, int]] = []
    hours = 0
    for device, device_ranges in ranges.items():
        info = infos.get(device)
        if info is None:
            continue  # deleted from the registry meanwhile
        for lo, hi in device_ranges:
            for s, e in subtract([(lo, hi)], [(info.service_start_ms, info.service_end_ms)]):
                out_of_service.append((device, s, e))
            day = from_ms(lo).astimezone(info.zone).date()
            last = from_ms(hi - 1).astimezone(info.zone).date()
            while day <= last:
                touched_days.add((device, day))
                day += timedelta(days=1)
        buckets = device_buckets(
            info,
            calendar=calendar_of(calendars, info),
            transitions=facts.transitions.get(device, []),
            counts=facts.counts.get(device, []),
            ranges=device_ranges,
            horizon_ms=horizon_ms,
            micro_stop_ms=micro_stop_ms,
        )
        for hour_ms, bucket in buckets.items():
            comp = OeeComponents.from_bucket(bucket, info.ideal_cycle_time_s)
            points, good_points, first_seen, last_seen, last_good = facts.tally.get(
                (device, hour_ms), (0, 0, None, None, None)
            )
            row = (
                device, hour_ms,
                bucket.running_ms / 1000, bucket.idle_ms / 1000, bucket.setup_ms / 1000,
                bucket.unplanned_stop_ms / 1000, bucket.planned_stop_ms / 1000,
                bucket.offline_ms / 1000, bucket.good, bucket.reject, comp.ideal_time_s,
                points, first_seen, last_seen,
                comp.scheduled_s, comp.running_s, comp.idle_s, comp.setup_s,
                comp.unplanned_stop_s, comp.planned_stop_s, comp.offline_s,
                comp.overtime_running_s, comp.micro_idle_s, comp.micro_unplanned_s,
                comp.ideal_good_s, comp.unrated_running_s, good_points,
                (device, hour_ms) in facts.online_hours, last_good,
            )  # fmt: skip
            for column, value in zip(columns, row, strict=True):
                column.append(value)
            hours += 1
        if len(columns[0]) >= _HOUR_FLUSH:
            await conn.execute(_HOUR_UPSERT.encode(), columns)
            columns = [[] for _ in columns]
    if out_of_service:
        await conn.execute(
            b"DELETE FROM rollup_device_hour h USING unnest(%s::int4[], %s::int8[], %s::int8[])"
            b" AS r(device_id, lo, hi) WHERE h.device_id = r.device_id"
            b" AND h.hour >= 'epoch'::timestamptz + r.lo * interval '1 ms'"
            b" AND h.hour < 'epoch'::timestamptz + r.hi * interval '1 ms'",
            [list(c) for c in zip(*out_of_service, strict=True)],
        )
    if columns[0]:
        await conn.execute(_HOUR_UPSERT.encode(), columns)
    if touched_days:
        days = sorted(touched_days)
        await conn.execute(
            _DAY_UPSERT.encode(), {"ids": [d for d, _ in days], "days": [day for _, day in days]}
        )
    return hours, len(touched_days)


def _floor_hour(ms: int) -> int:
    return ms - ms % HOUR_MS


async def _db_now_ms(conn: Conn) -> int:
    cur = await conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8")
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - SELECT without FROM returns a row
    return int(row[0])


@dataclass(slots=True)
class _Marks:
    """The dirty marks of a chunk of devices, consumed."""

    count: int = 0
    #: Hour ranges to recompute because facts arrived (per device).
    ranges: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    #: The earliest hour that received facts (per device).
    first_data: dict[int, int] = field(default_factory=dict)
    #: Ledger changes: ranges still to be clipped to the device's coverage.
    ledger: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))


async def _consume_marks(
    conn: Conn, device_ids: Sequence[int], before_ms: int, now_ms: int, micro_stop_ms: int
) -> _Marks:
    """Consume the dirty marks of these devices older than ``now``: what they ask for.

    Fact marks older than ``before`` (the carried window covers the rest) give hour
    ranges; every fact mark counts for the device's first data; range marks (ledger
    changes) are returned as they are, their open bounds closed far away.
    """
    cur = await conn.execute(
        f"""
        DELETE FROM rollup_dirty WHERE device_id = ANY(%s) AND hour < %s
        RETURNING device_id,
            {_MS.format(f"greatest(hour, {_EPOCH.format(FAR_PAST_MS)})")}, state_changed,
            -- least() skips NULL: a fact mark (no hour_end) must stay NULL.
            CASE WHEN hour_end IS NOT NULL
                THEN {_MS.format(f"least(hour_end, {_EPOCH.format(FAR_FUTURE_MS)})")} END
        """.encode(),  # noqa: S608 - module constants only; values are bound
        (list(device_ids), from_ms(now_ms)),
    )
    rows = [
        (int(d), int(ms), bool(s), None if e is None else int(e))
        for d, ms, s, e in await cur.fetchall()
    ]
    out = _Marks(count=len(rows))
    state_marks: list[tuple[int, int]] = []
    for device, ms, state, end in sorted(set(rows), key=lambda r: (r[0], r[1], r[2], r[3] or 0)):
        if end is not None:
            out.ledger[device].append((ms, end))
            continue
        out.first_data[device] = min(ms, out.first_data.get(device, ms))
        if state:
            if not state_marks or state_marks[-1] != (device, ms):
                state_marks.append((device, ms))
        elif ms < before_ms:  # inside the window every device is carried through anyway
            out.ranges[device].append((ms, ms + HOUR_MS))
    if state_marks:
        cur = await conn.execute(
            _NEXT_CHANGE.encode(),
            ([d for d, _ in state_marks], [ms + HOUR_MS for _, ms in state_marks]),
        )
        for device, ms, nxt in await cur.fetchall():
            hour = int(ms) - HOUR_MS
            # The stop a new change shortened may have become a micro-stop: one hour back.
            lo = _floor_hour(hour - micro_stop_ms)
            hi = now_ms if nxt is None else min(_floor_hour(int(nxt)) + HOUR_MS, now_ms)
            out.ranges[int(device)].append((lo, max(hi, hour + HOUR_MS)))
    return out


@dataclass(frozen=True, slots=True)
class Coverage:
    """The hours a device has complete rows for: from ``covered_from`` to the watermark."""

    covered_from_ms: int
    first_data_ms: int | None


async def _load_coverage(conn: Conn, device_ids: Sequence[int]) -> dict[int, Coverage]:
    cur = await conn.execute(
        f"""
        SELECT device_id, {_MS.format("covered_from")}, {_MS.format("first_data")}
        FROM rollup_coverage WHERE device_id = ANY(%s)
        """.encode(),  # noqa: S608 - module constants only; values are bound
        (list(device_ids),),
    )
    return {
        int(d): Coverage(int(c), None if f is None else int(f)) for d, c, f in await cur.fetchall()
    }


async def _first_data(conn: Conn, device_ids: Sequence[int]) -> dict[int, int]:
    """The earliest hour with facts of devices the job has not covered yet.

    The tally counts every point of the device (metrics, states, counts, events) and
    connectivity reports are the rest; both are one index probe per device.
    """
    if not device_ids:
        return {}
    cur = await conn.execute(
        f"""
        SELECT u.id, {
            _MS.format('''least(
            (SELECT min(t.hour) FROM device_hour_tally t WHERE t.device_id = u.id),
            (SELECT date_bin('1 hour', min(c.time), 'epoch'::timestamptz)
               FROM device_connectivity c WHERE c.device_id = u.id))''')
        }
        FROM unnest(%s::int4[]) AS u(id)
        """.encode(),  # noqa: S608 - module constants only; values are bound
        (list(device_ids),),
    )
    return {int(d): int(ms) for d, ms in await cur.fetchall() if ms is not None}


def coverage_start(
    info: DeviceInfo, first_data_ms: int | None, now_ms: int, history_days: int
) -> int:
    """Where a device's complete rollups begin: the local midnight of its first day with
    data or of the day ``history_days`` before today, whichever is earlier, but never
    before its commissioning day."""
    today = from_ms(now_ms).astimezone(info.zone).date()
    start = _local_midnight_ms(today - timedelta(days=history_days), info.zone)
    if first_data_ms is not None:
        first_day = from_ms(first_data_ms).astimezone(info.zone).date()
        start = min(start, _local_midnight_ms(first_day, info.zone))
    return max(info.service_start_ms, start)


async def _plan_chunk(
    conn: Conn,
    chunk: Sequence[int],
    infos: dict[int, DeviceInfo],
    *,
    start_ms: int,
    now_ms: int,
    backfill_ms: int | None,
    micro_stop_ms: int,
    history_days: int,
) -> tuple[dict[int, list[tuple[int, int]]], int]:
    """The hour ranges to compute for a chunk of devices; records their new coverage.

    Runs inside the chunk's transaction: the marks it consumes and the coverage it
    records commit together with the rollups computed from them.
    """
    marks = await _consume_marks(conn, chunk, start_ms, now_ms, micro_stop_ms)
    known = await _load_coverage(conn, chunk)
    probed = await _first_data(conn, [d for d in chunk if d in infos and d not in known])
    ranges: dict[int, list[tuple[int, int]]] = {}
    updates: list[tuple[int, int, int | None]] = []
    for device in chunk:
        wanted = [*marks.ranges.get(device, [])]
        info = infos.get(device)
        if info is None:  # deleted, or in a zone the job cannot serve (logged)
            if wanted:
                ranges[device] = merge(wanted)
            continue
        old = known.get(device)
        firsts = [
            ms
            for ms in (
                old.first_data_ms if old is not None else probed.get(device),
                marks.first_data.get(device),
            )
            if ms is not None
        ]
        first = min(firsts) if firsts else None
        target = coverage_start(info, first, now_ms, history_days)
        if old is None:
            wanted.append((target, now_ms))
            lower = target
        else:
            # Coverage starts at a local midnight; after a change of time zone, the
            # midnight of the new zone, so that no local day is left partial.
            day = from_ms(old.covered_from_ms).astimezone(info.zone).date()
            lower = min(target, _local_midnight_ms(day, info.zone))
            wanted.append((lower, old.covered_from_ms))
        # A ledger change concerns the hours the device has rows for or must have.
        wanted.extend((max(lo, lower), min(hi, now_ms)) for lo, hi in marks.ledger.get(device, []))
        if start_ms < now_ms:
            wanted.append((start_ms, now_ms))
        covered = lower if backfill_ms is None else min(lower, backfill_ms)
        # Hours before the service start were deleted by the ranges above.
        covered = max(covered, info.service_start_ms)
        if old is None or (covered, first) != (old.covered_from_ms, old.first_data_ms):
            updates.append((device, covered, first))
        merged = merge(wanted)
        if merged:
            ranges[device] = merged
    if updates:
        await conn.execute(
            f"""
            INSERT INTO rollup_coverage (device_id, covered_from, first_data)
            SELECT u.id, {_EPOCH.format("u.covered")},
                   {_EPOCH.format("u.first")}
            FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS u(id, covered, first)
            ON CONFLICT (device_id) DO UPDATE
            SET covered_from = excluded.covered_from, first_data = excluded.first_data
            """.encode(),  # noqa: S608 - module constants only; values are bound
            [list(c) for c in zip(*updates, strict=True)],
        )
    return ranges, marks.count


async def run_rollups(
    conn: Conn,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    micro_stop_s: float = 120.0,
    chunk_devices: int = 500,
    history_days: int = DEFAULT_HISTORY_DAYS,
    progress: Progress | None = None,
    device_ids: Sequence[int] | None = None,
) -> RollupReport:
    """Bring the hour and day rollups up to date; safe to call often and concurrently.

    Waits while another run (another rollup service, a CLI backfill) holds the rollup
    lock; :func:`try_run_rollups` returns at once instead.

    A plain run carries devices forward from the previous run, extends each device's
    coverage back to its first day with data or commissioning (at most ``history_days``
    before today for a device without older data) and recomputes what was marked dirty
    (late facts, ledger changes, calendars). ``since`` recomputes every device from
    that instant as well (after the micro-stop threshold changed). ``until`` replaces
    the database clock (tests, replays of history). ``progress(done, total)`` is called
    per chunk of devices. ``device_ids`` restricts a run to some devices (the watermark
    is then left alone, since the others were not carried forward). Commits per chunk:
    call it on a connection without an open transaction.
    """
    report = await _run_rollups(
        conn,
        wait=True,
        since=since,
        until=until,
        micro_stop_s=micro_stop_s,
        chunk_devices=chunk_devices,
        history_days=history_days,
        progress=progress,
        device_ids=device_ids,
    )
    if report is None:  # a waiting run always gets the lock
        raise StorageError("the rollup lock was not taken")
    return report


async def try_run_rollups(
    conn: Conn,
    *,
    until: datetime | None = None,
    micro_stop_s: float = 120.0,
    chunk_devices: int = 500,
    history_days: int = DEFAULT_HISTORY_DAYS,
    locked: Callable[[], None] | None = None,
) -> RollupReport | None:
    """Like :func:`run_rollups`, but None at once when another run holds the lock.

    For the rollup services: of several running at once (two hosts), one computes and
    the others stand by until its run ends, instead of each holding a connection
    blocked on the lock. ``locked`` is called once the lock is taken (the service's
    health then says it is computing).
    """
    return await _run_rollups(
        conn,
        wait=False,
        since=None,
        until=until,
        micro_stop_s=micro_stop_s,
        chunk_devices=chunk_devices,
        history_days=history_days,
        progress=None,
        device_ids=None,
        locked=locked,
    )


async def _take_lock(conn: Conn, *, wait: bool) -> bool:
    """The rollup lock: a session lock, held across the run's many chunk transactions.

    A crashed run's lock goes with its connection, and the marks of its uncommitted
    chunk stay. False when ``wait`` is off and another run holds it.
    """
    if wait:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        taken = True
    else:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,))
        row = await cur.fetchone()
        taken = row is not None and bool(row[0])
    await conn.commit()
    return taken


async def _run_rollups(
    conn: Conn,
    *,
    wait: bool,
    since: datetime | None,
    until: datetime | None,
    micro_stop_s: float,
    chunk_devices: int,
    history_days: int,
    progress: Progress | None,
    device_ids: Sequence[int] | None,
    locked: Callable[[], None] | None = None,
) -> RollupReport | None:
    started = perf_counter()
    micro_ms = round(micro_stop_s * 1000)
    if not await _take_lock(conn, wait=wait):
        return None
    if locked is not None:
        locked()
    try:
        now_ms = to_ms(until) if until is not None else await _db_now_ms(conn)
        cur = await conn.execute(
            "SELECT (extract(epoch FROM computed_until) * 1000)::int8 FROM rollup_watermark"
        )
        row = await cur.fetchone()
        watermark = None if row is None else int(row[0])
        backfill_ms = None if since is None else _floor_hour(to_ms(since))
        if backfill_ms is not None:
            start_ms = backfill_ms
        elif watermark is not None:
            start_ms = _floor_hour(min(watermark, now_ms) - micro_ms)
        else:
            start_ms = now_ms  # nothing to carry: every device's coverage is computed whole
        infos = await device_infos(conn, device_ids)
        if device_ids is None:
            cur = await conn.execute("SELECT DISTINCT device_id FROM rollup_dirty")
            devices = sorted(set(infos) | {int(r[0]) for r in await cur.fetchall()})
        else:
            devices = sorted(set(device_ids))
        calendars = await load_stored_calendars(conn)
        await conn.commit()
        total_hours = total_days = total_marks = 0
        for offset in range(0, len(devices), chunk_devices):
            chunk = devices[offset : offset + chunk_devices]
            async with conn.transaction():
                ranges, marks = await _plan_chunk(
                    conn,
                    chunk,
                    infos,
                    start_ms=start_ms,
                    now_ms=now_ms,
                    backfill_ms=backfill_ms,
                    micro_stop_ms=micro_ms,
                    history_days=history_days,
                )
                hours, days = await _process_chunk(
                    conn,
                    infos=infos,
                    calendars=calendars,
                    ranges=ranges,
                    horizon_ms=now_ms,
                    micro_stop_ms=micro_ms,
                )
            total_hours += hours
            total_days += days
            total_marks += marks
            if progress is not None:
                progress(min(offset + chunk_devices, len(devices)), len(devices))
        if device_ids is None:  # a partial backfill does not carry the others forward
            async with conn.transaction():
                await conn.execute(
                    """
                    INSERT INTO rollup_watermark (computed_until) VALUES (%(t)s)
                    ON CONFLICT (singleton) DO UPDATE SET computed_until = %(t)s, updated_at = now()
                    WHERE rollup_watermark.computed_until < %(t)s
                    """,
                    {"t": from_ms(now_ms)},
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        await conn.commit()
    return RollupReport(
        since=since,
        until=from_ms(now_ms),
        devices=len(devices),
        device_hours=total_hours,
        device_days=total_days,
        dirty_marks=total_marks,
        seconds=perf_counter() - started,
    )
