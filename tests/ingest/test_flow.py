"""End to end through a real broker and database: every kind of point lands where it should."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
from collections.abc import Iterator

import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Publisher,
    Worker,
    data_messages,
    register,
    scalar,
    wait_for_count,
    wait_until,
    worker_settings,
)
from zhizao.mqtt import PahoClient, paho_client
from zhizao.wire import data_topic, status_topic


async def test_points_of_every_kind_are_stored(db_url: str, own_mosquitto: Mosquitto) -> None:
    a, _ = await register(db_url)
    worker = Worker(worker_settings(db_url, own_mosquitto.url))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    try:
        device = a.devices[0]
        points = [
            {"device": device, "ts": T0, "kind": "metric", "name": "temp", "value": 41.5},
            {"device": device, "ts": T0 + 1, "kind": "metric", "name": "on", "value": True,
             "quality": "bad"},
            {"device": device, "ts": T0 + 2, "kind": "state", "name": "state", "value": "RUNNING",
             "raw": "Executing"},
            {"device": device, "ts": T0 + 3, "kind": "count", "name": "good", "value": 5},
            {"device": device, "ts": T0 + 3, "kind": "count", "name": "reject", "value": 1},
            {"device": device, "ts": T0 + 4, "kind": "event", "name": "connectivity",
             "value": "offline", "reason": "session lost"},
            {"device": device, "ts": T0 + 5, "kind": "event", "name": "alarm", "value": "E-12"},
        ]
        batch = {"v": 1, "enterprise": a.enterprise, "edge": a.edge, "seq": 0, "sent_at": T0,
                 "points": points}
        birth = {"v": 1, "enterprise": a.enterprise, "edge": a.edge, "status": "online",
                 "ts": T0 - 10, "software": "zhizao-edge 0.1.0"}
        death = {"v": 1, "enterprise": a.enterprise, "edge": a.edge, "status": "offline",
                 "ts": T0 - 10, "reason": "will"}
        publisher.publish_all(
            [
                (status_topic(a.enterprise, a.edge), json.dumps(birth).encode()),
                (data_topic(a.enterprise, a.edge), json.dumps(batch).encode()),
                (status_topic(a.enterprise, a.edge), json.dumps(death).encode()),
            ]
        )
        await wait_for_count(db_url, "SELECT count(*) FROM edge_status", 2)
        await wait_for_count(db_url, "SELECT count(*) FROM device_event", 1)
        assert await scalar(db_url, "SELECT count(*) FROM metric_point") == 2
        assert await scalar(db_url, "SELECT quality FROM metric_point WHERE value = 1") == 2
        assert await scalar(db_url, "SELECT state::text FROM state_change") == "RUNNING"
        assert await scalar(
            db_url, "SELECT string_agg(counter || ':' || quantity, ',' ORDER BY counter)"
            " FROM production_count"
        ) == "0:5,1:1"
        assert await scalar(db_url, "SELECT online FROM device_connectivity") is False
        assert await scalar(db_url, "SELECT value FROM device_event WHERE name = 'alarm'") == "E-12"
        assert await scalar(
            db_url, "SELECT string_agg(online::text, ',' ORDER BY time) FROM edge_status"
        ) == "true,false"
        assert await scalar(
            db_url, "SELECT software FROM edge_status WHERE online"
        ) == "zhizao-edge 0.1.0"
        assert await scalar(db_url, "SELECT count(*) FROM dead_letter") == 0
    finally:
        publisher.close()
        await worker.close()


# 50 points a message take the unnest path; 300 are enough for the COPY paths
# (COPY_METRICS_MIN_ROWS) even when a batch holds a single message.
@pytest.mark.parametrize("points", [50, 300])
async def test_same_batch_twice_is_stored_once(
    db_url: str, own_mosquitto: Mosquitto, points: int
) -> None:
    a, _ = await register(db_url)
    worker = Worker(worker_settings(db_url, own_mosquitto.url))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    try:
        messages = data_messages(a, range(10), points)
        publisher.publish_all(messages + messages)
        await wait_for_count(db_url, "SELECT messages FROM edge_sequence", 20)
        assert await scalar(db_url, "SELECT count(*) FROM metric_point") == 10 * points
        # The KPI tally counts what was stored, not what was offered.
        assert await scalar(db_url, "SELECT sum(points) FROM device_hour_tally") == 10 * points
        replays = await scalar(
            db_url, "SELECT sum(last_seq - first_seq + 1) FROM sequence_event WHERE kind='replay'"
        )
        assert replays == 10
        assert worker.metrics.rows_duplicate._value.get() == 10 * points
    finally:
        publisher.close()
        await worker.close()


async def test_worker_tunes_the_collector_only_while_running(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    before = gc.get_threshold()
    worker = Worker(worker_settings(db_url, own_mosquitto.url, gc_young_threshold=12_345))
    await worker.connected()
    try:
        assert gc.get_threshold() == (12_345, *before[1:])
    finally:
        await worker.close()
    assert gc.get_threshold() == before


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@contextlib.contextmanager
def _dropping_port() -> Iterator[int]:
    """A port whose SYNs go unanswered, like a broker host behind a dropping firewall:
    a listener that never accepts, its one-slot queue already full."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(3):
        pending = socket.socket()
        pending.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            pending.connect(("127.0.0.1", port))
        queued.append(pending)
    try:
        yield port
    finally:
        # Closing the listener answers the waiting SYN with a reset: the connect ends.
        listener.close()
        for pending in queued:
            pending.close()


