"""Idempotent bulk writes of facts.

Rows are plain tuples keyed by database ids (ingest resolves device codes and metric
names before writing) with times as epoch milliseconds, so no Python ``datetime`` is
built per point. Each table is written with one ``INSERT ... SELECT FROM unnest(...)
ON CONFLICT DO NOTHING``: one round trip per table, the array parameters sent in
binary, and a replayed batch inserts nothing. The returned counts say how many rows
were new, so duplicates absorbed are visible.

Metric points, the bulk of every batch, take faster paths once a batch is large
enough (:func:`write_metrics`): a binary ``COPY`` straight into the table, which is
the database's own ceiling, and, when that meets a row stored already, binary
``COPY`` into a temporary staging table and one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` from it. COPY alone cannot skip a
duplicate key, so it runs in a savepoint and gives way to the staging path; both keep
idempotency. Figures for all three paths are in docs/benchmarks.md, "Ingest".
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg

from zhizao.errors import DataRefused
from zhizao.storage.connection import Conn
from zhizao.wire import Quality, StateClass

QUALITY_CODES: dict[Quality, int] = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}
COUNTER_CODES: dict[str, int] = {"good": 0, "reject": 1}


class MetricRow(NamedTuple):
    device_id: int
    metric_id: int
    ts_ms: int
    value: float
    quality: int = 0


class StateRow(NamedTuple):
    device_id: int
    ts_ms: int
    state: StateClass
    raw: str | None = None
    reason: str | None = None
    quality: int = 0


class CountRow(NamedTuple):
    device_id: int
    ts_ms: int
    counter: int  # COUNTER_CODES
    quantity: int


class ConnectivityRow(NamedTuple):
    device_id: int
    ts_ms: int
    online: bool
    edge_pk: int | None = None
    reason: str | None = None


class EdgeStatusRow(NamedTuple):
    edge_pk: int
    ts_ms: int
    online: bool
    reason: str | None = None
    last_seq: int | None = None
    software: str | None = None


class EventRow(NamedTuple):
    device_id: int
    ts_ms: int
    name: str
    value: str


@dataclass
class FactBatch:
    metrics: list[MetricRow] = field(default_factory=list)
    states: list[StateRow] = field(default_factory=list)
    counts: list[CountRow] = field(default_factory=list)
    connectivity: list[ConnectivityRow] = field(default_factory=list)
    edge_status: list[EdgeStatusRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.metrics)
            + len(self.states)
            + len(self.counts)
            + len(self.connectivity)
            + len(self.edge_status)
            + len(self.events)
        )

    def extend(self, other: FactBatch) -> None:
        self.metrics.extend(other.metrics)
        self.states.extend(other.states)
        self.counts.extend(other.counts)
        self.connectivity.extend(other.connectivity)
        self.edge_status.extend(other.edge_status)
        self.events.extend(other.events)


@dataclass(frozen=True)
class WriteCounts:
    """Rows offered and rows that were new, per table."""

    offered: int
    inserted: dict[str, int]

    @property
    def new(self) -> int:
        return sum(self.inserted.values())

    @property
    def duplicates(self) -> int:
        return self.offered - self.new


# table → INSERT over unnest of typed arrays; times are epoch ms turned into
# timestamptz by the server.
_INSERTS: dict[str, str] = {
    "metric_point": """
        INSERT INTO metric_point (device_id, metric_id, time, value, quality)
        SELECT u.d, u.m, 'epoch'::timestamptz + u.t * interval '1 ms', u.v, u.q
        FROM unnest(%s::int4[], %s::int4[], %s::int8[], %s::float8[], %s::int2[])
            AS u(d, m, t, v, q)
        ON CONFLICT DO NOTHING""",
    "state_change": """
        INSERT INTO state_change (device_id, time, state, raw, reason, quality)
        SELECT u.d, 'epoch'::timestamptz + u.t * interval '1 ms', u.s::state_class, u.r, u.why, u.q
        FROM unnest(%s::int4[], %s::int8[], %s::text[], %s::text[], %s::text[], %s::int2[])
            AS u(d, t, s, r, why, q)
        ON CONFLICT DO NOTHING""",
    "production_count": """
        INSERT INTO production_count (device_id, time, counter, quantity)
        SELECT u.d, 'epoch'::timestamptz + u.t * interval '1 ms', u.c, u.n
        FROM unnest(%s::int4[], %s::int8[], %s::int2[], %s::int4[]) AS u(d, t, c, n)
        ON CONFLICT DO NOTHING""",
    "device_connectivity": """
        INSERT INTO device_connectivity (device_id, time, online, edge_pk, reason)
        SELECT u.d, 'epoch'::timestamptz + u.t * interval '1 ms', u.o, u.e, u.why
        FROM unnest(%s::int4[], %s::int8[], %s::bool[], %s::int4[], %s::text[])
            AS u(d, t, o, e, why)
        ON CONFLICT DO NOTHING""",
    "edge_status": """
        INSERT INTO edge_status (edge_pk, time, online, reason, last_seq, software)
        SELECT u.e, 'epoch'::timestamptz + u.t * interval '1 ms', u.o, u.why, u.s, u.sw
        FROM unnest(%s::int4[], %s::int8[], %s::bool[], %s::text[], %s::int8[], %s::text[])
            AS u(e, t, o, why, s, sw)
        ON CONFLICT DO NOTHING""",
    "device_event": """
        INSERT INTO device_event (device_id, time, name, value)
        SELECT u.d, 'epoch'::timestamptz + u.t * interval '1 ms', u.n, u.v
        FROM unnest(%s::int4[], %s::int8[], %s::text[], %s::text[]) AS u(d, t, n, v)
        ON CONFLICT DO NOTHING""",
}


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


#: Below this many metric rows the COPY paths' extra statements cost more than they
#: save, and the unnest path is used.
COPY_METRICS_MIN_ROWS = 256

# Connections whose session already has the staging table (temporary tables live
# as long as the session). Weak, so closed connections drop out.
_staged: weakref.WeakSet[Conn] = weakref.WeakSet()

# Connections whose last large metric write met rows stored already: see write_metrics.
_replaying: weakref.WeakSet[Conn] = weakref.WeakSet()


#: Binary COPY of a metric row: field count, then (length, value) per field; the time
#: as timestamptz, microseconds since 2000-01-01 (PostgreSQL's epoch).
_COPY_ROW = struct.Struct("!hiiiiiqidih")
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_PG_EPOCH_MS = 946_684_800_000


def encode_metrics(rows: Sequence[MetricRow]) -> bytes:
    """Metric rows as one binary COPY stream (header, rows, trailer)."""
    # One struct call per row and one join: several times faster than write_row, and
    # the server gets timestamptz directly instead of computing it per row.
    pack = _COPY_ROW.pack
    epoch = _PG_EPOCH_MS
    try:
        return b"".join(
            [
                _COPY_HEADER,
                *[pack(5, 4, d, 4, m, 8, (t - epoch) * 1000, 8, v, 2, q) for d, m, t, v, q in rows],
                _COPY_TRAILER,
            ]
        )
    except struct.error as exc:
        # Raised as the error the server would give, so callers treat it as refused data.
        raise psycopg.DataError(f"a metric row does not fit its columns: {exc}") from exc


async def _copy_in(conn: Conn, statement: str, block: bytes) -> None:
    async with conn.cursor().copy(statement.encode()) as copy:
        await copy.write(block)


async def write_metrics_direct(conn: Conn, block: bytes) -> bool:
    """COPY encoded metric rows straight into ``metric_point``, all or nothing.

    Returns False, having written nothing, if any row is stored already (a replay) or
    appears twice: COPY has no conflict clause, so the first duplicate key aborts it.
    The COPY runs in a savepoint, so that abort leaves the caller's transaction usable.
    """
    try:
        async with conn.transaction():
            await _copy_in(
                conn,
                "COPY metric_point (device_id, metric_id, time, value, quality)"
                " FROM STDIN (FORMAT BINARY)",
                block,
            )
    except psycopg.errors.UniqueViolation:
        return False
    return True


async def write_metrics_staged(conn: Conn, block: bytes) -> int:
    """COPY encoded metric rows into a staging table, then insert the new ones.

    Must run inside a transaction, so that the staged rows and the insert commit or
    roll back together; the staging table empties itself at commit.
    Returns the number of new rows.
    """
    try:
        if conn not in _staged:
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _zhizao_stage_metric"
                " (d int4, m int4, t timestamptz, v float8, q int2) ON COMMIT DELETE ROWS"
            )
            _staged.add(conn)
        await _copy_in(conn, "COPY _zhizao_stage_metric FROM STDIN (FORMAT BINARY)", block)
        # In key order, the primary-key index is filled page by page instead of at
        # random: measured 1.7 times faster for 20,000-row batches.
        cur = await conn.execute(
            "INSERT INTO metric_point (device_id, metric_id, time, value, quality)"
            " SELECT d, m, t, v, q FROM _zhizao_stage_metric ORDER BY d, m, t"
            " ON CONFLICT DO NOTHING"
        )
        # No TRUNCATE round trip: the table empties itself at commit. A second call in
        # the same transaction offers the first call's rows again, which the conflict
        # clause skips, so the counts stay right.
    except psycopg.Error:
        # The creation may have been rolled back with the caller's transaction.
        _staged.discard(conn)
        raise
    return max(cur.rowcount, 0)


def reset_session(conn: Conn) -> None:
    """Forget what this module knows of a connection's session, after a rollback.

    A rolled-back (sub)transaction takes a staging table created in it along; the
    next write then creates it again instead of meeting "relation does not exist".
    """
    _staged.discard(conn)
    _replaying.discard(conn)


async def write_metrics(conn: Conn, rows: Sequence[MetricRow]) -> int:
    """Write a large batch of metric rows idempotently; returns how many were new.

    Nearly every batch is new data, so it is first offered to a plain COPY, the
    database's fastest path. A batch with a stored row (an edge re-sending after a
    lost acknowledgement, a worker restarted before it acknowledged) falls back to
    the staging path, which skips duplicates; and since replays come in runs, the
    connection stays on the staging path until a batch without duplicates passes.
    Must run inside a transaction.
    """
    block = encode_metrics(rows)
    if conn not in _replaying:
        if await write_metrics_direct(conn, block):
            return len(rows)
        _replaying.add(conn)
    new = await write_metrics_staged(conn, block)
    if new == len(rows):
        _replaying.discard(conn)
    return new


async def write_facts(conn: Conn, batch: FactBatch) -> WriteCounts:
    """Insert the batch in the caller's transaction; duplicates are skipped."""
    inserted: dict[str, int] = {}
    metrics: Sequence[tuple[object, ...]] = batch.metrics
    if len(batch.metrics) >= COPY_METRICS_MIN_ROWS:
        if conn.autocommit:
            async with conn.transaction():
                inserted["metric_point"] = await write_metrics(conn, batch.metrics)
        else:
            inserted["metric_point"] = await write_metrics(conn, batch.metrics)
        metrics = ()
    tables: Iterable[tuple[str, Sequence[tuple[object, ...]], int]] = (
        ("metric_point", metrics, 5),
        (
            "state_change",
            [
                (r.device_id, r.ts_ms, r.state.value, r.raw, r.reason, r.quality)
                for r in batch.states
            ],
            6,
        ),
        ("production_count", batch.counts, 4),
        ("device_connectivity", batch.connectivity, 5),
        ("edge_status", batch.edge_status, 6),
        ("device_event", batch.events, 4),
    )
    for table, rows, width in tables:
        if not rows:
            continue
        inserted[table] = 0
        for part in _statements(table, rows):
            cur = await conn.execute(_INSERTS[table].encode(), _columns(part, width))
            inserted[table] += max(cur.rowcount, 0)
    return WriteCounts(offered=len(batch), inserted=inserted)


