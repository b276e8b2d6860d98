"""The MQTT device collector against a real Mosquitto: mapping, malformed payloads,
silent devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from edge.mqtt.collector import MqttCollector
from edge.mqtt.config import MqttSourceConfig, TimestampSpec
from edge.mqtt.mapping import parse_timestamp
from edge.sink import MemorySink
from tests.fix_mqtt import Mosquitto
from zhizao.embedded import EmbeddedBroker
from zhizao.mqtt import PahoClient
from zhizao.wire import COUNTER_EVENT, Point, PointKind

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


async def test_a_device_back_from_silence_rebaselines_its_counters(
    own_mosquitto: Mosquitto,
) -> None:
    """Issue 9 point 7 for MQTT: a device that went offline may have restarted; the first
    total after it returns counts nothing (the old code counted 900 phantom parts)."""
    config = source(own_mosquitto.url, offline_after=0.5)
    pub = Publisher(own_mosquitto.url)
    topic = "plant/L1/CMM-01/telemetry"
    try:
        async with collecting(config) as (collector, sink):
            await pub.send(topic, {"ts": T0, "good_total": 100})
            await pub.send(topic, {"ts": T0 + 60_000, "good_total": 104})
            async with asyncio.timeout(30), sink._arrived:
                await sink._arrived.wait_for(lambda: "offline" in sink.connectivity("CMM-01"))
            await pub.send(topic, {"ts": T0 + 3_600_000, "good_total": 1004})
            await pub.send(topic, {"ts": T0 + 3_660_000, "good_total": 1006})
            await sink.wait_for(6, within=30)
    finally:
        pub.close()
    counts = [(p.ts, p.value) for p in sink.points if p.kind is PointKind.COUNT]
    assert counts == [(T0 + 60_000, 4), (T0 + 3_660_000, 2)]
    (event,) = [p for p in sink.points if p.name == f"{COUNTER_EVENT}.good"]
    assert event.ts == T0 + 3_600_000
    assert json.loads(str(event.value)) == {
        "counter": "good",
        "event": "rebaseline",
        "old_total": 104,
        "new_total": 1004,
        "reason": "MQTT device back after being offline",
    }
    assert collector.health.counter_rebaselines == {("CMM-01", "good"): 1}


async def test_mqtt_counters_wrap_at_a_rollover_and_refuse_implausible_jumps(
    own_mosquitto: Mosquitto,
) -> None:
    config = MqttSourceConfig.model_validate(
        {
            "type": "mqtt",
            "broker": {"url": own_mosquitto.url},
            "ideal_cycle_s": {"PR-02": 60},  # per device; PR-01 has no cycle time
            "topics": [
                {
                    "topic": "press/{device}",
                    "timestamp": {"path": "ts"},
                    "fields": [{"path": "n", "name": "good", "kind": "count", "rollover": 1000}],
                }
            ],
        }
    )
    pub = Publisher(own_mosquitto.url)
    try:
        async with collecting(config) as (collector, sink):
            for device, totals in (
                ("PR-01", [(998, 0), (3, 60_000), (999, 120_000), (0, 180_000)]),
                # 60 s cycle: 120 s allows 5 parts; 6 is an anomaly, then 1 counts.
                ("PR-02", [(995, 0), (0, 120_000), (6, 240_000), (7, 300_000)]),
            ):
                for total, offset in totals:
                    await pub.send(f"press/{device}", {"ts": T0 + offset, "n": total})
            await pub.send("press/PR-01", {"ts": T0 + 240_000, "n": 1000})  # not a value
            await sink.wait_for(8, within=30)
            await asyncio.sleep(0.3)
    finally:
        pub.close()

    def counted(device: str) -> list[int]:
        return [
            int(p.value) for p in sink.points if p.device == device and p.kind is PointKind.COUNT
        ]

    assert counted("PR-01") == [5, 996, 1]  # 998 -> 3 is 5 parts, 999 -> 0 is one
    assert counted("PR-02") == [5, 1]
    (anomaly,) = [p for p in sink.points if p.name == "counter_anomaly.good"]
    assert (anomaly.device, anomaly.ts) == ("PR-02", T0 + 240_000)
    assert json.loads(str(anomaly.value))["increment"] == 6
    assert json.loads(str(anomaly.value))["limit"] == 5
    assert collector.health.counter_anomalies == {("PR-02", "good"): 1}
    assert collector.malformed == 1
    assert "total 1000 does not fit the rollover 1000" in str(collector.health.last_error)


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


class _GatedSink(MemorySink):
    """Holds the first put until the test opens the gate (a slow spool write)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def put(self, points: Sequence[Point]) -> None:
        if not self.entered.is_set():
            self.entered.set()
            await self.gate.wait()
        await super().put(points)


class _AckRecorder(PahoClient):
    acks: ClassVar[list[int]] = []

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        _AckRecorder.acks.append(mid)
        return super().ack(mid, qos)


def _recording_client(
    client_id: str, protocol: MQTTProtocolVersion, persistent: bool
) -> PahoClient:
    return _AckRecorder(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)


async def test_a_message_received_before_a_reconnect_is_not_acked_on_the_new_connection(
    own_mosquitto: Mosquitto,
) -> None:
    """The spool write of a message outlasts its connection (the broker restarts). Its
    PUBACK must not go out on the new connection, where its id names another message;
    the broker redelivers it instead, and it is stored again (at least once)."""
    pub = Publisher(own_mosquitto.url)
    sink = _GatedSink()
    collector = MqttCollector(
        source(own_mosquitto.url, broker={"url": own_mosquitto.url, "reconnect_min_s": 0.1}),
        client_id="test-ack-guard",
        client_factory=_recording_client,
    )
    task = asyncio.create_task(collector.run(sink))
    try:
        async with asyncio.timeout(20):
            await collector.session.subscribed.wait()
        await pub.send("plant/L1/CMM-01/telemetry", {"ts": T0, "axis": {"temperature": 40.0}})
        async with asyncio.timeout(20):
            await sink.entered.wait()  # received on connection 1, being written
        pub.close()
        own_mosquitto.restart()  # persistence: the unacknowledged message is kept
        async with asyncio.timeout(30), collector.session.attempted:
            await collector.session.attempted.wait_for(lambda: collector.session.connects >= 2)
        sink.gate.set()
        # Connection 2: the broker redelivers the message, which is acked there.
        points = await sink.wait_for(3, within=30)  # online, temperature; temperature
    finally:
        await collector.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert collector.session.stale_acks == 1  # the first delivery's ack, dropped
    assert len(_AckRecorder.acks) == 1  # only the redelivery's, on its own connection
    temperatures = [p.value for p in points if p.name == "temperature"]
    assert temperatures == [40.0, 40.0]
