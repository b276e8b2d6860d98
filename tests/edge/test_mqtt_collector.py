"""The MQTT device collector against a real Mosquitto: mapping, malformed payloads,
silent devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.mqtt.collector import MqttCollector
from edge.mqtt.config import MqttSourceConfig, TimestampSpec
from edge.mqtt.mapping import parse_timestamp
from edge.sink import MemorySink
from tests.fix_mqtt import Mosquitto
from zhizao.embedded import EmbeddedBroker
from zhizao.wire import PointKind

T0 = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def source(url: str, **extra: Any) -> MqttSourceConfig:
    return MqttSourceConfig.model_validate(
        {
            "type": "mqtt",
            "name": "line1",
            "broker": {"url": url},
            "topics": [
                {
                    "topic": "plant/{line}/{device}/telemetry",
                    "timestamp": {"path": "ts"},
                    "fields": [
                        {
                            "path": "status",
                            "name": "state",
                            "kind": "state",
                            "state_map": {0: "PLANNED_STOP", 1: "RUNNING", 4: "UNPLANNED_STOP"},
                        },
                        {"path": "good_total", "name": "good", "kind": "count"},
                        {"path": "axis.temperature", "name": "temperature"},
                    ],
                }
            ],
            **extra,
        }
    )


class Publisher:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex}")
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    async def send(self, topic: str, payload: bytes | dict[str, Any]) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, body, qos=1)
        await asyncio.to_thread(info.wait_for_publish, 10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.asynccontextmanager
async def collecting(config: MqttSourceConfig) -> AsyncIterator[tuple[MqttCollector, MemorySink]]:
    sink = MemorySink()
    collector = MqttCollector(config, client_id=f"test-{uuid.uuid4().hex[:8]}")
    task = asyncio.create_task(collector.run(sink))
    try:
        async with asyncio.timeout(20):
            await collector.session.subscribed.wait()
        yield collector, sink
    finally:
        await collector.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_payloads_become_points_with_device_state_counts_and_metrics(
    own_mosquitto: Mosquitto,
) -> None:
    pub = Publisher(own_mosquitto.url)
    try:
        async with collecting(source(own_mosquitto.url)) as (collector, sink):
            topic = "plant/L1/CMM-01/telemetry"
            await pub.send(
                topic, {"ts": T0, "status": 1, "good_total": 10, "axis": {"temperature": 41.5}}
            )
            await pub.send(topic, {"ts": T0 + 1000, "status": 4, "good_total": 13})
            # online event, state, metric; then state and an increment of 3
            points = await sink.wait_for(5, within=30)
            assert collector.malformed == 0
    finally:
        pub.close()
    assert {p.device for p in points} == {"CMM-01"}
    assert sink.connectivity("CMM-01") == ["online"]
    assert points[0].kind is PointKind.EVENT  # connectivity comes before the data
    states = [(p.ts, p.value, p.raw) for p in points if p.kind is PointKind.STATE]
    assert states == [(T0, "RUNNING", "1"), (T0 + 1000, "UNPLANNED_STOP", "4")]
    counts = [(p.ts, p.value) for p in points if p.kind is PointKind.COUNT]
    assert counts == [(T0 + 1000, 3)]  # the first total is only a baseline
    metrics = [(p.name, p.value) for p in points if p.kind is PointKind.METRIC]
    assert metrics == [("temperature", 41.5)]


async def test_malformed_payloads_are_counted_and_the_collector_keeps_going(
    own_mosquitto: Mosquitto,
) -> None:
    pub = Publisher(own_mosquitto.url)
    garbage: list[bytes] = [
        b'{"ts": 1772409600000, "status": ',  # truncated JSON
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",  # an array, not an object
        b'{"ts": "yesterday", "status": 1}',  # unreadable timestamp
        b'{"ts": 1772409600000, "status": 9}',  # a state the map does not know
    ]
    try:
        async with collecting(source(own_mosquitto.url)) as (collector, sink):
            for payload in garbage:
                await pub.send("plant/L1/AC-01/telemetry", payload)
            await pub.send("plant/L1/AC-01/telemetry", {"ts": T0, "status": 1})
            points = await sink.wait_for(2, within=30)
            assert collector.malformed == len(garbage)
            assert collector.health.errors == len(garbage)
            assert "plant/L1/AC-01/telemetry" in (collector.health.last_error or "")
    finally:
        pub.close()
    assert [p.value for p in points if p.kind is PointKind.STATE] == ["RUNNING"]


async def test_silent_devices_are_reported_offline_and_back_online(
    own_mosquitto: Mosquitto,
) -> None:
    config = source(own_mosquitto.url, offline_after=0.5, devices=["NEVER-01"])
    pub = Publisher(own_mosquitto.url)
    try:
        async with collecting(config) as (_collector, sink):
            await pub.send("plant/L1/CMM-01/telemetry", {"ts": T0, "status": 1})
            await sink.wait_for(2, within=30)

            def offline(device: str) -> bool:
                return "offline" in sink.connectivity(device)

            async with asyncio.timeout(30), sink._arrived:
                await sink._arrived.wait_for(lambda: offline("CMM-01") and offline("NEVER-01"))
            await pub.send("plant/L1/CMM-01/telemetry", {"ts": T0 + 5000, "status": 1})
            async with asyncio.timeout(30), sink._arrived:
                await sink._arrived.wait_for(lambda: len(sink.connectivity("CMM-01")) == 3)
    finally:
        pub.close()
    assert sink.connectivity("CMM-01") == ["online", "offline", "online"]
    assert sink.connectivity("NEVER-01") == ["offline"]


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        (T0, "epoch_ms", T0),
        (T0 / 1000, "epoch_s", T0),
        (T0, "auto", T0),
        (T0 // 1000, "auto", T0),
        (str(T0), "auto", T0),
        ("2026-03-02T00:00:00Z", "iso8601", T0),
        ("2026-03-02T08:00:00+08:00", "auto", T0),
        ("2026-03-02T08:00:00", "iso8601", T0),  # no offset: the source's time zone
    ],
)
def test_timestamp_formats(raw: object, fmt: str, expected: int) -> None:
    spec = TimestampSpec(path="ts", format=fmt)  # type: ignore[arg-type]
    assert parse_timestamp(raw, spec, ZoneInfo("Asia/Shanghai")) == expected


@pytest.mark.parametrize("raw", [True, "soon", 12, None, [T0]])
def test_bad_timestamps_are_rejected(raw: object) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(raw, TimestampSpec(path="ts"), ZoneInfo("UTC"))


async def test_collector_works_on_amqtt_with_mqtt311() -> None:
    async with EmbeddedBroker() as broker:
        pub = Publisher(broker.url)
        try:
            async with collecting(source(broker.url)) as (collector, sink):
                for i in range(5):
                    await pub.send("plant/QC/CMM-01/telemetry", {"ts": T0 + i, "status": 1})
                points = await sink.wait_for(6, within=30)
                assert collector.session.protocol is MQTTProtocolVersion.MQTTv311
        finally:
            await asyncio.to_thread(pub.close)
    assert [p.ts for p in points if p.kind is PointKind.STATE] == [T0 + i for i in range(5)]
