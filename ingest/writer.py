"""The database side of ingest: connections that come back, and batch commits.

One transaction per batch holds everything the batch changes: fact rows, dead
letters and the sequence state of its edges. So a commit either records a message
completely or not at all, and only then is it acknowledged to the broker.

Failures are sorted by what retrying can achieve (:func:`failure_of`):

* **outage**: the server is unreachable, restarting, shutting down, out of disk or
  memory, cancelled the statement, or detected a deadlock (``OperationalError``
  but for program limits, ``InterfaceError``, a closed connection): retry the same
  batch with exponential backoff and jitter, reconnecting, for as long as it takes.
  Nothing is acknowledged meanwhile, so the broker stops sending once the in-flight
  window is full: memory stays flat and nothing is lost;
* **schema**: a table, column or privilege is missing (SQLSTATE classes 42, 3D, 3F,
  28; a botched upgrade, a revoked grant). All SQL here is fixed and parameterised,
  so no message can cause these: retried like an outage and logged as an error, since
  stalling is better than turning every message into a dead letter;
* **data**: the database refused a value (classes 22 data exception, 23 integrity
  constraint, 54 program limit exceeded), or the driver could not send one (a NUL in
  text, a lone surrogate): caused by the batch's messages;
* **unexpected**: anything else that does not say the database is gone (an error a
  site's trigger raises, an internal error): treated as caused by the data, since
  retrying one message forever is the one outcome that must not happen.

The contract (zhizao.wire) is closed over what storage holds, so data failures are
for what it cannot foresee: a site's own constraint or trigger, say. A data or
unexpected failure of a batch is *isolated*: the batch is written again message by
message, each in its own transaction. A message refused alone has its points
written in halves (savepoints), down to the single points the database refuses; each
is a dead letter with its index and the database's reason, and the message's other
points are stored. A message refused with no point to blame (a status message, its
sequence state) is a dead letter as a whole, with reason ``database: ...``. Dead
letters are written with their text made storable (zhizao.storage.deadletters), so
one is never refused for its content; if one still is, the database itself is
broken, and the batch is retried like an outage. Messages committed one by one before
such a retry are not written again.

Sequence numbers: a number received before is compared by digest
(:attr:`ingest.convert.Converted.digest`) with the first message that carried it. The
same bytes are a replay (facts absorbed by idempotent keys); other bytes are a
*conflict*: the message is a dead letter (``sequence: seq N of edge E was already
stored with different content``) and a ``conflict`` sequence event, and none of its
rows are written. The first message wins whether the two came in one batch or in
two. Digests older than ``sequence_digest_retention_s`` are pruned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import psycopg
import structlog

from ingest.convert import Converted, Inbound, PointRows
from ingest.metrics import IngestMetrics
from ingest.sequences import classify, received_before
from zhizao.backoff import Backoff
from zhizao.errors import DatabaseUnavailable, DataRefused
from zhizao.storage.connection import Conn, connect, redact
from zhizao.storage.deadletters import DeadLetterRow, write_dead_letters
from zhizao.storage.facts import (
    EdgeStatusRow,
    FactBatch,
    reset_session,
    write_facts,
    write_missed_deaths,
)
from zhizao.storage.sequences import (
    SequenceEvent,
    lock_sequence_state,
    prune_digests,
    save_digests,
    save_sequence_state,
    stored_digests,
)

log = structlog.get_logger("ingest.writer")

T = TypeVar("T")

Failure = Literal["outage", "schema", "data", "unexpected"]

#: What a write may raise: the database's errors, and the driver's for a value it
#: cannot send (UnicodeEncodeError for a lone surrogate, OverflowError, TypeError).
WRITE_ERRORS = (psycopg.Error, DatabaseUnavailable, ValueError, OverflowError, TypeError)
_DATA_CLASSES = frozenset(("22", "23", "54"))
_SCHEMA_CLASSES = frozenset(("42", "3D", "3F", "28"))


def failure_of(exc: BaseException) -> Failure:  # noqa: PLR0911 - one exit per class
    """What retrying can achieve for this error (see the module doc)."""
    if isinstance(exc, DatabaseUnavailable | psycopg.InterfaceError):
        return "outage"
    if isinstance(exc, psycopg.Error):
        state = (exc.sqlstate or "")[:2]
        if state in _DATA_CLASSES:
            return "data"
        if state in _SCHEMA_CLASSES:
            return "schema"
        if isinstance(exc, psycopg.OperationalError):
            return "outage"
        # Raised by the driver before sending (a NUL in text): no SQLSTATE.
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
            return "data"
        return "unexpected"
    if isinstance(exc, UnicodeError | OverflowError):
        return "data"
    return "unexpected"


def caused_by_data(exc: BaseException) -> bool:
    return failure_of(exc) in ("data", "unexpected")


def database_reason(exc: BaseException) -> str:
    """``database: <the first line of the error>``, for a dead letter."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, psycopg.Error):
        text = f"{type(exc).__name__}: {text}"
    return f"database: {text}"[:500]


