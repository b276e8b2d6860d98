"""Raw telemetry queries: latest values, series, state timelines, counts, connectivity,
edge status and sequence gaps (the API's telemetry routes, DESIGN §8 "raw").

Every query composes the kernel's scope fragment at ``Access.RAW``
(:meth:`zhizao.access.Visibility.enterprise_filter`): the lookups that turn natural
keys (credit code, device code, edge id) into ids, and again each data query, which
reads only rows of a device or edge that passes the fragment. An object outside the
caller's scope is therefore absent (``None``), like a missing one. All parameters
are named, so the fragment's ``_vis_*`` parameters compose with the query's own.

Query shapes, each reading a primary key as a range:

* series: one aggregate per bucket (``generate_series`` of the buckets from
  ``date_bin`` of the range start, then a ``LATERAL`` min/max/avg/count over
  ``metric_point``). Each bucket is an index range scan of (device, metric, time), and
  nothing is sorted: a ``GROUP BY date_bin(...)`` over the whole range sorts every
  point of it (the planner cannot know that ``date_bin`` keeps the index order), which
  spills to disk for a week of 1 Hz data (docs/api.md, "Telemetry").
  JIT is off for that statement: the planner's cost estimate for thousands of small
  scans crosses ``jit_above_cost`` and compiling took longer than the query;
* latest values: a recursive skip scan over (device, metric) of the primary key,
  then one backward index probe per metric, so the cost follows the number of
  metrics a device has, not the number of its points or of the platform's names;
* state timeline, connectivity, edge status: the row in force at the range start
  (one backward probe), then the rows inside the range. The state timeline is made of
  the same transitions the KPI engine splits (states, connectivity losses, edge
  deaths; docs/kpi.md §1), so its seconds per state are the ones OEE counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import sql

from zhizao.access import Access, Visibility
from zhizao.storage.connection import Conn
from zhizao.telemetry import BucketPlan
from zhizao.wire import Quality, StateClass

QUALITIES: dict[int, Quality] = {0: Quality.GOOD, 1: Quality.UNCERTAIN, 2: Quality.BAD}
_BAD = 2
#: A bucket width as an interval of seconds only (``86400 s``, not ``1 day``, whose
#: length would follow the session's time zone across a daylight-saving change).
_WIDTH = sql.SQL("(%(width_s)s * interval '1 second')")


# --- objects found through the scope -------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnterpriseRef:
    id: int
    credit_code: str
    time_zone: str


@dataclass(frozen=True, slots=True)
class DeviceRef:
    id: int
    code: str
    name: str
    line_code: str | None
    enterprise: EnterpriseRef


@dataclass(frozen=True, slots=True)
class EdgeRef:
    pk: int
    edge_id: str
    name: str | None
    enterprise: EnterpriseRef


def _scope(vis: Visibility) -> tuple[sql.Composable, dict[str, Any]]:
    return vis.enterprise_filter("e", Access.RAW)


def _device_in_scope(vis: Visibility) -> tuple[sql.Composable, dict[str, Any]]:
    """``SELECT d.id`` of the device ``%(device_id)s`` if it is in scope (a CTE body)."""
    scope, params = _scope(vis)
    query = sql.SQL(
        "SELECT d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
        " WHERE d.id = %(device_id)s AND {}"
    ).format(scope)
    return query, params


def _edge_in_scope(vis: Visibility) -> tuple[sql.Composable, dict[str, Any]]:
    scope, params = _scope(vis)
    query = sql.SQL(
        "SELECT g.id FROM edge_gateway g JOIN enterprise e ON e.id = g.enterprise_id"
        " WHERE g.id = %(edge_pk)s AND {}"
    ).format(scope)
    return query, params


async def find_enterprise(conn: Conn, vis: Visibility, credit_code: str) -> EnterpriseRef | None:
    scope, params = _scope(vis)
    cur = await conn.execute(
        sql.SQL(
            "SELECT e.id, e.credit_code, e.time_zone FROM enterprise e"
            " WHERE e.credit_code = %(credit)s AND {}"
        ).format(scope),
        {**params, "credit": credit_code},
    )
    row = await cur.fetchone()
    return None if row is None else EnterpriseRef(int(row[0]), str(row[1]), str(row[2]))


async def find_device(conn: Conn, vis: Visibility, credit_code: str, code: str) -> DeviceRef | None:
    scope, params = _scope(vis)
    cur = await conn.execute(
        sql.SQL(
            "SELECT e.id, e.credit_code, e.time_zone, d.id, d.code, d.name, l.code"
            " FROM enterprise e JOIN device d ON d.enterprise_id = e.id"
            " LEFT JOIN line l ON l.id = d.line_id"
            " WHERE e.credit_code = %(credit)s AND d.code = %(code)s AND {}"
        ).format(scope),
        {**params, "credit": credit_code, "code": code},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    ent = EnterpriseRef(int(row[0]), str(row[1]), str(row[2]))
    return DeviceRef(int(row[3]), str(row[4]), str(row[5]), row[6], ent)


async def find_edge(conn: Conn, vis: Visibility, credit_code: str, edge_id: str) -> EdgeRef | None:
    scope, params = _scope(vis)
    cur = await conn.execute(
        sql.SQL(
            "SELECT e.id, e.credit_code, e.time_zone, g.id, g.edge_id, g.name"
            " FROM enterprise e JOIN edge_gateway g ON g.enterprise_id = e.id"
            " WHERE e.credit_code = %(credit)s AND g.edge_id = %(edge_id)s AND {}"
        ).format(scope),
        {**params, "credit": credit_code, "edge_id": edge_id},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    ent = EnterpriseRef(int(row[0]), str(row[1]), str(row[2]))
    return EdgeRef(int(row[3]), str(row[4]), row[5], ent)


async def db_now(conn: Conn) -> datetime:
    """The database's transaction time: "now" for everything one request reads."""
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - SELECT now() returns a row
    value: datetime = row[0]
    return value


