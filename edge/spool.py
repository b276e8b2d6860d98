"""The disk spool between the collectors and the uplink (DESIGN §9).

Design
------
One SQLite database in WAL mode, used from one worker thread (stdlib ``sqlite3``
behind a single-thread executor: every statement runs on the same connection and
in order, and the event loop never blocks on the disk). The in-memory mirror of the
database (formed batches, depths, totals) belongs to that thread too; each call
hands the event loop an immutable snapshot of it, which is all that ``stats``,
``wait_ready`` and ``next_batch`` read. Three tables::

    points   (id AUTOINCREMENT, spooled_at ms, body = the point's wire JSON)
    batches  (seq, first_id, last_id, sent_at, points)   formed, not yet acknowledged
    meta     (enterprise, edge, next_seq, batched_upto)

Points are appended in arrival order. A batch is formed *from the spool* only when
the uplink can send it: it takes the oldest unbatched points (ids above
``batched_upto``, a contiguous id range), gets ``next_seq`` and is written in the
same transaction that advances ``next_seq``, so a sequence number only grows and
survives restarts, and a batch re-sent after a restart keeps its number and even
its bytes (``sent_at`` is stored). Points and the batch row leave the spool only
when the uplink calls :meth:`Spool.ack` after the broker's PUBACK.

Durability (the fsync policy)
-----------------------------
``put()`` returns when its points are committed. With ``durability="fsync"`` (the
default) SQLite runs with ``synchronous=FULL``: every commit fsyncs the WAL, so an
accepted point survives ``kill -9`` and a power cut. With ``durability="os"``
(``synchronous=NORMAL``) a commit reaches the OS page cache only: it survives
``kill -9`` of the edge but not a power cut, and costs no fsync. Concurrent
``put()`` calls are *group-committed*: whatever arrives while a commit is running
is written by the next single transaction, so the fsync cost is shared by all
collectors (docs/edge.md and docs/benchmarks.md give the figures).

Bounds and overflow
-------------------
The spool holds at most ``max_bytes`` of point data (wire JSON plus a fixed
per-row overhead; the database file is somewhat larger) and nothing older than
``max_age_s`` (by the time it was spooled: source clocks are not trusted). When a
put would exceed ``max_bytes`` the oldest points go first, down to 90 % of the
bound so that eviction is not paid on every put; points that have already been
formed into a batch are evicted like any other (the batch is re-sent with what is
left, or not at all, so ingest sees the gap in the sequence). Every eviction is
counted (``dropped_overflow``, ``dropped_age``) and logged.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import structlog

from zhizao.errors import SpoolError
from zhizao.wire import CONTRACT_VERSION, MAX_PAYLOAD_BYTES, MAX_POINTS_PER_BATCH, Point

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Bytes charged per point on top of its JSON body: SQLite's row header, the id and
#: timestamp, and the page slack; keeps ``max_bytes`` close to the file's growth.
ROW_OVERHEAD = 24
#: Eviction frees down to this fraction of ``max_bytes``.
LOW_WATERMARK = 0.9
#: Age eviction runs at most this often (seconds); it is one indexed range delete.
AGE_CHECK_INTERVAL_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spooled_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    points INTEGER NOT NULL
);
"""


class Durability(StrEnum):
    FSYNC = "fsync"  # synchronous=FULL: survives kill -9 and power loss
    OS = "os"  # synchronous=NORMAL: survives kill -9, not power loss


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """A batch formed from the spool, ready to publish as it is."""

    seq: int
    first_id: int
    last_id: int
    sent_at: int
    points: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth_points: int
    depth_bytes: int
    unbatched_points: int
    pending_batches: int
    oldest_spooled_at_ms: int | None
    next_seq: int
    accepted_total: int
    acked_points_total: int
    acked_batches_total: int
    dropped_overflow_total: int
    dropped_age_total: int


