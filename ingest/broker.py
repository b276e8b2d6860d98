"""The MQTT side of ingest: the kernel's MQTT adapter (:mod:`zhizao.mqtt`) feeding an inbox.

The adapter drives paho from the event loop (every callback on the loop thread, the
connect in a worker thread so that a host that drops packets cannot stall commits
or health checks) and reconnects with backoff. What is ingest's own is below.

Flow control, the reason memory stays bounded however fast the broker pushes and
however large its messages:

* messages are acknowledged manually (``manual_ack=True``) and only after their
  batch is committed;
* with MQTT 5 the client announces a Receive Maximum of ``max_inflight``: the broker
  keeps at most that many unacknowledged messages in flight to this worker and
  holds the rest in the session queue;
* MQTT 3.1.1 has no such property, so the adapter stops reading the socket when
  ``max_inflight`` messages are buffered and resumes at half (TCP backpressure);
* whatever the protocol, it also stops reading when the payloads received and not yet
  acknowledged reach ``inflight_max_bytes``, and resumes when acknowledgements bring
  them down to half: a count alone would let 4000 messages of 4 MiB in;
* no packet above ``max_packet_bytes`` is taken: with MQTT 5 the CONNECT's Maximum
  Packet Size makes the broker drop it for this worker; with 3.1.1 it is dropped (and
  acknowledged, or it would come back after every reconnect) as it arrives;
* after a burst, once the window has drained, freed memory is handed back to the
  system (:mod:`ingest.memory`).

So at most ``inflight_max_bytes`` plus one message (the one that crossed the bound)
plus one partly read packet are held, the broker keeping the rest.

After a disconnect, message ids of the old connection mean nothing to the new one:
the adapter numbers connections and drops acknowledgements of an older one. The
broker redelivers those messages (persistent session), and the idempotent writes
absorb the ones that were already committed.

A subscription the broker refuses (SUBACK reason code, e.g. 0x87 "Not authorized")
is an error in the log and makes ``/healthz`` fail with the topic and the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import structlog

from ingest.convert import Inbound
from ingest.memory import TrimAfterBurst, trim
from ingest.metrics import IngestMetrics
from ingest.settings import IngestSettings
from zhizao.mqtt import ClientFactory, MqttSession, Received, paho_client
from zhizao.wire import subscription_filter

log = structlog.get_logger("ingest.broker")


def topics(settings: IngestSettings) -> list[str]:
    prefix = f"$share/{settings.shared_group}/" if settings.shared_group else ""
    return [prefix + subscription_filter("data"), prefix + subscription_filter("status")]


class Broker:
    """One broker connection feeding ``inbox``; acknowledges on request."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: IngestMetrics,
        *,
        client_factory: ClientFactory = paho_client,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.inbox: deque[Inbound] = deque()
        self.arrived = asyncio.Event()
        self._clock_ms = clock_ms
        self._loop = asyncio.get_running_loop()
        self.session = MqttSession(
            settings.broker,
            client_id=settings.client_id,
            name="ingest",
            persistent=True,
            subscriptions=[(topic, 1) for topic in topics(settings)],
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            on_message=self._on_message,
            on_callback_error=metrics.callback_errors.inc,
            manual_ack=True,
            receive_maximum=settings.max_inflight,
            maximum_packet_size=settings.max_packet_bytes,
            client_factory=client_factory,
        )
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._unacked = 0
        self._unacked_bytes = 0
        self._held = False  # paused for good (shutdown): acknowledgements do not resume
        self._trim = TrimAfterBurst(settings.inflight_max_bytes)
        # Read when scraped: setting gauges per message would cost more than the count.
        metrics.inflight.set_function(lambda: self._unacked)
        metrics.inflight_bytes.set_function(lambda: self._unacked_bytes)
        metrics.subscriptions_refused.set_function(lambda: len(self.session.refused))

    @property
    def connected(self) -> bool:
        return self.session.connected

    @property
    def refused(self) -> dict[str, str]:
        """Topic filter → reason, for subscriptions the broker refused."""
        return self.session.refused

    # -- acknowledgements and flow control -------------------------------------------

    @property
    def inflight_bytes(self) -> int:
        """Payload bytes received and not yet acknowledged (or forgotten)."""
        return self._unacked_bytes

    def ack(self, msg: Inbound) -> bool:
        """Acknowledge a committed message; False if its connection is gone."""
        self._release(1, len(msg.payload))
        return self.session.ack(msg)

    def forget(self, messages: list[Inbound]) -> None:
        """Messages dropped without acknowledgement (shutdown): only the gauges change."""
        self._release(len(messages), sum(len(m.payload) for m in messages))

    def _release(self, count: int, size: int) -> None:
        self._unacked -= count
        self._unacked_bytes -= size
        if self._paused:
            self.resume_if_drained()
        if self._trim.released(self._unacked_bytes, size):
            # Later, not now: the committer still holds the batch being acknowledged,
            # and a burst's drain comes in waves.
            self._loop.call_later(self._trim.delay_s, self._trim_memory)

    def _trim_memory(self) -> None:
        if self._trim.due(self._unacked_bytes) and trim():
            self.metrics.memory_trims.inc()

    def _full(self) -> bool:
        return (
            len(self.inbox) >= self.settings.max_inflight
            or self._unacked_bytes >= self.settings.inflight_max_bytes
        )

    def _maybe_pause(self) -> None:
        if not self._paused and self._full():
            self._paused = True
            self.metrics.paused.set(1)
            self.session.pause_reading()

    def resume_if_drained(self) -> None:
        if (
            self._paused
            and not self._held
            and len(self.inbox) <= self.settings.max_inflight // 2
            and self._unacked_bytes <= self.settings.inflight_max_bytes // 2
        ):
            self._paused = False
            self.metrics.paused.set(0)
            self.session.resume_reading()

    def pause(self) -> None:
        """Stop taking messages (shutdown): what the broker holds stays queued there."""
        self._paused = True
        self._held = True
        self.metrics.paused.set(1)
        self.session.pause_reading()

    # -- MQTT callbacks (the adapter wraps each: one bad message must not kill it) ----

    async def _on_connected(self) -> None:
        self.metrics.broker_connects.inc()
        self.metrics.broker_connected.set(1)
        log.info(
            "connected to broker",
            url=self.settings.broker.address,
            client_id=self.settings.client_id,
            session_present=self.session.session_present,
            topics=topics(self.settings),
        )

    def _on_disconnected(self) -> None:
        self.metrics.broker_connected.set(0)
        if not self._held:
            log.warning("disconnected from broker", reason=self.session.last_error)

    def _on_message(self, message: Received) -> None:
        self.metrics.messages_received_count += 1
        payload = message.payload
        if len(payload) + len(message.topic) > self.settings.max_packet_bytes:
            self._drop_oversize(message, len(payload))
            return
        self._unacked += 1
        self._unacked_bytes += len(payload)
        self.inbox.append(
            Inbound(
                topic=message.topic,
                payload=payload,
                mid=message.mid,
                qos=message.qos,
                retain=message.retain,
                generation=message.generation,
                received_ms=self._clock_ms(),
            )
        )
        self.arrived.set()
        self._maybe_pause()

    def _drop_oversize(self, message: Received, size: int) -> None:
        # Only MQTT 3.1.1 gets here (an MQTT 5 broker honours the Maximum Packet Size).
        # Kept, it would cost its size until committed; unacknowledged, the broker would
        # send it again after every reconnect. Acknowledged out of order: Mosquitto and
        # amqtt do not mind. No dead letter, as with MQTT 5 where the broker drops it:
        # the log and zhizao_ingest_oversize_dropped_total say it happened.
        self.metrics.oversize_dropped.inc()
        log.warning(
            "message above max_packet_bytes dropped",
            topic=message.topic,
            payload_bytes=size,
            max_packet_bytes=self.settings.max_packet_bytes,
        )
        self.session.ack(message)

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, keep the connection alive, reconnect with backoff until ``stop``.

        The connection stays up after ``stop`` (the batch in hand is still to be
        acknowledged) until :meth:`close`.
        """
        self._task = asyncio.create_task(self.session.run(), name="ingest-mqtt")
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((stopped, self._task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if self._task.done():
            self._task.result()  # what ended the session
        else:
            # No reconnect from now on; a connect still waiting for the host is
            # abandoned by close() (its thread runs out on paho's connect timeout).
            self.session.stop_reconnecting()

    async def close(self) -> None:
        """Disconnect cleanly: the session (and unacknowledged messages) stay on the broker."""
        self.session.stop_reconnecting()
        if self.session.connected:
            await self.session.disconnect()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.session.close()
