"""The MQTT device collector: JSON from devices on a local broker into the sink.

Design
------
One :class:`~zhizao.mqtt.MqttSession` (persistent session, QoS 1 by default,
reconnecting by itself) subscribes to every topic template's filter on each
connect. Messages are handed from paho's callback to a queue and converted by
:class:`~edge.mqtt.mapping.Mapper` in a consumer task, which puts everything that
arrived since its last turn in one ``sink.put`` and only then acknowledges the
messages to the broker (paho manual ack). So a message is either in the spool or
still held by the broker for this session: an edge killed between the two gets it
again on restart. With QoS 1 the broker's in-flight window also bounds the queue.

An acknowledgement goes only to the connection its message came on: if the
connection dropped while the sink was writing, the session drops it (message ids are
per connection; on the new one it would acknowledge another message) and the broker
redelivers the message, which becomes the same points again (absorbed downstream).

A filter the broker refuses (SUBACK reason code) is an error in the log and in
``/health`` (the source's ``subscriptions_refused``), never a quiet source.

A malformed message is counted (``malformed``, and ``health.errors``), logged with
its topic and reason, acknowledged (it will not get better) and never stops the
collector; its good fields still become points.

Connectivity: a device is *online* from its first message (an ``online`` event
precedes its first point) and *offline* once silent for ``offline_after`` (an
``offline`` event at the time silence was detected); devices listed in ``devices``
that never publish are reported offline ``offline_after`` after the start.

Counters: a device that went offline may have restarted while silent, and come back
with any total; so its counters are re-baselined (edge.counters): the first total
after it returns counts nothing and a ``counter.<name>`` event records the old and the
new total. Parts it made while silent are not counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from edge.mqtt.config import MqttSourceConfig, TopicTemplate
from edge.mqtt.mapping import Mapper
from edge.sink import Sink
from edge.source import SourceHealth
from zhizao.mqtt import ClientFactory, MqttSession, Received, paho_client
from zhizao.wire import (
    CONNECTIVITY_EVENT,
    COUNTER_ANOMALY_EVENT,
    COUNTER_EVENT,
    Connectivity,
    Point,
    PointKind,
)

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Received:
    message: Received
    at_ms: int

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def payload(self) -> bytes:
        return self.message.payload


class MqttCollector:
    """Reads JSON device messages from one broker (see the module docstring)."""

    def __init__(
        self,
        config: MqttSourceConfig,
        *,
        client_id: str | None = None,
        client_factory: ClientFactory = paho_client,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._health = SourceHealth(name=config.name)
        self._mapper = Mapper(config)
        self._filters = [TopicTemplate.compile(t.topic).filter for t in config.topics]
        self._queue: asyncio.Queue[_Received] = asyncio.Queue()
        self.session = MqttSession(
            config.broker,
            client_id=config.broker.client_id or client_id or f"zhizao-edge-src-{config.name}",
            name=f"source:{config.name}",
            persistent=True,
            subscriptions=[(f, config.qos) for f in self._filters],
            on_message=self._received,
            manual_ack=True,
            client_factory=client_factory,
        )
        #: device → last time it published (epoch ms, receipt)
        self.last_seen: dict[str, int] = {}
        self._online: dict[str, bool] = {}
        self.malformed = 0
        self.unmatched = 0
        self._started = 0.0

    @property
    def health(self) -> SourceHealth:
        self._health.connected = self.session.connected
        self._health.subscriptions_refused = dict(self.session.refused)
        if self.session.refused:
            topic, reason = next(iter(self.session.refused.items()))
            self._health.last_error = f"subscription {topic} refused by the broker: {reason}"
        return self._health

    async def run(self, sink: Sink) -> None:
        self._started = self._clock()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.session.run(), name=f"{self.config.name}-session")
            tasks.create_task(self._consume(sink), name=f"{self.config.name}-consume")
            tasks.create_task(self._watch_silence(sink), name=f"{self.config.name}-silence")

    async def close(self) -> None:
        await self.session.disconnect()

    # -- internals --------------------------------------------------------------------

    def _received(self, message: Received) -> None:
        self._queue.put_nowait(_Received(message, int(self._clock() * 1000)))

    async def _consume(self, sink: Sink) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            points: list[Point] = []
            for message in batch:
                points.extend(self._convert(message))
            if points:
                # Acknowledged only once the sink (the spool) holds the points.
                await sink.put(points)
                self._health.points_read += len(points)
            for message in batch:
                # Dropped by the session if the connection changed since it came.
                self.session.ack(message.message)

    def _convert(self, message: _Received) -> list[Point]:
        result = self._mapper.map(message.topic, message.payload, message.at_ms)
        if not result.matched:
            self.unmatched += 1
            return []
        if result.problems:
            self.malformed += 1
            self._health.errors += 1
            self._health.last_error = f"{message.topic}: {result.problems[0]}"
            log.warning(
                "malformed MQTT payload",
                source=self.config.name,
                topic=message.topic,
                problems=result.problems,
                malformed_total=self.malformed,
            )
        out: list[Point] = []
        devices = {p.device for p in result.points}
        if result.device is not None and not result.problems:
            devices.add(result.device)
        for device in sorted(devices):
            self.last_seen[device] = message.at_ms
            if not self._online.get(device, False):
                self._online[device] = True
                out.append(self._connectivity(device, Connectivity.ONLINE, message.at_ms))
        for point in result.points:
            if point.kind is PointKind.EVENT and "." in point.name:
                event, _, counter = point.name.partition(".")
                if event == COUNTER_ANOMALY_EVENT:
                    self._health.count(self._health.counter_anomalies, point.device, counter)
                elif event == COUNTER_EVENT:
                    self._health.count(self._health.counter_rebaselines, point.device, counter)
        out.extend(result.points)
        return out

    def _connectivity(self, device: str, status: Connectivity, ts: int) -> Point:
        return Point(
            device=device, ts=ts, kind=PointKind.EVENT, name=CONNECTIVITY_EVENT, value=status.value
        )

    async def _watch_silence(self, sink: Sink) -> None:
        limit = self.config.offline_after
        tick = max(0.05, min(limit / 4, 5.0))
        while True:
            await asyncio.sleep(tick)  # a periodic check, not synchronisation
            now = self._clock()
            now_ms = int(now * 1000)
            events: list[Point] = []
            for device, seen in self.last_seen.items():
                if self._online.get(device) and now_ms - seen > limit * 1000:
                    self._online[device] = False
                    # Back from silence it may have restarted: its next totals re-baseline.
                    self._mapper.rebaseline(device)
                    events.append(self._connectivity(device, Connectivity.OFFLINE, now_ms))
            if now - self._started > limit:
                for device in self.config.devices:
                    if device not in self._online:
                        self._online[device] = False
                        events.append(self._connectivity(device, Connectivity.OFFLINE, now_ms))
            if events:
                log.info(
                    "MQTT devices silent: reported offline",
                    source=self.config.name,
                    devices=[p.device for p in events],
                )
                await sink.put(events)
