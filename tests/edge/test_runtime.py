"""A whole edge in-process: MQTT devices → spool → uplink, health and metrics, and
``zhizao edge check`` for MQTT sources."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from typer.testing import CliRunner

from edge.config import EdgeConfig, parse_config
from edge.runtime import EdgeRuntime
from edge.sink import Sink
from edge.source import SourceHealth
from tests.edge.subscriber import Subscriber
from tests.edge.test_mqtt_collector import Publisher
from tests.fix_mqtt import Mosquitto
from zhizao.cli.edge import app
from zhizao.mqtt import PahoClient
from zhizao.wire import Connectivity, Point, PointKind, data_topic, status_topic

ENTERPRISE = "91330106MA2XXXXX0Y"
T0 = 1_772_409_600_000


def config(url: str, tmp_path: Path, port: int | None = 0) -> EdgeConfig:
    return parse_config(
        {
            "identity": {"enterprise": ENTERPRISE, "edge_id": "edge-rt"},
            "uplink": {"url": url, "batch_max_wait_s": 0.05},
            "spool": {"path": str(tmp_path / "spool.db")},
            "http": {"port": port},
            "sources": [
                {
                    "type": "mqtt",
                    "name": "devices",
                    "broker": {"url": url},
                    "devices": ["P-01"],
                    "topics": [
                        {
                            "topic": "shop/{device}/json",
                            "timestamp": {"path": "t", "format": "epoch_s"},
                            "fields": [{"path": "p", "name": "pressure"}],
                        }
                    ],
                }
            ],
        },
        source="test",
    )


async def http_get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return head.decode().splitlines()[0], body


async def test_edge_runs_end_to_end_with_health_and_metrics(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    url = own_mosquitto.url
    topics = [data_topic(ENTERPRISE, "edge-rt"), status_topic(ENTERPRISE, "edge-rt")]
    sub = await Subscriber(url, topics).start()
    runtime = EdgeRuntime(config(url, tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    pub = Publisher(url)
    try:
        await runtime.ready.wait()
        await runtime.collectors["devices"].session.subscribed.wait()  # type: ignore[attr-defined]
        for i in range(20):
            await pub.send("shop/P-01/json", {"t": T0 / 1000 + i, "p": 1.5 + i})
        await sub.wait_until(
            lambda: len([p for p in sub.points() if p.kind is PointKind.METRIC]) >= 20
        )
        assert runtime.health is not None
        status, body = await http_get(runtime.health.port, "/health")
        assert status.endswith("200 OK")
        health = json.loads(body)
        assert health["uplink"]["connected"] is True
        assert health["sources"][0]["points_read"] >= 20
        status, body = await http_get(runtime.health.port, "/metrics")
        metrics = body.decode()
        assert 'zhizao_edge_points_read_total{source="devices"}' in metrics
        assert "zhizao_edge_spool_depth_points" in metrics
        assert 'zhizao_edge_points_dropped_total{reason="overflow"} 0.0' in metrics
        assert 'zhizao_edge_source_connected{source="devices"} 1.0' in metrics
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(task, 60)
        await sub.wait_until(lambda: any(s.status is Connectivity.OFFLINE for s in sub.statuses))
        sub.stop()
    values = sorted(float(p.value) for p in sub.points() if p.kind is PointKind.METRIC)
    assert values == [1.5 + i for i in range(20)]
    assert sub.statuses[-1].reason == "shutdown"


async def test_edge_check_reports_broker_and_devices(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    path = tmp_path / "edge.yaml"
    cfg = config(own_mosquitto.url, tmp_path, port=None)
    path.write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")  # JSON is YAML
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["check", str(path), "--listen", "0.2"]
    )
    assert "config ok" in result.output
    assert "uplink" in result.output
    assert "connected" in result.output
    assert "P-01" in result.output
    assert "not seen" in result.output
    assert result.exit_code == 1  # the expected device did not publish


class Refusing(PahoClient):
    """A paho client whose broker is never reachable: no network needed."""

    def connect(self, *args: object, **kwargs: object) -> mqtt.MQTTErrorCode:
        raise ConnectionRefusedError(111, "Connection refused")


def refusing_factory(
    client_id: str, protocol: MQTTProtocolVersion, persistent: bool
) -> PahoClient:
    return Refusing(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)


class Crashing:
    def __init__(self) -> None:
        self.health = SourceHealth(name="crashing")
        self.crashed = asyncio.Event()

    async def run(self, sink: Sink) -> None:
        self.crashed.set()
        raise RuntimeError("a collector bug")

    async def close(self) -> None:
        return None


class Counting:
    def __init__(self) -> None:
        self.health = SourceHealth(name="counting", connected=True)
        self.done = asyncio.Event()

    async def run(self, sink: Sink) -> None:
        for i in range(10):
            await sink.put(
                [Point(device="X-1", ts=T0 + i, kind=PointKind.METRIC, name="n", value=i)]
            )
            self.health.points_read += 1
        self.done.set()
        await asyncio.Event().wait()  # a collector runs until cancelled

    async def close(self) -> None:
        return None


async def test_a_crashing_collector_does_not_stop_the_others_nor_the_spool(
    tmp_path: Path,
) -> None:
    cfg = config("mqtt://127.0.0.1:1", tmp_path, port=None)
    crashing, counting = Crashing(), Counting()
    runtime = EdgeRuntime(
        cfg,
        uplink_client_factory=refusing_factory,
        collectors={"crashing": crashing, "counting": counting},
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        # Without the network: the uplink keeps retrying, the data stays in the spool.
        async with asyncio.timeout(30), runtime.uplink.session.attempted:
            await runtime.uplink.session.attempted.wait_for(
                lambda: runtime.uplink.session.connect_failures >= 2
            )
        async with asyncio.timeout(30):
            await crashing.crashed.wait()
            await counting.done.wait()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert "a collector bug" in str(crashing.health.last_error)
    assert runtime.spool.stats.accepted_total == 10
    assert "refused" in str(runtime.uplink.session.last_error)
