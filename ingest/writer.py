"""The database side of ingest: connections that come back, and batch commits.

One transaction per batch holds everything the batch changes: fact rows, dead
letters and the sequence state of its edges. So a commit either records a message
completely or not at all, and only then is it acknowledged to the broker.

Failures are sorted by what retrying can achieve:

* the database is unreachable, restarting, or a deadlock was detected
  (``OperationalError``, ``InterfaceError``): retry the same batch with exponential
  backoff and jitter, reconnecting, for as long as it takes. Nothing is
  acknowledged meanwhile, so the broker stops sending once the in-flight window is
  full: memory stays flat and nothing is lost;
* the data itself was refused (``DataError``, ``IntegrityError``): the batch is
  written again message by message, and a message the database still refuses goes
  to the dead letters with the database's reason, so one bad message cannot block
  the rest;
* anything else from the database (a missing table after a botched upgrade, say) is
  retried with backoff like an outage and logged as an error: stalling is better
  than dropping data.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import structlog

from ingest.convert import Converted, Inbound
from ingest.metrics import IngestMetrics
from ingest.sequences import classify
from zhizao.errors import DatabaseUnavailable
from zhizao.storage.connection import Conn, connect, redact
from zhizao.storage.deadletters import DeadLetterRow, write_dead_letters
from zhizao.storage.facts import EdgeStatusRow, FactBatch, write_facts, write_missed_deaths
from zhizao.storage.sequences import SequenceEvent, lock_sequence_state, save_sequence_state

log = structlog.get_logger("ingest.writer")

T = TypeVar("T")

_REFUSED_DATA = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


class ShutdownWhileUnavailable(Exception):
    """The worker is stopping and the database did not come back within the grace time."""


@dataclass
class Backoff:
    initial: float
    maximum: float
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        # Jitter, so that several workers do not hammer a recovering server in step.
        return float(delay * random.uniform(0.5, 1.0))  # noqa: S311 - not cryptographic

    def reset(self) -> None:
        self.attempt = 0


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
                except (psycopg.Error, DatabaseUnavailable) as exc:
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
    seqs: dict[int, list[int]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def add(self, msg: Inbound, converted: Converted) -> None:
        if not self.entries:
            self.started = time.monotonic()
        self.entries.append((msg, converted))
        self.facts.extend(converted.facts)
        self.dead.extend(converted.dead)
        self.missed_deaths.extend(converted.missed_deaths)
        if converted.edge_pk is not None and converted.seq is not None:
            self.seqs.setdefault(converted.edge_pk, []).append(converted.seq)

    @property
    def rows(self) -> int:
        return len(self.facts)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class CommitResult:
    rows_new: int
    rows_offered: int
    inserted: dict[str, int]
    dead_messages: int
    dead_points: int
    events: list[SequenceEvent]


class BatchWriter:
    def __init__(self, db: Database, metrics: IngestMetrics) -> None:
        self._db = db
        self._metrics = metrics

    async def commit(self, batch: PendingBatch) -> CommitResult:
        """Commit the batch, retrying until the database takes it (see module doc)."""
        backoff = self._db.backoff()
        while True:
            try:
                conn = await self._db.write_conn()
                started = time.perf_counter()
                result = await self._commit_whole(conn, batch)
            except _REFUSED_DATA as exc:
                log.warning(
                    "database refused a batch; writing it message by message",
                    error=str(exc).strip()[:300],
                )
                try:
                    conn = await self._db.write_conn()
                    return await self._commit_isolated(conn, batch)
                except _REFUSED_DATA as again:  # refused even alone, outside any message
                    await self._db.wait_after_failure("commit_isolated", again, backoff)
                except (psycopg.Error, DatabaseUnavailable) as again:
                    await self._db.discard_write_conn()
                    await self._db.wait_after_failure("commit_isolated", again, backoff)
            except (psycopg.Error, DatabaseUnavailable) as exc:
                if isinstance(exc, psycopg.Error) and not isinstance(
                    exc, psycopg.OperationalError | psycopg.InterfaceError
                ):
                    log.exception("unexpected database error; will retry")
                await self._db.discard_write_conn()
                await self._db.wait_after_failure("commit", exc, backoff)
            else:
                self._metrics.commit_seconds.observe(time.perf_counter() - started)
                self._db.mark_healthy()
                return result

    async def _track(self, conn: Conn, seqs: dict[int, list[int]]) -> list[SequenceEvent]:
        states = await lock_sequence_state(conn, seqs.keys())
        before = {pk: list(state.gaps) for pk, state in states.items()}
        events: list[SequenceEvent] = []
        for pk in sorted(seqs):
            events.extend(classify(pk, states[pk], seqs[pk]))
        await save_sequence_state(
            conn, states, {pk: len(s) for pk, s in seqs.items()}, events, before=before
        )
        return events

    async def _commit_whole(self, conn: Conn, batch: PendingBatch) -> CommitResult:
        async with conn.transaction():
            # Sequence rows first: they serialise workers per edge before any fact
            # row is touched, so two workers never deadlock on the same keys.
            events = await self._track(conn, batch.seqs)
            counts = await write_facts(conn, batch.facts)
            missed = await write_missed_deaths(conn, batch.missed_deaths)
            await write_dead_letters(conn, batch.dead)
        inserted = dict(counts.inserted)
        if missed:
            inserted["edge_status"] = inserted.get("edge_status", 0) + missed
        return CommitResult(
            rows_new=counts.new + missed,
            rows_offered=counts.offered + len(batch.missed_deaths),
            inserted=inserted,
            dead_messages=sum(1 for _, c in batch.entries if c.message_dead),
            dead_points=sum(1 for d in batch.dead if d.point_index is not None),
            events=events,
        )

    async def _commit_isolated(self, conn: Conn, batch: PendingBatch) -> CommitResult:
        inserted: dict[str, int] = {}
        offered = 0
        dead_messages = 0
        dead_points = 0
        events: list[SequenceEvent] = []
        for msg, converted in batch.entries:
            seqs = (
                {converted.edge_pk: [converted.seq]}
                if converted.edge_pk is not None and converted.seq is not None
                else {}
            )
            try:
                async with conn.transaction():
                    msg_events = await self._track(conn, seqs)
                    counts = await write_facts(conn, converted.facts)
                    await write_missed_deaths(conn, converted.missed_deaths)
                    await write_dead_letters(conn, converted.dead)
            except _REFUSED_DATA as exc:
                reason = f"database: {str(exc).strip().splitlines()[0][:300]}"
                async with conn.transaction():
                    msg_events = await self._track(conn, seqs)
                    await write_dead_letters(
                        conn,
                        [
                            DeadLetterRow(
                                topic=msg.topic,
                                reason=reason,
                                payload=msg.payload,
                                received_ms=msg.received_ms,
                                seq=converted.seq,
                            )
                        ],
                    )
                dead_messages += 1
                events.extend(msg_events)
                continue
            events.extend(msg_events)
            offered += counts.offered
            for table, n in counts.inserted.items():
                inserted[table] = inserted.get(table, 0) + n
            dead_messages += int(converted.message_dead)
            dead_points += sum(1 for d in converted.dead if d.point_index is not None)
        return CommitResult(
            rows_new=sum(inserted.values()),
            rows_offered=offered,
            inserted=inserted,
            dead_messages=dead_messages,
            dead_points=dead_points,
            events=events,
        )
