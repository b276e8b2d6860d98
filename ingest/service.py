"""The ingest worker: broker → validate and authorise → batch → commit → acknowledge.

Three activities share one event loop:

* the broker adapter reads messages into an inbox (bounded by the in-flight window);
* the filler converts inbox messages into fact rows and dead letters and closes a
  batch by size (points or messages) or age;
* the committer writes one batch at a time and then acknowledges its messages.

Filler and committer are joined by a queue of one batch, so conversion of the next
batch overlaps the database round trips of the current one, and a slow or absent
database stops the filler, then the inbox, then the broker (no acknowledgements):
backpressure end to end, no unbounded buffer anywhere.

On SIGTERM (or ``stop``) the worker stops reading, finishes and commits the batch in
hand, acknowledges it, and disconnects; messages not yet in a batch stay
unacknowledged in the broker's session and come back on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog

from ingest.broker import Broker
from ingest.convert import Converted, Converter, Inbound
from ingest.directory import Directory
from ingest.metrics import IngestMetrics
from ingest.rollup_service import RollupMetrics, RollupService
from ingest.settings import IngestSettings
from ingest.writer import (
    BatchWriter,
    CommitResult,
    Database,
    PendingBatch,
    ShutdownWhileUnavailable,
)
from zhizao.errors import ContractError
from zhizao.health import HealthServer
from zhizao.mqtt import ClientFactory, paho_client
from zhizao.wire import parse_topic

log = structlog.get_logger("ingest")

#: Points converted between turns given to the rest of the loop. Conversion is the
#: CPU-heavy part; the committer's round trips wait for these turns, so a coarse value
#: (64 messages of 200 points, ~60 ms) left the database idle between statements.
_YIELD_EVERY_POINTS = 1000


class Pipeline:
    def __init__(
        self,
        settings: IngestSettings,
        broker: Broker,
        converter: Converter,
        writer: BatchWriter,
        metrics: IngestMetrics,
    ) -> None:
        self._settings = settings
        self._broker = broker
        self._converter = converter
        self._writer = writer
        self._metrics = metrics
        self._queue: asyncio.Queue[PendingBatch | None] = asyncio.Queue(maxsize=1)

    async def run(self, stop: asyncio.Event) -> None:
        committer = asyncio.create_task(self._commit_loop(), name="ingest-committer")
        filler = asyncio.create_task(self._fill_loop(stop), name="ingest-filler")
        # If the committer dies (a bug, not the database: that is retried), the filler
        # would wait for it forever: fail the worker instead, loudly.
        await asyncio.wait((filler, committer), return_when=asyncio.FIRST_COMPLETED)
        if committer.done() and not filler.done():
            filler.cancel()
            await asyncio.gather(filler, return_exceptions=True)
            committer.result()  # raises what killed it
            raise RuntimeError("the committer stopped before the filler")
        try:
            filler.result()
        finally:
            if not committer.done():
                await self._queue.put(None)
            await committer

    async def _convert(self, msg: Inbound) -> Converted:
        try:
            return await self._converter.convert(msg)
        except ShutdownWhileUnavailable:
            raise
        except Exception as exc:
            # A bug in conversion must cost one message, not the worker. The message
            # is dead-lettered with the error so it can be replayed once fixed.
            log.exception("conversion failed", topic=msg.topic)
            out = Converted(message_dead=True)
            with contextlib.suppress(ContractError):  # an unreadable topic names no one
                topic = parse_topic(msg.topic)
                out.enterprise, out.edge_id = topic.enterprise, topic.edge
            out.dead.append(out.message_letter(msg, f"internal: {type(exc).__name__}: {exc}"[:500]))
            return out

    async def _fill_loop(self, stop: asyncio.Event) -> None:
        settings = self._settings
        broker = self._broker
        inbox = broker.inbox
        metrics = self._metrics
        max_wait = settings.batch_max_wait_ms / 1000
        batch = PendingBatch()
        since_yield = 0
        while not stop.is_set():
            if not inbox:
                timeout = max_wait - (time.monotonic() - batch.started) if batch else 1.0
                if timeout > 0:
                    broker.arrived.clear()
                    stop_wait = asyncio.ensure_future(stop.wait())
                    arrived = asyncio.ensure_future(broker.arrived.wait())
                    await asyncio.wait(
                        (stop_wait, arrived), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    stop_wait.cancel()
                    arrived.cancel()
                if not inbox:
                    if batch and time.monotonic() - batch.started >= max_wait:
                        await self._queue.put(batch)
                        batch = PendingBatch()
                    continue
            msg = inbox.popleft()
            broker.resume_if_drained()
            try:
                converted = await self._convert(msg)
            except ShutdownWhileUnavailable:
                # Stopping with the database gone: nothing more can be committed; all
                # that is not acknowledged comes back from the broker next time.
                log.warning("database unavailable at shutdown; leaving messages for redelivery")
                broker.forget([*(m for m, _ in batch.entries), msg, *inbox])
                inbox.clear()
                return
            channel = "status" if msg.topic.endswith("/status") else "data"
            metrics.messages_received.labels(channel).inc()
            if converted.points:
                metrics.points_received.inc(converted.points)
            batch.add(msg, converted)
            if (
                batch.rows >= settings.batch_max_points
                or len(batch) >= settings.batch_max_messages
                or time.monotonic() - batch.started >= max_wait
            ):
                await self._queue.put(batch)
                batch = PendingBatch()
                since_yield = 0
            else:
                since_yield += converted.points or 1
                if since_yield >= _YIELD_EVERY_POINTS:
                    since_yield = 0
                    await asyncio.sleep(0)
        # Stopping: the batch in hand is committed; the inbox stays unacknowledged.
        if batch:
            await self._queue.put(batch)
        if inbox:
            log.info("leaving messages unacknowledged for redelivery", messages=len(inbox))
            broker.forget(list(inbox))
            inbox.clear()

    async def _commit_loop(self) -> None:
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            try:
                result = await self._writer.commit(batch)
            except ShutdownWhileUnavailable:
                log.warning(
                    "database still unavailable at shutdown; batch left for redelivery",
                    messages=len(batch),
                )
                self._broker.forget([m for m, _ in batch.entries])
                continue
            self._acknowledge(batch, result)
            # Not kept while waiting for the next one: after a burst, the payloads and
            # rows of the last batch would stay in memory until traffic resumed.
            del batch, result

    def _acknowledge(self, batch: PendingBatch, result: CommitResult) -> None:
        metrics = self._metrics
        now_ms = time.time_ns() // 1_000_000
        for msg, converted in batch.entries:
            self._broker.ack(msg)
            if converted.newest_ts_ms is not None:
                lag = (now_ms - converted.newest_ts_ms) / 1000
                metrics.lag_seconds.observe(lag)
                metrics.lag_samples.append(lag)
            if converted.message_dead:
                log.warning(
                    "message dead-lettered", topic=msg.topic, reason=converted.dead[0].reason
                )
        metrics.messages_acked += len(batch)
        metrics.points_committed += result.rows_new
        for table, count in result.inserted.items():
            metrics.rows_written.labels(table).inc(count)
        metrics.rows_duplicate.inc(result.rows_offered - result.rows_new)
        metrics.batch_points.observe(result.rows_offered)
        if result.dead_messages:
            metrics.dead_letters.labels("message").inc(result.dead_messages)
        if result.dead_points:
            metrics.dead_letters.labels("point").inc(result.dead_points)
        for event in result.events:
            size = event.last_seq - event.first_seq + 1
            if event.kind == "gap":
                metrics.sequence_gaps.inc(size)
                log.warning(
                    "sequence gap",
                    edge_pk=event.edge_pk,
                    first=event.first_seq,
                    last=event.last_seq,
                )
            elif event.kind == "late":
                metrics.sequence_late.inc(size)
            elif event.kind == "conflict":
                metrics.sequence_conflicts.inc(size)
                log.warning("sequence conflict", edge_pk=event.edge_pk, seq=event.first_seq)
            else:
                metrics.sequence_replays.inc(size)
        log.debug(
            "batch committed", messages=len(batch), rows=result.rows_offered, new=result.rows_new
        )


def _install_signals(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or a platform without signals: caller stops us
        installed.append(sig)
    return installed


def _rollup_service(settings: IngestSettings, metrics: IngestMetrics) -> RollupService | None:
    """The supervised KPI rollups, when this worker runs them (the demo, one-host trials)."""
    if not settings.rollups:
        return None
    return RollupService(
        settings.database.url,
        settings.rollup,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
        metrics=RollupMetrics(metrics.registry),
    )


def _tune_gc(young_threshold: int) -> Callable[[], None]:
    """Set the young generation's threshold (IngestSettings.gc_young_threshold).

    Returns what puts the previous thresholds back.
    """
    before = gc.get_threshold()
    if young_threshold:
        gc.set_threshold(young_threshold, *before[1:])
    return lambda: gc.set_threshold(*before)


async def _start_health(
    settings: IngestSettings,
    metrics: IngestMetrics,
    broker: Broker,
    db: Database,
    rollups: RollupService | None,
) -> HealthServer | None:
    if settings.health_port is None:
        return None

    def status() -> tuple[bool, dict[str, Any]]:
        broker_ok = broker.connected
        db_ok = db.healthy
        # Connected but refused its subscription by the broker's ACL: nothing would
        # ever arrive, so the worker is failing, with the topic and the reason.
        refused = broker.session.problems()
        # Embedded rollups that fail make the worker failing too: silence was the bug.
        rollups_ok = rollups is None or rollups.healthy
        healthy = broker_ok and db_ok and not refused and rollups_ok
        doc: dict[str, Any] = {
            "healthy": healthy,
            "broker": settings.broker.address,
            "broker_connected": broker_ok,
            "broker_error": None if broker_ok else broker.session.last_error,
            "subscriptions_refused": refused,
            "database_ok": db_ok,
            "inflight": len(broker.inbox),
            "inflight_bytes": broker.inflight_bytes,
            "messages_acked": metrics.messages_acked,
            "rows_committed": metrics.points_committed,
        }
        if rollups is not None:
            doc["rollups"] = rollups.health()
        return healthy, doc

    health = HealthServer(
        "ingest",
        status,
        metrics.registry,
        host=settings.health_host,
        port=settings.health_port,
        degraded_status="failing",
    )
    await health.start()
    metrics.health_port = health.port
    return health


async def run_ingest(
    settings: IngestSettings,
    *,
    stop: asyncio.Event | None = None,
    metrics: IngestMetrics | None = None,
    client_factory: ClientFactory = paho_client,
) -> None:
    """Run one ingest worker until ``stop`` is set (or SIGTERM/SIGINT when not given).

    ``metrics`` lets an embedding process (the demo, tests, benchmarks) read the
    worker's figures; ``client_factory`` replaces the paho client in unit tests.
    """
    signals: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        signals = _install_signals(stop)
    metrics = metrics or IngestMetrics()
    db = Database(
        settings.database.url,
        metrics,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
    )
    directory = Directory(
        db,
        miss_retry_s=settings.registry_miss_retry_s,
        ttl_s=settings.registry_ttl_s,
        max_metric_names=settings.max_metric_names,
    )
    converter = Converter(directory, max_future_ms=int(settings.max_future_s * 1000))
    broker = Broker(settings, metrics, client_factory=client_factory)
    writer = BatchWriter(
        db,
        metrics,
        rows_by_point=converter.rows_by_point,
        digest_retention_s=settings.sequence_digest_retention_s,
    )
    pipeline = Pipeline(settings, broker, converter, writer, metrics)

    rollups = _rollup_service(settings, metrics)
    health = await _start_health(settings, metrics, broker, db, rollups)
    metrics.database_ok.set(1)
    log.info(
        "ingest starting",
        client_id=settings.client_id,
        shared_group=settings.shared_group,
        protocol=settings.mqtt_protocol,
    )
    restore_gc = _tune_gc(settings.gc_young_threshold)
    broker_task = asyncio.create_task(broker.run(stop), name="ingest-broker")
    pipeline_task = asyncio.create_task(pipeline.run(stop), name="ingest-pipeline")
    rollup_task = (
        None if rollups is None else asyncio.create_task(rollups.run(stop), name="ingest-rollups")
    )
    stop_task = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            (stop_task, broker_task, pipeline_task), return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_task and (exc := task.exception()) is not None:
                log.error("ingest task failed", task=task.get_name(), error=repr(exc))
        log.info("ingest stopping: finishing the batch in hand")
        stop.set()
        broker.pause()
        db.give_up_at = time.monotonic() + settings.shutdown_grace_s
        await pipeline_task
        await broker_task
    finally:
        stop_task.cancel()
        for task in (broker_task, pipeline_task):
            if not task.done():
                task.cancel()
        if rollup_task is not None:
            rollup_task.cancel()
            await asyncio.gather(rollup_task, return_exceptions=True)
        await broker.close()
        if health is not None:
            await health.close()
        await db.close()
        restore_gc()
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        log.info(
            "ingest stopped",
            messages_acked=metrics.messages_acked,
            rows_committed=metrics.points_committed,
        )
