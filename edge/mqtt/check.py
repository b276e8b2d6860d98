"""``zhizao edge check`` for an MQTT source: is the broker reachable, who publishes?

Connects with a clean, separate session (a fresh client id: the running edge's
persistent session and its queued messages are not touched), subscribes to the
source's topic filters for a short while and reports, per expected device, when it
last published and what a message of it became (points or problems).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

from edge.mqtt.config import MqttSourceConfig, TopicTemplate
from edge.mqtt.mapping import Mapper
from zhizao.errors import MqttError
from zhizao.mqtt import ClientFactory, MqttSession, Received, paho_client


@dataclass
class DeviceCheck:
    device: str
    expected: bool
    messages: int = 0
    last_seen_ms: int | None = None
    last_points: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class MqttCheck:
    source: str
    broker: str
    reachable: bool
    error: str | None = None
    listened_s: float = 0.0
    devices: dict[str, DeviceCheck] = field(default_factory=dict)
    unmatched: int = 0
    #: topic filter → reason, for subscriptions the broker refused (its ACL)
    refused: dict[str, str] = field(default_factory=dict)


async def check_source(
    config: MqttSourceConfig,
    *,
    listen_s: float = 5.0,
    client_factory: ClientFactory = paho_client,
) -> MqttCheck:
    broker = f"{config.broker.host}:{config.broker.port}"
    report = MqttCheck(config.name, broker, reachable=False, listened_s=listen_s)
    for device in config.devices:
        report.devices[device] = DeviceCheck(device, expected=True)
    mapper = Mapper(config)
    filters = list(dict.fromkeys(TopicTemplate.compile(t.topic).filter for t in config.topics))

    def received(message: Received) -> None:
        now = int(time.time() * 1000)
        result = mapper.map(message.topic, message.payload, now)
        if not result.matched or result.device is None:
            report.unmatched += 1
            return
        entry = report.devices.setdefault(result.device, DeviceCheck(result.device, False))
        entry.messages += 1
        entry.last_seen_ms = now
        entry.last_points = [f"{p.kind.value} {p.name}={p.value}" for p in result.points]
        entry.problems = result.problems

    session = MqttSession(
        config.broker.model_copy(update={"client_id": None, "reconnect_max_s": 1.0}),
        client_id=f"zhizao-check-{uuid.uuid4().hex[:10]}",
        name=f"check:{config.name}",
        persistent=False,
        subscriptions=[(f, config.qos) for f in filters],
        on_message=received,
        client_factory=client_factory,
    )
    task = asyncio.create_task(session.run())
    try:
        try:
            async with asyncio.timeout(20):
                if not await session.first_outcome():
                    report.error = session.last_error
                    return report
                await session.subscribed.wait()
                await session.wait_subscribed()
        except TimeoutError:
            report.error = session.last_error or "no connection within 20 s"
            return report
        report.reachable = True
        report.refused = dict(session.refused)
        await asyncio.sleep(listen_s)  # the listening window itself
    except MqttError as exc:
        report.error = str(exc)
    finally:
        await session.disconnect()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return report