# --- latest values -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LatestValue:
    metric: str
    time: datetime
    value: float
    quality: Quality


async def latest_values(
    conn: Conn, vis: Visibility, device_ids: Sequence[int], metrics: Sequence[str] | None = None
) -> dict[int, list[LatestValue]]:
    """The newest point of every metric of these devices (or of the named metrics),
    by device id, metrics in name order. Devices out of scope give nothing."""
    if not device_ids:
        return {}
    scope, params = _scope(vis)
    dev = sql.SQL(
        "dev AS (SELECT d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
        " WHERE d.id = ANY(%(device_ids)s) AND {})"
    ).format(scope)
    if metrics is None:
        # Recursive skip scan: the next metric id of the device after the last one.
        pairs = sql.SQL(
            """
            pair AS (
                SELECT dev.id AS device_id, m.metric_id FROM dev CROSS JOIN LATERAL (
                    WITH RECURSIVE m(metric_id) AS (
                        (SELECT p.metric_id FROM metric_point p WHERE p.device_id = dev.id
                         ORDER BY p.metric_id LIMIT 1)
                        UNION ALL
                        SELECT (SELECT p.metric_id FROM metric_point p
                                WHERE p.device_id = dev.id AND p.metric_id > m.metric_id
                                ORDER BY p.metric_id LIMIT 1)
                        FROM m WHERE m.metric_id IS NOT NULL
                    )
                    SELECT m.metric_id FROM m WHERE m.metric_id IS NOT NULL
                ) m
            )"""
        )
    else:
        pairs = sql.SQL(
            "pair AS (SELECT dev.id AS device_id, n.id AS metric_id FROM dev"
            " CROSS JOIN metric_name n WHERE n.name = ANY(%(metrics)s))"
        )
    query = sql.SQL(
        """
        WITH {dev}, {pairs}
        SELECT pair.device_id, n.name, x.time, x.value, x.quality
        FROM pair JOIN metric_name n ON n.id = pair.metric_id
        CROSS JOIN LATERAL (
            SELECT p.time, p.value, p.quality FROM metric_point p
            WHERE p.device_id = pair.device_id AND p.metric_id = pair.metric_id
            ORDER BY p.time DESC LIMIT 1
        ) x
        ORDER BY pair.device_id, n.name
        """
    ).format(dev=dev, pairs=pairs)
    cur = await conn.execute(
        query, {**params, "device_ids": list(device_ids), "metrics": list(metrics or ())}
    )
    out: dict[int, list[LatestValue]] = {}
    for device_id, name, time, value, quality in await cur.fetchall():
        out.setdefault(int(device_id), []).append(
            LatestValue(str(name), time, float(value), QUALITIES[int(quality)])
        )
    return out


