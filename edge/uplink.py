"""The uplink: batches from the spool to the platform broker, QoS 1 (DESIGN §5, §9).

Design
------
Two tasks run under :meth:`Uplink.run`: the :class:`~zhizao.mqtt.MqttSession`
(connect, reconnect with backoff) and the *pump*. The pump waits until it is
connected, has a free slot in its window of ``inflight_batches``, and the spool says
a batch is due (``batch_max_points`` waiting, or the oldest waiting for
``batch_max_wait_s``, or a batch formed before and not acknowledged). It then asks
the spool for the next batch, which gets (or already has) its sequence number, and
publishes it. Batches are formed only when they can be sent, so after an outage the
backlog leaves in full batches.

A batch leaves the spool only on its PUBACK (``on_publish`` with the message id):
the acknowledgement deletes its points, then frees its slot. Until then the batch
stays in the spool; if the edge dies, it is sent again after the restart with the
same sequence number and bytes. Within one connection paho re-sends unacknowledged
messages itself on reconnect. A batch the broker rejects (MQTT 5 reason code ≥ 0x80,
e.g. not authorised) stays in the spool and is retried after a pause, and the
rejection is counted: data is never dropped because the broker said no.

Status: on every connect a retained ``EdgeStatus`` *online* (the birth) goes to
``.../status``; the Will registered at connect is an *offline* status with the
connect time; a clean shutdown publishes *offline* (reason ``shutdown``) itself,
because a clean disconnect suppresses the Will.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from paho.mqtt.enums import MQTTProtocolVersion

from edge.spool import Spool, SpooledBatch
from zhizao import __version__
from zhizao.errors import MqttError, PublishRejected
from zhizao.mqtt import ClientFactory, MqttSession, Will, paho_client
from zhizao.wire import Connectivity, EdgeStatus, data_topic, encode_status, status_topic

if TYPE_CHECKING:
    from edge.config import UplinkConfig

log = structlog.get_logger(__name__)

#: Pause before a batch the broker rejected is offered again.
REJECT_RETRY_S = 5.0
SHUTDOWN_STATUS_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class UplinkStats:
    connected: bool
    protocol: str
    connects: int
    batches_sent: int
    points_sent: int
    batches_rejected: int
    batches_failed: int
    inflight: int
    last_acked_seq: int | None


class Uplink:
    """Publishes the spool's batches and the edge's status to the platform broker."""

    def __init__(
        self,
        config: UplinkConfig,
        *,
        enterprise: str,
        edge_id: str,
        spool: Spool,
        client_factory: ClientFactory = paho_client,
    ) -> None:
        self.config = config
        self.enterprise = enterprise
        self.edge_id = edge_id
        self._spool = spool
        self._data_topic = data_topic(enterprise, edge_id)
        self._status_topic = status_topic(enterprise, edge_id)
        self.session = MqttSession(
            config,
            client_id=config.client_id or f"zhizao-edge-{enterprise}-{edge_id}",
            name="uplink",
            persistent=True,
            will=self._will(),
            on_connected=self._on_connected,
            client_factory=client_factory,
        )
        self._inflight: dict[int, SpooledBatch] = {}
        self._slot_freed = asyncio.Event()
        self._outcomes: asyncio.Queue[tuple[SpooledBatch, BaseException | None]] = asyncio.Queue()
        self._batches_sent = 0
        self._points_sent = 0
        self._rejected = 0
        self._failed = 0
        self._last_acked: int | None = None
        #: notified after every PUBACK, rejection or failure (tests, the demo)
        self.progress = asyncio.Condition()

    @property
    def stats(self) -> UplinkStats:
        return UplinkStats(
            connected=self.session.connected,
            protocol="5" if self.session.protocol is MQTTProtocolVersion.MQTTv5 else "3.1.1",
            connects=self.session.connects,
            batches_sent=self._batches_sent,
            points_sent=self._points_sent,
            batches_rejected=self._rejected,
            batches_failed=self._failed,
            inflight=len(self._inflight),
            last_acked_seq=self._last_acked,
        )

    async def run(self) -> None:
        """Publish until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.session.run(), name="uplink-session")
            tasks.create_task(self._pump(), name="uplink-pump")
            tasks.create_task(self._settle(), name="uplink-acks")

    async def close(self) -> None:
        """Say goodbye (retained offline status) and disconnect, if connected."""
        if not self.session.connected:
            return
        done = self.session.publish(
            self._status_topic,
            encode_status(self._status(Connectivity.OFFLINE, "shutdown")),
            qos=1,
            retain=True,
        )
        try:
            async with asyncio.timeout(SHUTDOWN_STATUS_TIMEOUT_S):
                await done
        except (TimeoutError, MqttError) as exc:
            log.warning("offline status not acknowledged", error=str(exc))
        await self.session.disconnect()

    async def wait_acked(self, points: int) -> None:
        """Wait until ``points`` points in total have been acknowledged (tests, demo)."""
        await self.wait_for(lambda stats: stats.points_sent >= points)

    async def wait_for(self, predicate: Callable[[UplinkStats], bool]) -> None:
        """Wait until ``predicate(stats)`` holds, checked after every outcome."""
        async with self.progress:
            await self.progress.wait_for(lambda: predicate(self.stats))

    # -- internals ------------------------------------------------------------------

    def _status(self, status: Connectivity, reason: str | None = None) -> EdgeStatus:
        return EdgeStatus(
            enterprise=self.enterprise,
            edge=self.edge_id,
            status=status,
            ts=int(time.time() * 1000),
            reason=reason,
            last_seq=self._spool.last_seq,
            software=f"zhizao-edge {__version__}",
        )

    async def _on_connected(self) -> None:
        # Not awaited: if the connection drops now, paho re-sends it on reconnect, and
        # waiting here would stall the session task that does the reconnecting.
        birth = self.session.publish(
            self._status_topic,
            encode_status(self._status(Connectivity.ONLINE)),
            qos=1,
            retain=True,
        )
        birth.add_done_callback(_log_status_failure)
        # The Will for the next connect carries the time of that connect.
        self.session.set_will(self._will())

    def _will(self) -> Will:
        status = self._status(Connectivity.OFFLINE, "connection lost")
        return Will(self._status_topic, encode_status(status), qos=1, retain=True)

    async def _pump(self) -> None:
        cfg = self.config
        while True:
            await self.session.wait_connected()
            if len(self._inflight) >= cfg.inflight_batches:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            await self._spool.wait_ready(
                cfg.batch_max_points, cfg.batch_max_wait_s, frozenset(self._inflight)
            )
            if not self.session.connected:
                continue
            batch = await self._spool.next_batch(
                cfg.batch_max_points, cfg.batch_max_bytes, frozenset(self._inflight)
            )
            if batch is None:
                continue
            self._inflight[batch.seq] = batch
            done = self.session.publish(self._data_topic, batch.payload, qos=1)
            done.add_done_callback(functools.partial(self._published, batch))

    def _published(self, batch: SpooledBatch, done: asyncio.Future[None]) -> None:
        error = MqttError("cancelled") if done.cancelled() else done.exception()
        self._outcomes.put_nowait((batch, error))

    async def _settle(self) -> None:
        """Apply PUBACKs (and failures) in order: ack in the spool, then free the slot."""
        while True:
            batch, error = await self._outcomes.get()
            if error is None:
                await self._spool.ack(batch.seq)
                self._batches_sent += 1
                self._points_sent += batch.points
                self._last_acked = batch.seq
            elif isinstance(error, PublishRejected):
                self._rejected += 1
                log.error(
                    "broker rejected a batch; kept for retry", seq=batch.seq, error=str(error)
                )
                self._release_later(batch.seq)
            else:
                self._failed += 1
                log.warning("batch not acknowledged; will resend", seq=batch.seq, error=str(error))
            if not isinstance(error, PublishRejected):
                self._inflight.pop(batch.seq, None)
                self._slot_freed.set()
                self._spool.kick()
            async with self.progress:
                self.progress.notify_all()

    def _release_later(self, seq: int) -> None:
        def release() -> None:
            self._inflight.pop(seq, None)
            self._slot_freed.set()
            self._spool.kick()

        asyncio.get_running_loop().call_later(REJECT_RETRY_S, release)


def _log_status_failure(done: asyncio.Future[None]) -> None:
    error = None if done.cancelled() else done.exception()
    if error is not None:
        # The next connect publishes a fresh birth; nothing else to do.
        log.warning("birth status not acknowledged", error=str(error))