class ShutdownWhileUnavailable(Exception):
    """The worker is stopping and the database did not come back within the grace time."""


class Database:
    """A look-up connection (autocommit) and a write connection, both re-opened on demand."""

    def __init__(
        self,
        url: str,
        metrics: IngestMetrics,
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
    ) -> None:
        self.url = url
        self._metrics = metrics
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._lookup: Conn | None = None
        self._write: Conn | None = None
        self._lookup_lock = asyncio.Lock()
        #: Set while shutting down: retries give up after the deadline.
        self.give_up_at: float | None = None
        self.healthy = True

    def backoff(self) -> Backoff:
        return Backoff(self._retry_initial_s, self._retry_max_s)

    async def run_lookup(self, stage: str, work: Callable[[Conn], Awaitable[T]]) -> T:
        backoff = self.backoff()
        async with self._lookup_lock:
            while True:
                try:
                    if self._lookup is None or self._lookup.closed:
                        self._lookup = await connect(self.url, autocommit=True)
                    result = await work(self._lookup)
                except WRITE_ERRORS as exc:
                    if failure_of(exc) == "data":
                        # A value of the message (a metric name) was refused: that
                        # message's problem, not a reason to stop looking things up.
                        raise DataRefused(database_reason(exc).removeprefix("database: ")) from exc
                    await self._close_lookup()
                    await self.wait_after_failure(stage, exc, backoff)
                    continue
                self.mark_healthy()
                return result

    def mark_healthy(self) -> None:
        self.healthy = True
        self._metrics.database_ok.set(1)

    async def write_conn(self) -> Conn:
        if self._write is None or self._write.closed:
            self._write = await connect(self.url)
        return self._write

    async def discard_write_conn(self) -> None:
        conn, self._write = self._write, None
        if conn is not None:
            await _close_quietly(conn)

    async def wait_after_failure(self, stage: str, exc: BaseException, backoff: Backoff) -> None:
        self._metrics.db_errors.labels(stage).inc()
        self.healthy = False
        self._metrics.database_ok.set(0)
        delay = backoff.next_delay()
        if self.give_up_at is not None and time.monotonic() + delay > self.give_up_at:
            raise ShutdownWhileUnavailable(f"{stage}: database unavailable at shutdown") from exc
        level = log.warning if backoff.attempt <= 3 else log.error
        level(
            "database attempt failed; retrying",
            stage=stage,
            error=str(exc).strip()[:300],
            retry_in_s=round(delay, 2),
            attempt=backoff.attempt,
            db=redact(self.url),
        )
        await asyncio.sleep(delay)

    async def _close_lookup(self) -> None:
        conn, self._lookup = self._lookup, None
        if conn is not None:
            await _close_quietly(conn)

    async def close(self) -> None:
        await self._close_lookup()
        await self.discard_write_conn()


async def _close_quietly(conn: Conn) -> None:
    try:
        await conn.close()
    except psycopg.Error as exc:  # the connection is already broken: nothing to save
        log.debug("closing a broken connection failed", error=str(exc))