@dataclass(frozen=True, slots=True)
class DevicePage:
    total: int
    devices: list[DeviceRef]


async def enterprise_devices(
    conn: Conn,
    vis: Visibility,
    enterprise: EnterpriseRef,
    *,
    line: str | None,
    limit: int,
    offset: int,
) -> DevicePage:
    """One page of an enterprise's devices (of one line), by code, with the total."""
    scope, params = _scope(vis)
    cur = await conn.execute(
        sql.SQL(
            """
            SELECT d.id, d.code, d.name, l.code, count(*) OVER ()
            FROM device d JOIN enterprise e ON e.id = d.enterprise_id
            LEFT JOIN line l ON l.id = d.line_id
            WHERE e.id = %(ent)s AND (%(line)s::text IS NULL OR l.code = %(line)s) AND {}
            ORDER BY d.code LIMIT %(limit)s OFFSET %(offset)s
            """
        ).format(scope),
        {**params, "ent": enterprise.id, "line": line, "limit": limit, "offset": offset},
    )
    rows = await cur.fetchall()
    total = int(rows[0][4]) if rows else 0
    if not rows and offset > 0:
        # Past the last page: the total still answers.
        cur = await conn.execute(
            sql.SQL(
                "SELECT count(*) FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
                " LEFT JOIN line l ON l.id = d.line_id"
                " WHERE e.id = %(ent)s AND (%(line)s::text IS NULL OR l.code = %(line)s) AND {}"
            ).format(scope),
            {**params, "ent": enterprise.id, "line": line},
        )
        row = await cur.fetchone()
        total = int(row[0]) if row else 0
    devices = [DeviceRef(int(r[0]), str(r[1]), str(r[2]), r[3], enterprise) for r in rows]
    return DevicePage(total, devices)


# --- series --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesBucket:
    start: datetime
    min: float
    max: float
    avg: float
    count: int


