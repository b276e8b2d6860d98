"""Fault tests: broker outage, spool overflow, kill -9 of a real edge process.

Each counts what was accepted (or published by the devices) and what reached the
platform broker; duplicates are allowed (at least once), losses are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import UplinkConfig
from edge.spool import Spool
from edge.uplink import Uplink
from tests.edge.subscriber import Subscriber
from tests.fix_mqtt import Mosquitto
from zhizao.wire import Point, PointKind, data_topic

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of the test's own whose persistence works also when run as root.

    Started as root, Mosquitto drops to the ``mosquitto`` user, which cannot write the
    test's temporary folder: persistence (and the log) would silently fail, and a
    restart would lose the test subscriber's session and what was queued for it.
    """
    own = Mosquitto(tmp_path / "broker")
    own.start()
    yield own
    own.kill()


ENTERPRISE = "91330106MA2XXXXX0Y"
T0 = 1_772_409_600_000
ROOT = Path(__file__).resolve().parents[2]


def points(start: int, count: int) -> list[Point]:
    return [
        Point(device="D-01", ts=T0 + i, kind=PointKind.METRIC, name="v", value=i)
        for i in range(start, start + count)
    ]


def received_values(sub: Subscriber) -> set[int]:
    return {int(p.value) for p in sub.points() if p.kind is PointKind.METRIC}


@contextlib.asynccontextmanager
async def edge(
    url: str, path: Path, edge_id: str, **spool: object
) -> AsyncIterator[tuple[Spool, Uplink]]:
    config = UplinkConfig(url=url, batch_max_points=100, batch_max_wait_s=0.05, reconnect_max_s=1.0)
    async with Spool(path, enterprise=ENTERPRISE, edge=edge_id, **spool) as sp:  # type: ignore[arg-type]
        up = Uplink(config, enterprise=ENTERPRISE, edge_id=edge_id, spool=sp)
        task = asyncio.create_task(up.run())
        try:
            yield sp, up
        finally:
            await up.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_broker_outage_fills_the_spool_and_drains_it_with_nothing_lost(
    broker: Mosquitto, tmp_path: Path
) -> None:
    sub = await Subscriber(broker.url, [data_topic(ENTERPRISE, "edge-out")]).start()
    try:
        async with edge(broker.url, tmp_path / "spool.db", "edge-out") as (spool, up):
            await up.session.wait_connected()
            for start in range(0, 300, 30):
                await spool.put(points(start, 30))
            await up.wait_acked(300)

            broker.stop()
            await up.session.wait_disconnected()
            for start in range(300, 1500, 30):
                await spool.put(points(start, 30))
            # Nothing can leave while the broker is down: all of it is on disk.
            assert spool.stats.depth_points >= 1200

            broker.start()
            await sub.wait_until(lambda: len(received_values(sub)) >= 1500, within_s=120)
            async with asyncio.timeout(60):
                await up.wait_acked(1500)
            assert spool.stats.depth_points == 0
            assert spool.stats.dropped_overflow_total == 0
    finally:
        sub.stop()
    assert received_values(sub) == set(range(1500))  # sent == received
    assert spool.stats.accepted_total == 1500


async def test_spool_overflow_during_outage_drops_the_oldest_and_counts_them(
    broker: Mosquitto, tmp_path: Path
) -> None:
    sub = await Subscriber(broker.url, [data_topic(ENTERPRISE, "edge-ovf")]).start()
    broker.stop()
    try:
        async with edge(broker.url, tmp_path / "spool.db", "edge-ovf", max_bytes=40_000) as (
            spool,
            up,
        ):
            total = 2000
            for start in range(0, total, 50):
                await spool.put(points(start, 50))
            dropped = spool.stats.dropped_overflow_total
            kept = spool.stats.depth_points
            assert dropped > 0
            assert dropped + kept == total
            broker.start()
            async with asyncio.timeout(60):
                await up.wait_acked(kept)
            await sub.wait_until(lambda: len(received_values(sub)) >= kept, within_s=60)
    finally:
        sub.stop()
    # Exactly the newest arrived: the oldest went first, and every drop was counted.
    assert received_values(sub) == set(range(dropped, total))


# -- kill -9 of a real edge process -----------------------------------------------


class Devices:
    """A device publishing numbered readings (QoS 1) until stopped, in a thread."""

    def __init__(self, url: str, topic: str) -> None:
        parts = urlsplit(url)
        self.topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex}")
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._last: mqtt.MQTTMessageInfo | None = None
        self._stopped = False

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            body = json.dumps({"ts": T0 + self.sent, "v": self.sent}).encode()
            self._last = self.client.publish(self.topic, body, qos=1)
            self.sent += 1
            self._stop.wait(0.0005)  # a steady stream, not synchronisation

    def stop(self) -> int:
        if self._stopped:
            return self.sent
        self._stopped = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self._last is not None:
            self._last.wait_for_publish(30)
        self.client.disconnect()
        self.client.loop_stop()
        return self.sent