@dataclass
class PendingBatch:
    """Converted messages waiting for one commit."""

    entries: list[tuple[Inbound, Converted]] = field(default_factory=list)
    facts: FactBatch = field(default_factory=FactBatch)
    dead: list[DeadLetterRow] = field(default_factory=list)
    missed_deaths: list[EdgeStatusRow] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, msg: Inbound, converted: Converted) -> None:
        if not self.entries:
            self.started = time.monotonic()
        self.entries.append((msg, converted))
        self.facts.extend(converted.facts)
        self.dead.extend(converted.dead)
        self.missed_deaths.extend(converted.missed_deaths)

    @property
    def rows(self) -> int:
        return len(self.facts)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class CommitResult:
    rows_new: int = 0
    rows_offered: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    dead_messages: int = 0
    dead_points: int = 0
    events: list[SequenceEvent] = field(default_factory=list)

    def add(self, other: CommitResult) -> None:
        self.rows_new += other.rows_new
        self.rows_offered += other.rows_offered
        for table, n in other.inserted.items():
            self.inserted[table] = self.inserted.get(table, 0) + n
        self.dead_messages += other.dead_messages
        self.dead_points += other.dead_points
        self.events.extend(other.events)


@dataclass
class _Isolation:
    """Progress through a batch written message by message, kept across retries."""

    done: int = 0
    result: CommitResult = field(default_factory=CommitResult)


@dataclass
class _Tracked:
    events: list[SequenceEvent]
    #: Positions (in the entries given) of messages whose number is a conflict.
    conflicts: set[int]


def conflict_reason(converted: Converted) -> str:
    return (
        f"sequence: seq {converted.seq} of edge {converted.edge_id!r}"
        " was already stored with different content"
    )


RowsByPoint = Callable[[Inbound], Awaitable[list[PointRows]]]


async def _no_points(msg: Inbound) -> list[PointRows]:
    return []