#: Rows of texts go into statements of about this many bytes. A statement's parameters
#: are built in memory whole, and libpq keeps its output buffer at the size of the
#: largest statement a connection has sent, for as long as the connection lives: one
#: batch of long event texts (50,000 rows of kilobytes) would otherwise leave each
#: ingest connection holding tens of MiB after a burst (docs/ingest.md, "Memory").
STATEMENT_MAX_BYTES = 4 * 2**20
#: Bytes of a row besides its texts, roughly, as sent.
_ROW_BYTES = 48
#: Text sizes of the rows whose texts are unbounded (events) or long (states: raw and
#: reason up to 256 characters each); the other tables' rows are small and fixed.
_TEXT_SIZE: dict[str, Callable[[tuple[Any, ...]], int]] = {
    "device_event": lambda r: len(r[2]) + len(r[3]),
    "state_change": lambda r: len(r[3] or "") + len(r[4] or ""),
}


def _statements(
    table: str, rows: Sequence[tuple[object, ...]]
) -> Iterator[Sequence[tuple[object, ...]]]:
    size_of = _TEXT_SIZE.get(table)
    if size_of is None:
        yield rows
        return
    start = size = 0
    for i, row in enumerate(rows):
        row_size = _ROW_BYTES + size_of(row)
        if size + row_size > STATEMENT_MAX_BYTES and i > start:
            yield rows[start:i]
            start, size = i, 0
        size += row_size
    yield rows[start:]