@dataclass(slots=True)
class _WorkerState:
    """The spool's in-memory state; changed only on the worker thread."""

    batches: dict[int, tuple[int, int]] = field(default_factory=dict)
    next_seq: int = 0
    batched_upto: int = 0
    depth_points: int = 0
    depth_bytes: int = 0
    unbatched: int = 0
    unbatched_since: float | None = None
    oldest_ms: int | None = None
    last_age_check: float = 0.0
    accepted: int = 0
    acked_points: int = 0
    acked_batches: int = 0
    dropped_overflow: int = 0
    dropped_age: int = 0
    version: int = 0

    def view(self) -> _View:
        self.version += 1
        return _View(
            version=self.version,
            batches=tuple(sorted(self.batches)),
            next_seq=self.next_seq,
            depth_points=self.depth_points,
            depth_bytes=self.depth_bytes,
            unbatched=self.unbatched,
            unbatched_since=self.unbatched_since,
            oldest_ms=self.oldest_ms,
            accepted=self.accepted,
            acked_points=self.acked_points,
            acked_batches=self.acked_batches,
            dropped_overflow=self.dropped_overflow,
            dropped_age=self.dropped_age,
        )


@dataclass(frozen=True, slots=True)
class _View:
    """A snapshot of :class:`_WorkerState` for the event loop (stats, wait_ready)."""

    version: int = 0
    batches: tuple[int, ...] = ()  # sequence numbers of the formed batches, ascending
    next_seq: int = 0
    depth_points: int = 0
    depth_bytes: int = 0
    unbatched: int = 0
    unbatched_since: float | None = None
    oldest_ms: int | None = None
    accepted: int = 0
    acked_points: int = 0
    acked_batches: int = 0
    dropped_overflow: int = 0
    dropped_age: int = 0