class BatchWriter:
    def __init__(
        self,
        db: Database,
        metrics: IngestMetrics,
        *,
        rows_by_point: RowsByPoint = _no_points,
        digest_retention_s: float = 8 * 86_400,
        prune_every_s: float = 60.0,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._rows_by_point = rows_by_point
        self._digest_retention_s = digest_retention_s
        self._prune_every_s = prune_every_s
        self._next_prune = time.monotonic() + prune_every_s

    async def commit(self, batch: PendingBatch) -> CommitResult:
        """Commit the batch, retrying until the database takes it (see module doc)."""
        backoff = self._db.backoff()
        isolation: _Isolation | None = None
        while True:
            try:
                conn = await self._db.write_conn()
                started = time.perf_counter()
                if isolation is None:
                    try:
                        result = await self._commit_whole(conn, batch)
                    except WRITE_ERRORS as exc:
                        if not caused_by_data(exc):
                            raise
                        reset_session(conn)
                        log.warning(
                            "database refused a batch; writing it message by message",
                            error=database_reason(exc),
                        )
                        isolation = _Isolation()
                        result = await self._commit_isolated(conn, batch, isolation)
                else:
                    result = await self._commit_isolated(conn, batch, isolation)
            except WRITE_ERRORS as exc:
                kind = failure_of(exc)
                if kind != "outage":
                    # A schema problem, or a dead letter refused: not one message's fault.
                    log.exception(
                        "database refused what no message can be blamed for; will retry",
                        failure=kind,
                        error=database_reason(exc),
                    )
                await self._db.discard_write_conn()
                stage = "commit" if isolation is None else "commit_isolated"
                await self._db.wait_after_failure(stage, exc, backoff)
            else:
                self._metrics.commit_seconds.observe(time.perf_counter() - started)
                self._db.mark_healthy()
                await self._maybe_prune(conn)
                return result

    async def _maybe_prune(self, conn: Conn) -> None:
        """Drop digests past their retention, at most once every ``prune_every_s``."""
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self._prune_every_s
        try:
            async with conn.transaction():
                pruned = await prune_digests(conn, self._digest_retention_s)
        except psycopg.Error as exc:
            # Pruning is housekeeping: the next commit's turn tries again.
            log.warning("pruning sequence digests failed", error=database_reason(exc))
            await self._db.discard_write_conn()
            return
        if pruned:
            log.debug("sequence digests pruned", rows=pruned)

    async def _track(self, conn: Conn, entries: Sequence[tuple[Inbound, Converted]]) -> _Tracked:
        """Sequence state of the entries' edges: lock, classify, compare digests, save."""
        tracked = [
            (position, c.edge_pk, c.seq, c.digest)
            for position, (_, c) in enumerate(entries)
            if c.edge_pk is not None and c.seq is not None
        ]
        if not tracked:
            return _Tracked([], set())
        states = await lock_sequence_state(conn, {pk for _, pk, _, _ in tracked})
        before = {pk: list(state.gaps) for pk, state in states.items()}
        # Only a number received before can conflict; the first of a number in this
        # batch is "received before" for the later ones, as it would be in two batches.
        known = await stored_digests(
            conn,
            [(pk, seq) for _, pk, seq, _ in tracked if received_before(states[pk], seq)],
        )
        conflicts: set[int] = set()
        accepted: dict[int, list[int]] = {}
        messages: dict[int, int] = {}
        new_digests: list[tuple[int, int, bytes]] = []
        conflict_events: list[SequenceEvent] = []
        for position, pk, seq, digest in tracked:
            messages[pk] = messages.get(pk, 0) + 1
            first = known.get((pk, seq))
            if first is not None and digest is not None and first != digest:
                conflicts.add(position)
                conflict_events.append(SequenceEvent(pk, "conflict", seq, seq))
                continue
            if first is None and digest is not None:
                known[pk, seq] = digest
                new_digests.append((pk, seq, digest))
            accepted.setdefault(pk, []).append(seq)
        events: list[SequenceEvent] = []
        for pk in sorted(accepted):
            events.extend(classify(pk, states[pk], accepted[pk]))
        events.extend(conflict_events)
        await save_sequence_state(conn, states, messages, events, before=before)
        await save_digests(conn, new_digests)
        return _Tracked(events, conflicts)

    async def _commit_whole(self, conn: Conn, batch: PendingBatch) -> CommitResult:
        async with conn.transaction():
            # Sequence rows first: they serialise workers per edge before any fact
            # row is touched, so two workers never deadlock on the same keys.
            tracked = await self._track(conn, batch.entries)
            facts, dead, missed_deaths = batch.facts, batch.dead, batch.missed_deaths
            if tracked.conflicts:
                facts, dead, missed_deaths = FactBatch(), [], []
                for position, (msg, converted) in enumerate(batch.entries):
                    if position in tracked.conflicts:
                        dead.append(converted.message_letter(msg, conflict_reason(converted)))
                        continue
                    facts.extend(converted.facts)
                    dead.extend(converted.dead)
                    missed_deaths.extend(converted.missed_deaths)
            counts = await write_facts(conn, facts)
            missed = await write_missed_deaths(conn, missed_deaths)
            await write_dead_letters(conn, dead)
        inserted = dict(counts.inserted)
        if missed:
            inserted["edge_status"] = inserted.get("edge_status", 0) + missed
        return CommitResult(
            rows_new=counts.new + missed,
            rows_offered=counts.offered + len(missed_deaths),
            inserted=inserted,
            dead_messages=sum(
                1
                for position, (_, c) in enumerate(batch.entries)
                if c.message_dead or position in tracked.conflicts
            ),
            dead_points=sum(1 for d in dead if d.point_index is not None),
            events=tracked.events,
        )

    async def _commit_isolated(
        self, conn: Conn, batch: PendingBatch, isolation: _Isolation
    ) -> CommitResult:
        while isolation.done < len(batch.entries):
            msg, converted = batch.entries[isolation.done]
            isolation.result.add(await self._commit_one(conn, msg, converted))
            isolation.done += 1
        return isolation.result

    async def _commit_one(self, conn: Conn, msg: Inbound, converted: Converted) -> CommitResult:
        """One message in its own transaction; what the database refuses, dead-lettered."""
        result = CommitResult()
        try:
            async with conn.transaction():
                tracked = await self._track(conn, [(msg, converted)])
                result.events = tracked.events
                if tracked.conflicts:
                    await write_dead_letters(
                        conn, [converted.message_letter(msg, conflict_reason(converted))]
                    )
                    result.dead_messages = 1
                    return result
                dead = list(converted.dead)
                try:
                    async with conn.transaction():
                        counts = await write_facts(conn, converted.facts)
                        missed = await write_missed_deaths(conn, converted.missed_deaths)
                    result.inserted = dict(counts.inserted)
                    if missed:
                        result.inserted["edge_status"] = result.inserted.get("edge_status", 0)
                        result.inserted["edge_status"] += missed
                    result.rows_offered = counts.offered + len(converted.missed_deaths)
                except WRITE_ERRORS as exc:
                    if not caused_by_data(exc):
                        raise
                    reset_session(conn)
                    pieces = await self._rows_by_point(msg)
                    if not pieces:
                        raise  # nothing to blame but the message: dead as a whole, below
                    written = await self._write_pieces(conn, msg, converted, pieces)
                    result.inserted, result.rows_offered = written.inserted, written.rows_offered
                    dead += written.letters
                await write_dead_letters(conn, dead)
        except WRITE_ERRORS as exc:
            if not caused_by_data(exc):
                raise
            reset_session(conn)
            reason = database_reason(exc)
            log.warning("database refused a message", topic=msg.topic, error=reason)
            return await self._message_refused(conn, msg, converted, reason)
        result.rows_new = sum(result.inserted.values())
        result.dead_messages = int(converted.message_dead)
        result.dead_points = sum(1 for d in dead if d.point_index is not None)
        return result

    async def _message_refused(
        self, conn: Conn, msg: Inbound, converted: Converted, reason: str
    ) -> CommitResult:
        """The message as one dead letter. Its number is still recorded, unless that is
        what the database refused; if even the dead letter is refused, the error goes
        up and the batch is retried (the database is broken, not the message)."""
        result = CommitResult(dead_messages=1)
        async with conn.transaction():
            try:
                async with conn.transaction():
                    result.events = (await self._track(conn, [(msg, converted)])).events
            except WRITE_ERRORS as exc:
                if not caused_by_data(exc):
                    raise
                result.events = []
            await write_dead_letters(conn, [converted.message_letter(msg, reason)])
        return result

    async def _write_pieces(
        self, conn: Conn, msg: Inbound, converted: Converted, pieces: Sequence[PointRows]
    ) -> _Written:
        """Write the points' rows, halving the set the database refuses down to single
        points, which become dead letters. Each attempt runs in a savepoint."""
        merged = FactBatch()
        for piece in pieces:
            merged.extend(piece.facts)
        try:
            async with conn.transaction():
                counts = await write_facts(conn, merged)
        except WRITE_ERRORS as exc:
            if not caused_by_data(exc):
                raise
            reset_session(conn)
            if len(pieces) == 1:
                piece = pieces[0]
                letter = DeadLetterRow(
                    msg.topic,
                    database_reason(exc),
                    piece.raw,
                    msg.received_ms,
                    converted.enterprise,
                    converted.edge_id,
                    converted.seq,
                    piece.point_index,
                )
                return _Written({}, 0, [letter])
            half = len(pieces) // 2
            written = await self._write_pieces(conn, msg, converted, pieces[:half])
            written.add(await self._write_pieces(conn, msg, converted, pieces[half:]))
            return written
        return _Written(dict(counts.inserted), counts.offered, [])


@dataclass
class _Written:
    inserted: dict[str, int]
    rows_offered: int
    letters: list[DeadLetterRow]

    def add(self, other: _Written) -> None:
        for table, n in other.inserted.items():
            self.inserted[table] = self.inserted.get(table, 0) + n
        self.rows_offered += other.rows_offered
        self.letters += other.letters
