"""A platform-side subscriber for edge tests: counts what reached the broker.

Runs paho in its own thread (test code only): a persistent QoS 1 session, so it
misses nothing while the broker restarts, and it reconnects by itself.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from zhizao.wire import EdgeStatus, Point, UplinkBatch, decode_batch, decode_status


@dataclass
class Subscriber:
    url: str
    topics: list[str]
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311
    batches: list[UplinkBatch] = field(default_factory=list)
    statuses: list[EdgeStatus] = field(default_factory=list)
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _client: mqtt.Client | None = None

    async def start(self) -> Subscriber:
        """Connect and subscribe; returns after the SUBACK (the broker may share the loop)."""
        subscribed = self._connect()
        if not await asyncio.to_thread(subscribed.wait, 10):
            raise TimeoutError("subscriber did not get its SUBACK")
        return self

    def _connect(self) -> threading.Event:
        parts = urlsplit(self.url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:12]}",
            protocol=self.protocol,
            clean_session=False,
        )
        subscribed = threading.Event()

        def on_connect(c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
            c.subscribe([(topic, 1) for topic in self.topics])

        def on_subscribe(*_args: object) -> None:
            subscribed.set()

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            with self._cond:
                self.raw.append((message.topic, bytes(message.payload)))
                if message.topic.endswith("/data"):
                    self.batches.append(decode_batch(message.payload).batch)
                elif message.topic.endswith("/status"):
                    self.statuses.append(decode_status(message.payload))
                self._cond.notify_all()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.reconnect_delay_set(0.1, 1)
        client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        client.loop_start()
        self._client = client
        return subscribed

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def points(self) -> list[Point]:
        with self._cond:
            return [p for b in self.batches for p in b.points]

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 60) -> None:
        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(predicate, within_s)

        if not await asyncio.to_thread(wait):
            raise TimeoutError(f"subscriber: condition not met after {within_s} s")

    async def wait_points(self, count: int, within_s: float = 60) -> None:
        """Wait until ``count`` distinct points (by device, name, ts) arrived."""

        def enough() -> bool:
            distinct = {(p.device, p.name, p.ts) for b in self.batches for p in b.points}
            return len(distinct) >= count

        await self.wait_until(enough, within_s)
