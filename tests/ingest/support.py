"""Helpers of the ingest tests: a registered factory, a publisher, counting, waiting."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.settings import IngestSettings, ingest_settings
from zhizao.codes import make_credit_code
from zhizao.registry import Device, DeviceType, EdgeGateway, Enterprise, Region
from zhizao.storage.connection import connect
from zhizao.storage.registry import (
    upsert_devices,
    upsert_edges,
    upsert_enterprises,
    upsert_regions,
)
from zhizao.wire import data_topic

ENT_A = make_credit_code("91330106MA2B00001")
ENT_B = make_credit_code("91330106MA2B00002")
EDGE_A = "edge-a"
EDGE_B = "edge-b"
T0 = int(time.time() * 1000) - 3_600_000  # an hour ago: valid, and not in the future


@dataclass(frozen=True)
class Factory:
    enterprise: str
    edge: str
    devices: tuple[str, ...]


async def register(db_url: str, devices_per_edge: int = 4, extra_edges: int = 0) -> list[Factory]:
    """Two enterprises, each with one edge (``edge-a``, ``edge-b``) and some devices."""
    factories = [
        Factory(ENT_A, EDGE_A, tuple(f"A-{i:03d}" for i in range(devices_per_edge))),
        Factory(ENT_B, EDGE_B, tuple(f"B-{i:03d}" for i in range(devices_per_edge))),
    ]
    factories += [
        Factory(ENT_A, f"edge-a{k}", tuple(f"A{k}-{i:03d}" for i in range(devices_per_edge)))
        for k in range(extra_edges)
    ]
    conn = await connect(db_url)
    async with conn, conn.transaction():
        await upsert_regions(
            conn,
            [
                Region(code="330000", name="浙江省"),
                Region(code="330100", name="杭州市"),
                Region(code="330106", name="西湖区"),
            ],
        )
        await upsert_enterprises(
            conn,
            [
                Enterprise(
                    credit_code=c, name=f"企业{c[-3:]}", region_code="330106", industry_code="C34"
                )
                for c in (ENT_A, ENT_B)
            ],
        )
        await upsert_devices(
            conn,
            [
                Device(
                    enterprise=f.enterprise, code=d, name=d, device_type=DeviceType.CNC_MACHINE_TOOL
                )
                for f in factories
                for d in f.devices
            ],
        )
        await upsert_edges(
            conn,
            [
                EdgeGateway(enterprise=f.enterprise, edge_id=f.edge, device_codes=f.devices)
                for f in factories
            ],
        )
    return factories


def batch_payload(
    factory: Factory, seq: int, points: int, *, t0: int = T0, metric: str = "spindle_speed"
) -> bytes:
    """A data message with ``points`` metric points; (device, ts) unique per seq."""
    devices = factory.devices
    return json.dumps(
        {
            "v": 1,
            "enterprise": factory.enterprise,
            "edge": factory.edge,
            "seq": seq,
            "sent_at": t0 + seq * 1000,
            "points": [
                {
                    "device": devices[i % len(devices)],
                    "ts": t0 + seq * 1000 + i // len(devices),
                    "kind": "metric",
                    "name": metric,
                    "value": float(seq * 1000 + i),
                }
                for i in range(points)
            ],
        }
    ).encode()


class Publisher:
    """A QoS 1 publisher that waits for the broker's acknowledgement of each message."""

    def __init__(self, url: str, client_id: str = "test-publisher") -> None:
        parts = urlsplit(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def publish_all(self, messages: Iterable[tuple[str, bytes]], timeout: float = 120) -> int:
        infos = [self.publish(topic, payload) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout)
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def data_messages(factory: Factory, seqs: Iterable[int], points: int) -> list[tuple[str, bytes]]:
    return [
        (data_topic(factory.enterprise, factory.edge), batch_payload(factory, s, points))
        for s in seqs
    ]


async def scalar(db_url: str, query: str, *params: Any) -> Any:
    conn = await connect(db_url, autocommit=True)
    async with conn:
        cur = await conn.execute(query, params or None)
        row = await cur.fetchone()
        return None if row is None else row[0]


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, within: float = 120, what: str = "condition"
) -> None:
    """Poll ``check`` until true; generous timeouts, never a wall-time assertion."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


async def wait_for_count(db_url: str, query: str, expected: int, within: float = 120) -> None:
    last: list[Any] = [None]

    async def check() -> bool:
        try:
            last[0] = await scalar(db_url, query)
        except Exception:  # noqa: BLE001 - the database may be down in the fault tests
            return False
        return bool(last[0] == expected)

    try:
        await wait_until(check, within=within, what=f"{query} = {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last value {last[0]}") from None


_REPLAYED = """
SELECT count(*) FROM edge_gateway g CROSS JOIN unnest(%s::bigint[]) AS s(seq)
WHERE g.edge_id = ANY(%s) AND EXISTS (
    SELECT 1 FROM sequence_event e
    WHERE e.edge_pk = g.id AND e.kind = 'replay' AND s.seq BETWEEN e.first_seq AND e.last_seq
      AND e.id > %s)