async def test_worker_stays_responsive_while_the_broker_host_drops_packets(db_url: str) -> None:
    """The TCP connect waits out paho's connect timeout; the loop must not wait with it."""

    def patient_client(
        client_id: str, protocol: MQTTProtocolVersion, persistent: bool
    ) -> PahoClient:
        client = paho_client(client_id, protocol, persistent)
        client.connect_timeout = 120  # one attempt outlasts every wait of this test
        return client

    with _dropping_port() as port:
        worker = Worker(
            worker_settings(db_url, f"mqtt://127.0.0.1:{port}", health_port=0), patient_client
        )
        try:

            async def serving() -> bool:
                return worker.metrics.health_port is not None

            await wait_until(serving, what="health endpoint")
            # With the connect on the loop, this would not be answered before it times out.
            status, body = await asyncio.wait_for(
                _get(worker.metrics.health_port or 0, "/healthz"), timeout=60
            )
            assert status == 503
            assert json.loads(body)["broker_connected"] is False
        finally:
            # Stopping does not wait for the connect either.
            await asyncio.wait_for(worker.close(), timeout=60)


async def test_health_and_metrics_endpoint(db_url: str, own_mosquitto: Mosquitto) -> None:
    a, _ = await register(db_url)
    worker = Worker(worker_settings(db_url, own_mosquitto.url, health_port=0))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    try:
        await asyncio.to_thread(publisher.publish_all, data_messages(a, range(3), 5))
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 15)
        port = worker.metrics.health_port
        assert port
        status, body = await _get(port, "/healthz")
        assert status == 200
        assert json.loads(body)["broker_connected"] is True
        status, body = await _get(port, "/metrics")
        assert status == 200
        assert b'zhizao_ingest_rows_written_total{table="metric_point"} 15.0' in body
        assert b"zhizao_ingest_commit_seconds_bucket" in body
        assert b"zhizao_ingest_lag_seconds_count 3.0" in body
    finally:
        publisher.close()
        await worker.close()


async def test_mqtt_311_uses_a_persistent_session(db_url: str, own_mosquitto: Mosquitto) -> None:
    """The demo's broker speaks 3.1.1: no shared subscription, a persistent session."""
    a, _ = await register(db_url)
    settings = worker_settings(db_url, own_mosquitto.url, mqtt_protocol="3.1.1")
    assert settings.shared_group is None
    worker = Worker(settings)
    await worker.connected()
    await worker.close()
    # Published while the worker is away: the session queues it.
    publisher = Publisher(own_mosquitto.url)
    try:
        await asyncio.to_thread(publisher.publish_all, data_messages(a, range(5), 4))
        worker = Worker(settings)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 20)
    finally:
        publisher.close()
        await worker.close()