def series_query(
    vis: Visibility,
    device: DeviceRef,
    metric: str,
    *,
    start: datetime,
    end: datetime,
    plan: BucketPlan,
    include_bad: bool = False,
) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement :func:`metric_series` runs, and its parameters (for EXPLAIN)."""
    dev, params = _device_in_scope(vis)
    query = sql.SQL(
        """
        WITH dev AS ({dev}),
        m AS (SELECT n.id FROM metric_name n WHERE n.name = %(metric)s),
        b AS (
            SELECT date_bin({width}, %(start)s, %(origin)s) + i * {width} AS start
            FROM generate_series(0, %(count)s - 1) AS i
        )
        SELECT b.start, a.lo, a.hi, a.mean, a.n
        FROM b CROSS JOIN LATERAL (
            SELECT min(p.value) AS lo, max(p.value) AS hi, avg(p.value) AS mean, count(*) AS n
            FROM metric_point p
            WHERE p.device_id = (SELECT id FROM dev) AND p.metric_id = (SELECT id FROM m)
              AND p.time >= greatest(b.start, %(start)s)
              AND p.time < least(b.start + {width}, %(end)s)
              AND (%(include_bad)s OR p.quality < %(bad)s)
        ) a
        WHERE a.n > 0
        ORDER BY b.start
        """
    ).format(dev=dev, width=_WIDTH)
    values = {
        **params,
        "device_id": device.id,
        "metric": metric,
        "start": start,
        "end": end,
        "origin": plan.origin,
        "width_s": plan.width_s,
        "count": plan.count,
        "include_bad": include_bad,
        "bad": _BAD,
    }
    return query, values


async def metric_series(
    conn: Conn,
    vis: Visibility,
    device: DeviceRef,
    metric: str,
    *,
    start: datetime,
    end: datetime,
    plan: BucketPlan,
    include_bad: bool = False,
) -> list[SeriesBucket]:
    """min, max, avg and count per bucket of [start, end); empty buckets are absent, and
    so a metric the device never had gives no buckets (like a name nobody uses: the
    answer never tells whether another enterprise's devices use a name).

    Points of bad quality (OPC UA "bad": the value is not usable) are left out
    unless ``include_bad``.
    """
    query, values = series_query(
        vis, device, metric, start=start, end=end, plan=plan, include_bad=include_bad
    )
    # A savepoint inside the request's transaction (or a transaction of its own):
    # the setting ends with the enclosing transaction either way.
    async with conn.transaction():
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.execute(query, values)
        rows = await cur.fetchall()
    return [SeriesBucket(r[0], float(r[1]), float(r[2]), float(r[3]), int(r[4])) for r in rows]


# --- state timeline ------------------------------------------------------------------


#: Why an interval has its state: a state the device reported, a connectivity loss
#: its edge reported, the death of its edge, or nothing known yet.
StateSource = Literal["state", "connectivity", "edge", "none"]


@dataclass(frozen=True, slots=True)
class StateInterval:
    start: datetime
    end: datetime
    #: When the transition happened (before ``start`` for the one in force at start).
    since: datetime | None
    state: StateClass
    source: StateSource
    reason: str | None
    raw: str | None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class StateTimeline:
    start: datetime
    end: datetime
    intervals: list[StateInterval]
    #: Seconds per state over the whole range, also when the list is cut.
    totals: dict[StateClass, float]
    truncated: bool


# The transitions of the KPI engine (docs/kpi.md §1, zhizao.storage.rollups): a state
# (OFFLINE if its quality is bad), a connectivity loss and the death of one of the
# device's edges, ranked so that at one instant a loss outranks a state. An online
# event ends nothing; the next state does. Before the first transition: OFFLINE.
_TRANSITIONS = """
    (SELECT s.time, 0 AS rank,
            CASE WHEN s.quality = 2 THEN 'OFFLINE' ELSE s.state::text END AS state,
            'state' AS source, s.reason, s.raw
     FROM state_change s WHERE s.device_id = (SELECT id FROM dev) AND s.time <= %(start)s
     ORDER BY s.time DESC LIMIT 1)
    UNION ALL
    (SELECT c.time, 1, 'OFFLINE', 'connectivity', c.reason, NULL
     FROM device_connectivity c
     WHERE c.device_id = (SELECT id FROM dev) AND NOT c.online AND c.time <= %(start)s
     ORDER BY c.time DESC LIMIT 1)
    UNION ALL
    (SELECT es.time, 2, 'OFFLINE', 'edge', es.reason, NULL
     FROM edge_device ed JOIN edge_status es ON es.edge_pk = ed.edge_pk
     WHERE ed.device_id = (SELECT id FROM dev) AND NOT es.online AND es.time <= %(start)s
     ORDER BY es.time DESC LIMIT 1)
    UNION ALL
    SELECT s.time, 0, CASE WHEN s.quality = 2 THEN 'OFFLINE' ELSE s.state::text END,
           'state', s.reason, s.raw
    FROM state_change s WHERE s.device_id = (SELECT id FROM dev)
      AND s.time > %(start)s AND s.time < %(end)s
    UNION ALL
    SELECT c.time, 1, 'OFFLINE', 'connectivity', c.reason, NULL
    FROM device_connectivity c WHERE c.device_id = (SELECT id FROM dev) AND NOT c.online
      AND c.time > %(start)s AND c.time < %(end)s
    UNION ALL
    SELECT es.time, 2, 'OFFLINE', 'edge', es.reason, NULL
    FROM edge_device ed JOIN edge_status es ON es.edge_pk = ed.edge_pk
    WHERE ed.device_id = (SELECT id FROM dev) AND NOT es.online
      AND es.time > %(start)s AND es.time < %(end)s
"""


async def state_timeline(
    conn: Conn,
    vis: Visibility,
    device: DeviceRef,
    *,
    start: datetime,
    end: datetime,
    limit: int,
) -> StateTimeline:
    """The device's state over [start, end) as the KPI engine sees it, in intervals
    clipped to the range, the one in force at ``start`` first; ``end`` is cut at the
    database's now (no state is known for the future)."""
    end = max(start, min(end, await db_now(conn)))
    dev, params = _device_in_scope(vis)
    intervals_cte = sql.SQL(
        """
        WITH dev AS ({dev}),
        tr AS ({transitions}),
        at AS (SELECT DISTINCT ON (tr.time) tr.* FROM tr ORDER BY tr.time, tr.rank DESC),
        ch AS (
            SELECT at.* FROM at
            WHERE at.time > %(start)s
               OR at.time = (SELECT max(a.time) FROM at a WHERE a.time <= %(start)s)
        ),
        known AS (
            SELECT greatest(ch.time, %(start)s) AS t0,
                   coalesce(lead(ch.time) OVER (ORDER BY ch.time), %(end)s) AS t1,
                   ch.time AS since, ch.state, ch.source, ch.reason, ch.raw
            FROM ch
        ),
        iv AS (
            SELECT * FROM known WHERE known.t1 > known.t0
            UNION ALL
            SELECT %(start)s, coalesce(min(known.t0), %(end)s), NULL, 'OFFLINE', 'none',
                   NULL, NULL
            FROM known HAVING coalesce(min(known.t0), %(end)s) > %(start)s
        )
        """
    ).format(dev=dev, transitions=sql.SQL(_TRANSITIONS))
    values = {**params, "device_id": device.id, "start": start, "end": end, "limit": limit + 1}
    cur = await conn.execute(
        intervals_cte + sql.SQL("SELECT * FROM iv ORDER BY t0 LIMIT %(limit)s"), values
    )
    rows = await cur.fetchall()
    cur = await conn.execute(
        intervals_cte
        + sql.SQL("SELECT state, sum(extract(epoch FROM t1 - t0))::float8 FROM iv GROUP BY state"),
        values,
    )
    totals = {StateClass(state): float(seconds) for state, seconds in await cur.fetchall()}
    intervals = [StateInterval(r[0], r[1], r[2], StateClass(r[3]), r[4], r[5], r[6]) for r in rows]
    return StateTimeline(start, end, intervals[:limit], totals, len(intervals) > limit)


# --- production counts ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CountBucket:
    start: datetime
    good: int
    reject: int


async def production_counts(
    conn: Conn,
    vis: Visibility,
    device: DeviceRef,
    *,
    start: datetime,
    end: datetime,
    plan: BucketPlan,
) -> list[CountBucket]:
    """Good and reject parts per bucket of [start, end); buckets without parts are absent."""
    dev, params = _device_in_scope(vis)
    cur = await conn.execute(
        sql.SQL(
            """
            WITH dev AS ({dev})
            SELECT date_bin({width}, c.time, %(origin)s) AS bucket,
                   coalesce(sum(c.quantity) FILTER (WHERE c.counter = 0), 0)::int8,
                   coalesce(sum(c.quantity) FILTER (WHERE c.counter = 1), 0)::int8
            FROM production_count c
            WHERE c.device_id = (SELECT id FROM dev) AND c.counter IN (0, 1)
              AND c.time >= %(start)s AND c.time < %(end)s
            GROUP BY bucket ORDER BY bucket
            """
        ).format(dev=dev, width=_WIDTH),
        {
            **params,
            "device_id": device.id,
            "start": start,
            "end": end,
            "origin": plan.origin,
            "width_s": plan.width_s,
        },
    )
    return [CountBucket(r[0], int(r[1]), int(r[2])) for r in await cur.fetchall()]


# --- connectivity --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectivityEvent:
    time: datetime
    online: bool
    reason: str | None
    edge_id: str | None


@dataclass(frozen=True, slots=True)
class ConnectivityHistory:
    at_start: ConnectivityEvent | None
    current: ConnectivityEvent | None
    events: list[ConnectivityEvent]
    truncated: bool


async def connectivity_history(
    conn: Conn,
    vis: Visibility,
    device: DeviceRef,
    *,
    start: datetime,
    end: datetime,
    limit: int,
) -> ConnectivityHistory:
    """Online/offline events of [start, end), the one in force at ``start`` and the
    device's latest (its current state)."""
    dev, params = _device_in_scope(vis)
    cur = await conn.execute(
        sql.SQL(
            """
            WITH dev AS ({dev}),
            picked AS (
                (SELECT 0 AS part, c.* FROM device_connectivity c
                 WHERE c.device_id = (SELECT id FROM dev) AND c.time < %(start)s
                 ORDER BY c.time DESC LIMIT 1)
                UNION ALL
                (SELECT 1, c.* FROM device_connectivity c
                 WHERE c.device_id = (SELECT id FROM dev)
                 ORDER BY c.time DESC LIMIT 1)
                UNION ALL
                (SELECT 2, c.* FROM device_connectivity c
                 WHERE c.device_id = (SELECT id FROM dev)
                   AND c.time >= %(start)s AND c.time < %(end)s
                 ORDER BY c.time LIMIT %(limit)s)
            )
            SELECT p.part, p.time, p.online, p.reason, g.edge_id
            FROM picked p LEFT JOIN edge_gateway g ON g.id = p.edge_pk
            ORDER BY p.part, p.time
            """
        ).format(dev=dev),
        {**params, "device_id": device.id, "start": start, "end": end, "limit": limit + 1},
    )
    at_start: ConnectivityEvent | None = None
    current: ConnectivityEvent | None = None
    events: list[ConnectivityEvent] = []
    for part, time, online, reason, edge_id in await cur.fetchall():
        event = ConnectivityEvent(time, bool(online), reason, edge_id)
        if part == 0:
            at_start = event
        elif part == 1:
            current = event
        else:
            events.append(event)
    return ConnectivityHistory(at_start, current, events[:limit], len(events) > limit)


# --- edges ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeStatusRecord:
    time: datetime
    online: bool
    reason: str | None
    last_seq: int | None
    software: str | None


@dataclass(frozen=True, slots=True)
class EdgeStatusReport:
    current: EdgeStatusRecord | None
    #: The software of the edge's last birth (or Will) that named one.
    software: str | None
    #: When ingest last stored a data message of the edge, and its highest sequence.
    last_message_at: datetime | None
    high_seq: int | None
    messages: int
    history: list[EdgeStatusRecord]
    truncated: bool

    @property
    def last_seen(self) -> datetime | None:
        seen = [t for t in (self.last_message_at, self.current and self.current.time) if t]
        return max(seen) if seen else None


async def edge_status(
    conn: Conn,
    vis: Visibility,
    edge: EdgeRef,
    *,
    start: datetime,
    end: datetime,
    limit: int,
) -> EdgeStatusReport:
    """Births and deaths of [start, end), the latest one, the software and the
    sequence counters."""
    scoped, params = _edge_in_scope(vis)
    values = {**params, "edge_pk": edge.pk, "start": start, "end": end, "limit": limit + 1}
    cur = await conn.execute(
        sql.SQL(
            """
            WITH g AS ({scoped})
            SELECT (SELECT s.software FROM edge_status s
                    WHERE s.edge_pk = (SELECT id FROM g) AND s.software IS NOT NULL
                    ORDER BY s.time DESC LIMIT 1),
                   q.updated_at, q.high_seq, coalesce(q.messages, 0)
            FROM g LEFT JOIN edge_sequence q ON q.edge_pk = g.id
            """
        ).format(scoped=scoped),
        values,
    )
    head = await cur.fetchone()
    cur = await conn.execute(
        sql.SQL(
            """
            WITH g AS ({scoped})
            (SELECT 0 AS part, s.time, s.online, s.reason, s.last_seq, s.software
             FROM edge_status s WHERE s.edge_pk = (SELECT id FROM g)
             ORDER BY s.time DESC LIMIT 1)
            UNION ALL
            (SELECT 1, s.time, s.online, s.reason, s.last_seq, s.software
             FROM edge_status s WHERE s.edge_pk = (SELECT id FROM g)
               AND s.time >= %(start)s AND s.time < %(end)s
             ORDER BY s.time LIMIT %(limit)s)
            ORDER BY part, time
            """
        ).format(scoped=scoped),
        values,
    )
    current: EdgeStatusRecord | None = None
    history: list[EdgeStatusRecord] = []
    for part, time, online, reason, last_seq, software in await cur.fetchall():
        record = EdgeStatusRecord(time, bool(online), reason, last_seq, software)
        if part == 0:
            current = record
        else:
            history.append(record)
    software, updated, high, messages = head if head else (None, None, None, 0)
    return EdgeStatusReport(
        current=current,
        software=software,
        last_message_at=updated,
        high_seq=None if high is None else int(high),
        messages=int(messages),
        history=history[:limit],
        truncated=len(history) > limit,
    )


@dataclass(frozen=True, slots=True)
class SequenceRange:
    first_seq: int
    last_seq: int
    detected_at: datetime

    @property
    def size(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class SequenceEventRecord:
    kind: str  # gap, late, replay
    first_seq: int
    last_seq: int
    detected_at: datetime

    @property
    def size(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class SequenceReport:
    high_seq: int | None
    messages: int
    #: Ranges still missing (never received), oldest first.
    open_gaps: list[SequenceRange]
    open_missing: int
    open_truncated: bool
    #: What the tracker saw in the range: gaps opened, late arrivals, replays.
    events: list[SequenceEventRecord]
    events_truncated: bool


async def sequence_gaps(
    conn: Conn,
    vis: Visibility,
    edge: EdgeRef,
    *,
    start: datetime,
    end: datetime,
    limit: int,
) -> SequenceReport:
    scoped, params = _edge_in_scope(vis)
    values = {**params, "edge_pk": edge.pk, "start": start, "end": end, "limit": limit + 1}
    cur = await conn.execute(
        sql.SQL(
            """
            WITH g AS ({scoped})
            SELECT q.high_seq, coalesce(q.messages, 0),
                   (SELECT count(*) FROM sequence_gap s WHERE s.edge_pk = g.id),
                   (SELECT coalesce(sum(s.last_seq - s.first_seq + 1), 0)::int8
                    FROM sequence_gap s WHERE s.edge_pk = g.id)
            FROM g LEFT JOIN edge_sequence q ON q.edge_pk = g.id
            """
        ).format(scoped=scoped),
        values,
    )
    head = await cur.fetchone()
    high, messages, open_count, missing = head if head else (None, 0, 0, 0)
    cur = await conn.execute(
        sql.SQL(
            """
            WITH g AS ({scoped})
            SELECT s.first_seq, s.last_seq, s.detected_at FROM sequence_gap s
            WHERE s.edge_pk = (SELECT id FROM g) ORDER BY s.first_seq LIMIT %(limit)s
            """
        ).format(scoped=scoped),
        values,
    )
    gaps = [SequenceRange(int(a), int(b), t) for a, b, t in await cur.fetchall()]
    cur = await conn.execute(
        sql.SQL(
            """
            WITH g AS ({scoped})
            SELECT s.kind, s.first_seq, s.last_seq, s.detected_at FROM sequence_event s
            WHERE s.edge_pk = (SELECT id FROM g)
              AND s.detected_at >= %(start)s AND s.detected_at < %(end)s
            ORDER BY s.detected_at, s.id LIMIT %(limit)s
            """
        ).format(scoped=scoped),
        values,
    )
    events = [SequenceEventRecord(str(k), int(a), int(b), t) for k, a, b, t in await cur.fetchall()]
    return SequenceReport(
        high_seq=None if high is None else int(high),
        messages=int(messages),
        open_gaps=gaps[:limit],
        open_missing=int(missing),
        open_truncated=int(open_count) > limit,
        events=events[:limit],
        events_truncated=len(events) > limit,
    )