"""


async def replays_recorded(
    db_url: str, factories: Iterable[Factory], seqs: Iterable[int], *, after_event: int = 0
) -> int:
    """How many of these (edge, seq) messages ingest recorded as replays after an event id."""
    edges = [f.edge for f in factories]
    return int(await scalar(db_url, _REPLAYED, list(seqs), edges, after_event))


def resend(url: str, factories: Iterable[Factory], seqs: Iterable[int], points: int) -> int:
    """Publish these messages of every factory once more, as a broker redelivery or an
    edge resending its spool would; returns the number of points sent twice."""
    sent = 0
    publisher = Publisher(url, client_id="pub-resend")
    try:
        for f in factories:
            messages = data_messages(f, seqs, points)
            publisher.publish_all(messages)
            sent += len(messages) * points
    finally:
        publisher.close()
    return sent


async def resend_absorbed(
    db_url: str,
    mqtt_url: str,
    factories: list[Factory],
    seqs: range,
    points: int,
    *,
    rows_query: str,
    rows: int,
) -> int:
    """Send ``seqs`` of every factory a second time and check that ingest absorbed them.

    The resent messages carry sequence numbers ingest already holds, so it records each
    as a replay, in the same transaction as the batch's facts; once all are recorded the
    duplicates have been offered to the database, and the row count must not have moved.
    Only replays recorded after the resend count: a fault may already have made the
    broker redeliver some of these messages. Returns the number of points sent twice.
    """
    after = int(await scalar(db_url, "SELECT coalesce(max(id), 0) FROM sequence_event"))
    sent = await asyncio.to_thread(resend, mqtt_url, factories, seqs, points)
    expected = len(factories) * len(seqs)
    last = [0]

    async def all_recorded() -> bool:
        last[0] = await replays_recorded(db_url, factories, seqs, after_event=after)
        return last[0] == expected

    try:
        await wait_until(all_recorded, within=120, what=f"{expected} resent messages replayed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {last[0]} recorded") from None
    stored = await scalar(db_url, rows_query)
    assert stored == rows, f"{sent} points sent twice: {stored} rows stored, {rows} expected"
    return sent


def worker_settings(db_url: str, mqtt_url: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "db_url": db_url,
        "mqtt_url": mqtt_url,
        "client_id": "ingest-test",
        "health_port": None,
        "batch_max_wait_ms": 50,
        "retry_initial_s": 0.1,
        "retry_max_s": 1.0,
        "registry_miss_retry_s": 0.5,
        "keepalive_s": 10,
        # Rollups have their own tests (tests/kpi); test_rollups_in_ingest turns them on.
        "rollups": False,
    }
    values.update(overrides)
    return ingest_settings(**values)


class Worker:
    """An in-process ingest worker (run_ingest) the test can stop."""

    def __init__(self, settings: IngestSettings, client_factory: Any = None) -> None:
        from ingest.metrics import IngestMetrics
        from ingest.service import run_ingest
        from zhizao.mqtt import paho_client

        self.settings = settings
        self.metrics = IngestMetrics()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            run_ingest(
                settings,
                stop=self.stop,
                metrics=self.metrics,
                client_factory=client_factory or paho_client,
            )
        )

    async def connected(self, within: float = 30) -> None:
        async def check() -> bool:
            if self.task.done():
                self.task.result()
            return self.metrics.broker_connected._value.get() == 1

        await wait_until(check, within=within, what="worker connected")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=60)


@dataclass(frozen=True)
class Letter:
    """A dead letter as an operator sees it in ``zhizao ingest dead-letters list``."""

    id: int
    topic: str
    enterprise: str | None
    edge: str | None
    seq: int | None
    point_index: int | None
    reason: str
    payload: bytes


async def letters(db_url: str) -> list[Letter]:
    conn = await connect(db_url, autocommit=True)
    async with conn:
        cur = await conn.execute(
            "SELECT id, topic, enterprise, edge_id, seq, point_index, reason, payload"
            " FROM dead_letter ORDER BY id"
        )
        return [Letter(*row[:7], bytes(row[7])) for row in await cur.fetchall()]


async def get_health(port: int) -> tuple[int, dict[str, Any]]:
    """GET /healthz of a worker: the status code and the JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def http_health(port: int) -> tuple[int, dict[str, Any]]:
    """GET /health of a service (blocking): the status code and the JSON body; 0 and {}
    while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}