def edge_config(tmp_path: Path, url: str) -> Path:
    text = f"""
identity: {{enterprise: {ENTERPRISE}, edge_id: edge-k9}}
uplink: {{url: "{url}", batch_max_points: 25, batch_max_wait_s: 0.05, reconnect_max_s: 1}}
spool: {{path: spool.db}}
http: {{port: null}}
sources:
  - type: mqtt
    name: devices
    broker: {{url: "{url}", reconnect_max_s: 1}}
    topics:
      - topic: "factory/{{device}}/data"
        timestamp: {{path: ts, format: epoch_ms}}
        fields: [{{path: v, name: v}}]
"""
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def start_edge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zhizao.cli.edge", "run", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def snapshot(spool: Path, into: Path) -> tuple[dict[tuple[str, int], int | None], set[int], int]:
    """What the spool of a killed edge holds: (device, value) → batch seq (None: not
    batched yet), the seqs of its formed batches, and its next seq."""
    into.mkdir()
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{spool}{suffix}")
        if source.exists():
            shutil.copy(source, into / f"spool.db{suffix}")
    db = sqlite3.connect(into / "spool.db")
    try:
        batches = db.execute("SELECT seq, first_id, last_id FROM batches").fetchall()
        held: dict[tuple[str, int], int | None] = {}
        for row_id, body in db.execute("SELECT id, body FROM points"):
            point = json.loads(body)
            if point["kind"] != "metric":
                continue
            seq = next((s for s, first, last in batches if first <= row_id <= last), None)
            held[(point["device"], int(point["value"]))] = seq
        next_seq = int(db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
    finally:
        db.close()
    return held, {int(s) for s, _, _ in batches}, next_seq


def readings(sub: Subscriber, device: str) -> set[int]:
    return {int(p.value) for p in sub.points() if p.device == device and p.kind is PointKind.METRIC}


async def test_kill_9_then_restart_every_accepted_point_arrives_with_its_seq(
    broker: Mosquitto, tmp_path: Path
) -> None:
    url = broker.url
    config = edge_config(tmp_path, url)
    log = tmp_path / "edge.log"
    sub = await Subscriber(url, [data_topic(ENTERPRISE, "edge-k9")]).start()
    devices = Devices(url, "factory/D-01/data")
    process = start_edge(config, log)
    try:
        # The edge's persistent session must exist before the stream starts, so that
        # the broker keeps every reading for it from then on: wait for a first batch.
        warm_up = Devices(url, "factory/D-00/data")
        warm_up.start()
        await sub.wait_until(lambda: bool(sub.batches), within_s=60)
        warm_up.stop()

        devices.start()
        await sub.wait_until(lambda: len(readings(sub, "D-01")) >= 300, within_s=120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        seen_before = {b.seq for b in sub.batches}
        held, formed, next_seq = snapshot(tmp_path / "spool.db", tmp_path / "snapshot")

        process = start_edge(config, log)
        await sub.wait_until(lambda: len(readings(sub, "D-01")) >= 600, within_s=120)
        sent = devices.stop()
        await sub.wait_until(lambda: readings(sub, "D-01") >= set(range(sent)), within_s=120)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        devices.stop()
        sub.stop()

    # Every reading the device published arrived (sent == received; duplicates allowed).
    assert readings(sub, "D-01") == set(range(sent))
    arrived: dict[tuple[str, int], set[int]] = {}
    for batch in sub.batches:
        for p in batch.points:
            if p.kind is PointKind.METRIC:
                arrived.setdefault((p.device, int(p.value)), set()).add(batch.seq)
    # Everything the killed edge's spool held arrived; what was already in a batch
    # arrived (also) under that batch's original sequence number.
    for key, seq in held.items():
        assert key in arrived, key
        if seq is not None:
            assert seq in arrived[key], (key, seq, arrived[key])
    # After the restart, a batch is either one formed before the kill, re-sent, or
    # new with a higher number than any before.
    for batch in sub.batches:
        if batch.seq not in seen_before:
            assert batch.seq in formed or batch.seq >= next_seq
    # A re-sent sequence number carries exactly the points it had.
    by_seq: dict[int, list[Point]] = {}
    for batch in sub.batches:
        if batch.seq in by_seq:
            assert by_seq[batch.seq] == list(batch.points)
        by_seq[batch.seq] = list(batch.points)