async def metric_ids(conn: Conn, names: Iterable[str]) -> dict[str, int]:
    """Ids of metric names, interning the ones not seen before."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    await conn.execute(
        "INSERT INTO metric_name (name) SELECT unnest(%s::text[]) ON CONFLICT (name) DO NOTHING",
        (wanted,),
    )
    cur = await conn.execute("SELECT name, id FROM metric_name WHERE name = ANY(%s)", (wanted,))
    return {str(name): int(pk) for name, pk in await cur.fetchall()}


async def write_missed_deaths(conn: Conn, rows: Sequence[EdgeStatusRow]) -> int:
    """Store deaths of edges whose last stored status is not already a death.

    A retained death is delivered again on every new subscription; stored at its
    receive time each time, it would invent a death per ingest restart. It is kept
    only when it tells something new: the edge's last stored status is online.
    """
    if not rows:
        return 0
    cur = await conn.execute(
        """
        INSERT INTO edge_status (edge_pk, time, online, reason, last_seq, software)
        SELECT u.e, 'epoch'::timestamptz + u.t * interval '1 ms', false, u.why, u.s, u.sw
        FROM unnest(%s::int4[], %s::int8[], %s::text[], %s::int8[], %s::text[])
            AS u(e, t, why, s, sw)
        WHERE coalesce((SELECT s.online FROM edge_status s WHERE s.edge_pk = u.e
                        ORDER BY s.time DESC LIMIT 1), false)
        ON CONFLICT DO NOTHING
        """,
        (
            [r.edge_pk for r in rows],
            [r.ts_ms for r in rows],
            [r.reason for r in rows],
            [r.last_seq for r in rows],
            [r.software for r in rows],
        ),
    )
    return max(cur.rowcount, 0)


#: Classid of the advisory locks that serialise admissions of names per enterprise.
_METRIC_LOCK_CLASS = 0x7A6D  # "zm"


@dataclass(frozen=True, slots=True)
class MetricAdmission:
    """Metric names asked for one enterprise: the ids of those it may use."""

    ids: dict[str, int]
    #: Names refused because the enterprise has ``limit`` names already.
    refused: tuple[str, ...]
    #: Distinct names the enterprise has now (None: not counted, nothing was new).
    used: int | None


async def enterprise_metric_ids(
    conn: Conn, credit_code: str, names: Iterable[str], *, limit: int
) -> MetricAdmission:
    """Ids of metric names for an enterprise, admitting new ones up to ``limit`` names.

    Names the enterprise has used before always pass. New names are admitted in the
    order given (the order they arrived in) while it has fewer than ``limit``; the rest
    are refused and not interned, so neither ``metric_name`` nor any cache grows for
    them. Runs in a transaction of its
    own holding the enterprise's admission lock: two workers admitting names for one
    enterprise at once cannot take it past the limit. Call it outside a transaction.
    """
    wanted = list(dict.fromkeys(names))
    async with conn.transaction():
        cur = await conn.execute("SELECT id FROM enterprise WHERE credit_code = %s", (credit_code,))
        row = await cur.fetchone()
        if row is None:
            raise DataRefused(f"enterprise {credit_code} is not in the registry")
        if not wanted:
            return MetricAdmission({}, (), None)
        enterprise_id = int(row[0])
        known = await _enterprise_metrics(conn, enterprise_id, wanted)
        if len(known) == len(wanted):
            return MetricAdmission(known, (), None)
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", (_METRIC_LOCK_CLASS, enterprise_id)
        )
        # Again under the lock: another worker may have admitted some meanwhile.
        known = await _enterprise_metrics(conn, enterprise_id, wanted)
        cur = await conn.execute(
            "SELECT count(*) FROM enterprise_metric WHERE enterprise_id = %s", (enterprise_id,)
        )
        count_row = await cur.fetchone()
        used = 0 if count_row is None else int(count_row[0])
        new = [name for name in wanted if name not in known]
        room = max(0, limit - used)
        admitted, refused = new[:room], tuple(new[room:])
        if admitted:
            ids = await metric_ids(conn, admitted)
            await conn.execute(
                "INSERT INTO enterprise_metric (enterprise_id, metric_id)"
                " SELECT %s, unnest(%s::int4[]) ON CONFLICT DO NOTHING",
                (enterprise_id, list(ids.values())),
            )
            known.update(ids)
        return MetricAdmission(known, refused, used + len(admitted))


async def _enterprise_metrics(
    conn: Conn, enterprise_id: int, names: Sequence[str]
) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT n.name, n.id FROM enterprise_metric em JOIN metric_name n ON n.id = em.metric_id"
        " WHERE em.enterprise_id = %s AND n.name = ANY(%s)",
        (enterprise_id, list(names)),
    )
    return {str(name): int(pk) for name, pk in await cur.fetchall()}