class Spool:
    """A bounded, durable FIFO of points with batch formation for the uplink.

    Implements :class:`edge.sink.Sink`. Use ``async with Spool(...) as spool`` or
    ``await spool.open()`` / ``await spool.close()``.
    """

    def __init__(
        self,
        path: Path,
        *,
        enterprise: str,
        edge: str,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float = 7 * 24 * 3600.0,
        durability: Durability = Durability.FSYNC,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.enterprise = enterprise
        self.edge = edge
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.durability = Durability(durability)
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._queue: list[tuple[list[bytes], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        # What is on disk, mirrored in memory so that stats and wait_ready never query.
        # The worker thread alone changes it (``_w``); the event loop reads only the
        # immutable snapshot (``_view``) that each worker call hands back, so the loop
        # never iterates something the worker is changing.
        self._w = _WorkerState()
        self._view = _View()

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Spool:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        await self._call(self._open_db)
        log.info(
            "spool opened",
            path=str(self.path),
            points=self._view.depth_points,
            batches=len(self._view.batches),
            next_seq=self._view.next_seq,
            durability=str(self.durability),
        )

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._executor is None:
            return
        await self._call(self._close_db)
        self._executor.shutdown(wait=True)
        self._executor = None

    # -- the Sink protocol ---------------------------------------------------------

    async def put(self, points: Sequence[Point]) -> None:
        """Append points; returns when they are committed (see the fsync policy)."""
        if not points:
            return
        bodies = [p.model_dump_json(exclude_none=True).encode() for p in points]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((bodies, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="spool-writer")
        # Shielded: a cancelled caller must not leave a half-known outcome; the write
        # completes either way.
        await asyncio.shield(done)

    async def _write_queued(self) -> None:
        """Group commit: everything queued while a commit runs goes in the next one."""
        while self._queue:
            work, self._queue = self._queue, []
            bodies = [body for chunk, _ in work for body in chunk]
            try:
                await self._call(self._insert, bodies)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting put()
                error = exc if isinstance(exc, SpoolError) else SpoolError(str(exc))
                for _, done in work:
                    if not done.done():
                        done.set_exception(error)
                continue
            for _, done in work:
                if not done.done():
                    done.set_result(None)
            self._changed.set()

    # -- batches for the uplink ------------------------------------------------------

    async def wait_ready(
        self, max_points: int, max_wait_s: float, exclude: frozenset[int] = frozenset()
    ) -> None:
        """Return when a batch is due: a formed batch not in ``exclude`` waits to be
        (re)sent, ``max_points`` points are waiting, or the oldest waiting point has
        waited ``max_wait_s``."""
        while True:
            self._changed.clear()
            if any(seq not in exclude for seq in self._view.batches):
                return
            if self._view.unbatched >= max_points:
                return
            timeout: float | None = None
            if self._view.unbatched > 0 and self._view.unbatched_since is not None:
                waited = time.monotonic() - self._view.unbatched_since
                if waited >= max_wait_s:
                    return
                timeout = max_wait_s - waited
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                continue

    def kick(self) -> None:
        """Wake :meth:`wait_ready` (the uplink released a batch it had in flight)."""
        self._changed.set()

    async def next_batch(
        self,
        max_points: int = 1000,
        max_bytes: int = MAX_PAYLOAD_BYTES // 2,
        exclude: frozenset[int] = frozenset(),
    ) -> SpooledBatch | None:
        """The oldest batch not in ``exclude``: a formed one first, else a new one."""
        max_points = min(max_points, MAX_POINTS_PER_BATCH)
        for seq in self._view.batches:
            if seq in exclude:
                continue
            batch = await self._call(self._load_batch, seq)
            if batch is not None:
                return batch
        if self._view.unbatched == 0:
            return None
        return await self._call(self._form_batch, max_points, max_bytes)

    async def ack(self, seq: int) -> None:
        """The broker acknowledged batch ``seq``: its points leave the spool."""
        await self._call(self._ack, seq)
        self._changed.set()

    async def evict_expired(self) -> None:
        """Drop points older than ``max_age_s`` now (also done by put and next_batch)."""
        await self._call(self._evict_age, True)

    @property
    def stats(self) -> SpoolStats:
        return SpoolStats(
            depth_points=self._view.depth_points,
            depth_bytes=self._view.depth_bytes,
            unbatched_points=self._view.unbatched,
            pending_batches=len(self._view.batches),
            oldest_spooled_at_ms=self._view.oldest_ms,
            next_seq=self._view.next_seq,
            accepted_total=self._view.accepted,
            acked_points_total=self._view.acked_points,
            acked_batches_total=self._view.acked_batches,
            dropped_overflow_total=self._view.dropped_overflow,
            dropped_age_total=self._view.dropped_age,
        )

    @property
    def last_seq(self) -> int | None:
        """The last sequence number handed out, if any (for the birth message)."""
        return self._view.next_seq - 1 if self._view.next_seq else None

    # -- worker thread ------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the worker thread; then take the worker's snapshot on the loop."""
        if self._executor is None:
            raise SpoolError(f"spool {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            result, view = await loop.run_in_executor(self._executor, self._in_worker, fn, args)
        except sqlite3.Error as exc:
            # Part of the work may have been done (an eviction before the failing
            # statement): take the worker's view of it before reporting the failure.
            self._apply(await loop.run_in_executor(self._executor, self._w.view))
            raise SpoolError(f"spool {self.path}: {exc}") from exc
        self._apply(view)
        return result

    def _in_worker(self, fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[T, _View]:
        result = fn(*args)
        return result, self._w.view()

    def _apply(self, view: _View) -> None:
        # Worker calls run one at a time in submission order; the version guards against
        # a resumption order that differs from it.
        if view.version >= self._view.version:
            self._view = view

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolError(f"spool {self.path} is not open")
        return self._db

    def _open_db(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"spool {self.path}: cannot switch to WAL mode (got {mode})")
        sync = "FULL" if self.durability is Durability.FSYNC else "NORMAL"
        db.execute(f"PRAGMA synchronous={sync}")
        db.executescript(_SCHEMA)
        self._db = db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        for key, expected in (("enterprise", self.enterprise), ("edge", self.edge)):
            found = meta.get(key)
            if found is not None and found != expected:
                db.close()
                self._db = None
                # A spool is one edge's sequence: sharing it would break gap detection.
                raise SpoolError(f"spool {self.path} belongs to {key} {found!r}, not {expected!r}")
        if "edge" not in meta:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [
                    ("enterprise", self.enterprise),
                    ("edge", self.edge),
                    ("next_seq", "0"),
                    ("batched_upto", "0"),
                ],
            )
            db.execute("COMMIT")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._w.next_seq = int(meta["next_seq"])
        self._w.batched_upto = int(meta["batched_upto"])
        self._w.batches = {
            seq: (first, last)
            for seq, first, last in db.execute("SELECT seq, first_id, last_id FROM batches")
        }
        self._refresh_counts()
        if self._w.unbatched:
            # Left over from before a restart: due at once, no batching delay.
            self._w.unbatched_since = time.monotonic() - 1e9

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _refresh_counts(self) -> None:
        db = self._conn()
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM points"
        ).fetchone()
        self._w.depth_points = int(count)
        self._w.depth_bytes = int(size) + ROW_OVERHEAD * int(count)
        self._w.unbatched = int(
            db.execute(
                "SELECT COUNT(*) FROM points WHERE id > ?", (self._w.batched_upto,)
            ).fetchone()[0]
        )
        if self._w.unbatched == 0:
            self._w.unbatched_since = None
        elif self._w.unbatched_since is None:
            self._w.unbatched_since = time.monotonic()
        self._refresh_oldest()

    def _refresh_oldest(self) -> None:
        row = self._conn().execute("SELECT spooled_at FROM points ORDER BY id LIMIT 1").fetchone()
        self._w.oldest_ms = int(row[0]) if row else None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _insert(self, bodies: list[bytes]) -> None:
        db = self._conn()
        now = self._now_ms()
        added = sum(len(b) for b in bodies) + ROW_OVERHEAD * len(bodies)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO points(spooled_at, body) VALUES (?, ?)", [(now, b) for b in bodies]
            )
            evicted = False
            if self._w.depth_bytes + added > self.max_bytes:
                self._evict_overflow(self._w.depth_bytes + added)
                evicted = True
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._w.accepted += len(bodies)
        if evicted:
            self._refresh_counts()
        else:
            self._w.depth_points += len(bodies)
            self._w.depth_bytes += added
            if self._w.unbatched == 0:
                self._w.unbatched_since = time.monotonic()
            self._w.unbatched += len(bodies)
            if self._w.oldest_ms is None:
                self._w.oldest_ms = now
        self._evict_age(False)

    def _evict_overflow(self, total: int) -> None:
        """Delete the oldest points until the spool is under the low watermark.

        Runs inside the caller's transaction. Reads only the prefix it deletes.
        """
        db = self._conn()
        need = total - int(self.max_bytes * LOW_WATERMARK)
        freed = 0
        dropped = 0
        cut = 0
        for row_id, size in db.execute("SELECT id, length(body) FROM points ORDER BY id"):
            freed += int(size) + ROW_OVERHEAD
            dropped += 1
            cut = int(row_id)
            if freed >= need:
                break
        self._delete_upto(cut)
        self._w.dropped_overflow += dropped
        log.warning(
            "spool full: oldest points dropped",
            path=str(self.path),
            dropped=dropped,
            dropped_total=self._w.dropped_overflow,
            max_bytes=self.max_bytes,
        )

    def _evict_age(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._w.last_age_check < AGE_CHECK_INTERVAL_S:
            return
        self._w.last_age_check = now
        if self._w.oldest_ms is None:
            return
        cutoff = self._now_ms() - int(self.max_age_s * 1000)
        if self._w.oldest_ms >= cutoff:
            return
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            # Ids grow with spooled_at, so the expired points are a prefix.
            young = db.execute(
                "SELECT id FROM points WHERE spooled_at >= ? ORDER BY id LIMIT 1", (cutoff,)
            ).fetchone()
            if young is None:
                last = db.execute("SELECT MAX(id) FROM points").fetchone()[0]
                cut = int(last) if last is not None else 0
            else:
                cut = int(young[0]) - 1
            dropped = int(
                db.execute("SELECT COUNT(*) FROM points WHERE id <= ?", (cut,)).fetchone()[0]
            )
            self._delete_upto(cut)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._w.dropped_age += dropped
        self._refresh_counts()
        if dropped:
            log.warning(
                "spool: points older than max_age dropped",
                path=str(self.path),
                dropped=dropped,
                dropped_total=self._w.dropped_age,
                max_age_s=self.max_age_s,
            )

    def _delete_upto(self, cut: int) -> None:
        db = self._conn()
        db.execute("DELETE FROM points WHERE id <= ?", (cut,))
        db.execute("DELETE FROM batches WHERE last_id <= ?", (cut,))
        for seq, (_, last) in list(self._w.batches.items()):
            if last <= cut:
                del self._w.batches[seq]
        if cut > self._w.batched_upto:
            # Unbatched points were evicted too: later batches start after them, so
            # ids stay contiguous per batch.
            self._w.batched_upto = cut
            db.execute("UPDATE meta SET value = ? WHERE key = 'batched_upto'", (str(cut),))

    def _payload(self, seq: int, sent_at: int, bodies: list[bytes]) -> bytes:
        # Same bytes as zhizao.wire.encode_batch, without re-validating every point:
        # each body was produced by Point.model_dump_json when it was spooled.
        head = (
            f'{{"v":{CONTRACT_VERSION},"enterprise":"{self.enterprise}",'
            f'"edge":"{self.edge}","seq":{seq},"sent_at":{sent_at},"points":['
        ).encode()
        return head + b",".join(bodies) + b"]}"

    def _load_batch(self, seq: int) -> SpooledBatch | None:
        db = self._conn()
        row = db.execute(
            "SELECT first_id, last_id, sent_at FROM batches WHERE seq = ?", (seq,)
        ).fetchone()
        if row is None:
            self._w.batches.pop(seq, None)
            return None
        first, last, sent_at = (int(v) for v in row)
        bodies = [
            bytes(b)
            for (b,) in db.execute(
                "SELECT body FROM points WHERE id BETWEEN ? AND ? ORDER BY id", (first, last)
            )
        ]
        if not bodies:
            # Every point of the batch was evicted: nothing left to send.
            db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            self._w.batches.pop(seq, None)
            return None
        return SpooledBatch(
            seq, first, last, sent_at, len(bodies), self._payload(seq, sent_at, bodies)
        )

    def _form_batch(self, max_points: int, max_bytes: int) -> SpooledBatch | None:
        self._evict_age(False)
        db = self._conn()
        rows = db.execute(
            "SELECT id, body FROM points WHERE id > ? ORDER BY id LIMIT ?",
            (self._w.batched_upto, max_points),
        ).fetchall()
        if not rows:
            self._w.unbatched = 0
            self._w.unbatched_since = None
            return None
        bodies: list[bytes] = []
        size = 0
        last = 0
        for row_id, body in rows:
            if bodies and size + len(body) + 1 > max_bytes:
                break
            bodies.append(bytes(body))
            size += len(body) + 1
            last = int(row_id)
        first = int(rows[0][0])
        seq = self._w.next_seq
        sent_at = self._now_ms()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO batches(seq, first_id, last_id, sent_at, points) VALUES (?,?,?,?,?)",
                (seq, first, last, sent_at, len(bodies)),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(seq + 1),))
            db.execute("UPDATE meta SET value = ? WHERE key = 'batched_upto'", (str(last),))
            # Committed (and, with fsync durability, on disk) before it is published:
            # a batch that reached the broker can never be re-formed under another seq.
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._w.next_seq = seq + 1
        self._w.batched_upto = last
        self._w.batches[seq] = (first, last)
        self._w.unbatched -= len(bodies)
        self._w.unbatched_since = time.monotonic() if self._w.unbatched > 0 else None
        return SpooledBatch(
            seq, first, last, sent_at, len(bodies), self._payload(seq, sent_at, bodies)
        )

    def _ack(self, seq: int) -> None:
        db = self._conn()
        span = self._w.batches.get(seq)
        if span is None:
            return  # evicted meanwhile, or acknowledged twice
        first, last = span
        db.execute("BEGIN IMMEDIATE")
        try:
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM points"
                " WHERE id BETWEEN ? AND ?",
                (first, last),
            ).fetchone()
            db.execute("DELETE FROM points WHERE id BETWEEN ? AND ?", (first, last))
            db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        del self._w.batches[seq]
        self._w.depth_points -= int(count)
        self._w.depth_bytes -= int(size) + ROW_OVERHEAD * int(count)
        self._w.acked_points += int(count)
        self._w.acked_batches += 1
        self._refresh_oldest()
