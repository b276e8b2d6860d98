"""Fault tests: kill, outage and restart under load; sent = stored, no duplicates.

Each test ends by sending a known part of its stream a second time (what a broker
redelivery or an edge resending its spool does) and checks that ingest absorbed it:
every resent message recorded as a replay (after the resend), the duplicate rows
counted, and the rows stored unchanged. Counting distinct keys against rows could not
do that: the primary key makes them equal whatever ingest does.

Publishing runs in a thread (paho's own loop) so that the in-process worker keeps the
event loop; every wait is on a condition with a generous timeout, never on time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fix_mqtt import Mosquitto
from tests.fix_pgcluster import PgCluster
from tests.ingest.support import (
    Factory,
    Publisher,
    Worker,
    data_messages,
    register,
    resend_absorbed,
    scalar,
    wait_for_count,
    wait_until,
    worker_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROWS = "SELECT count(*) FROM metric_point"
#: The messages of each edge every test sends twice.
RESENT = range(10, 30)
# The duplicate-row counters are compared with >=: after a fault the broker may still
# redeliver a message of the stream while the resent ones are absorbed.


def _duplicates(worker: Worker) -> float:
    return float(worker.metrics.rows_duplicate._value.get())


def _stream(
    url: str,
    factories: list[Factory],
    messages: int,
    points: int,
    *,
    first_seq: int = 0,
    pace_s: float = 0.0,
) -> threading.Thread:
    """Publish ``messages`` per factory in the background, interleaved.

    ``pace_s`` spreads the stream out (a pause per 50 messages) so that a fault can
    land in its middle; nothing is asserted on time.
    """

    def publish() -> None:
        publisher = Publisher(url, client_id=f"pub-{os.getpid()}-{threading.get_ident()}")
        try:
            per_factory = [
                data_messages(f, range(first_seq, first_seq + messages), points) for f in factories
            ]
            batch: list[tuple[str, bytes]] = []
            for i in range(messages):
                batch += [m[i] for m in per_factory]
                if len(batch) >= 50:
                    publisher.publish_all(batch)
                    batch = []
                    time.sleep(pace_s)
            publisher.publish_all(batch)
        finally:
            publisher.close()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    return thread


async def _rows(db_url: str) -> int:
    try:
        return int(await scalar(db_url, ROWS))
    except Exception:  # noqa: BLE001 - the database may be down in the outage test
        return -1


def _spawn_worker(db_url: str, mqtt_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ZHIZAO_DB_URL": db_url,
        "ZHIZAO_INGEST_MQTT_URL": mqtt_url,
        "ZHIZAO_INGEST_CLIENT_ID": "ingest-kill-test",
        "ZHIZAO_INGEST_HEALTH_PORT": "0",
        "ZHIZAO_INGEST_BATCH_MAX_MESSAGES": "40",
        "ZHIZAO_INGEST_BATCH_MAX_WAIT_MS": "50",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ingest"],
            env=env,
            stdout=out,
            stderr=out,
            cwd=Path(__file__).resolve().parents[2],
        )


async def test_kill_9_mid_stream_then_restart(
    db_url: str, own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    factories = await register(db_url)
    messages, points = 300, 20
    expected = len(factories) * messages * points
    log = tmp_path / "worker.log"
    worker = _spawn_worker(db_url, own_mosquitto.url, log)
    try:
        # The session must exist before publishing starts, or the broker drops messages.
        await wait_until(
            lambda: asyncio.to_thread(lambda: b"connected to broker" in log.read_bytes()),
            within=60,
            what="worker connected",
        )
        stream = _stream(own_mosquitto.url, factories, messages, points, pace_s=0.3)

        async def partly_stored() -> bool:
            return 0 < await _rows(db_url) < expected * 3 // 4

        await wait_until(partly_stored, within=120, what="a part of the stream stored")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        killed_at = await _rows(db_url)
        worker = _spawn_worker(db_url, own_mosquitto.url, log)
        await asyncio.to_thread(stream.join, 300)
        await wait_for_count(db_url, ROWS, expected, within=300)
        assert killed_at < expected
        await resend_absorbed(db_url, own_mosquitto.url, factories, RESENT, points,
                              rows_query=ROWS, rows=expected)  # fmt: skip
        assert await scalar(db_url, "SELECT count(*) FROM dead_letter") == 0
        # SIGTERM: a clean stop, exit status 0.
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 60) == 0
        assert b"ingest stopped" in log.read_bytes()
    finally:
        worker.kill()
        worker.wait(timeout=30)


async def test_postgres_stopped_mid_stream(pg_cluster: PgCluster, own_mosquitto: Mosquitto) -> None:
    db_url = pg_cluster.url
    factories = await register(db_url)
    messages, points = 100, 20
    expected = 2 * len(factories) * messages * points
    worker = Worker(worker_settings(db_url, own_mosquitto.url, batch_max_messages=20))
    await worker.connected()
    try:
        first = _stream(own_mosquitto.url, factories, messages, points)
        await asyncio.to_thread(first.join, 300)
        # Stop the database while the first half may still be in flight.
        await asyncio.to_thread(pg_cluster.stop, "fast")
        second = _stream(own_mosquitto.url, factories, messages, points, first_seq=messages)

        async def database_failing() -> bool:
            # Look-ups or commits, whichever the worker was doing when it went away.
            failures = sum(
                sample.value
                for family in worker.metrics.db_errors.collect()
                for sample in family.samples
                if sample.name.endswith("_total")
            )
            return failures >= 2

        await wait_until(database_failing, within=120, what="database attempts failing")
        await asyncio.to_thread(second.join, 300)
        await asyncio.sleep(3)  # stay down for a while: several retries, the window fills
        assert not worker.task.done()
        assert await _rows(db_url) == -1  # really down
        await asyncio.to_thread(pg_cluster.start)
        await wait_for_count(db_url, ROWS, expected, within=300)
        before = _duplicates(worker)
        sent = await resend_absorbed(db_url, own_mosquitto.url, factories, RESENT, points,
                                     rows_query=ROWS, rows=expected)  # fmt: skip
        assert _duplicates(worker) - before >= sent
        assert not worker.task.done()
    finally:
        await worker.close()


async def test_broker_restarted_mid_stream(db_url: str, own_mosquitto: Mosquitto) -> None:
    factories = await register(db_url)
    messages, points = 200, 20
    settings = worker_settings(db_url, own_mosquitto.url, batch_max_messages=10)
    worker = Worker(settings)
    await worker.connected()
    try:
        # 1. Restart while the worker is consuming a stream (messages in flight).
        first = _stream(own_mosquitto.url, factories, messages, points)
        await asyncio.to_thread(first.join, 300)

        async def some_stored() -> bool:
            return await _rows(db_url) > 0

        await wait_until(some_stored, within=120, what="a part of the stream stored")
        await asyncio.to_thread(own_mosquitto.restart)
        await worker.connected(within=120)
        assert worker.metrics.broker_connects._value.get() >= 2
        await worker.close()
        # 2. Restart while the worker is away: what its session queued must survive.
        thread = threading.Thread(
            target=_publish_range,
            args=(own_mosquitto.url, factories, messages, points),
            daemon=True,
        )
        thread.start()
        await asyncio.to_thread(thread.join, 300)
        await asyncio.to_thread(own_mosquitto.restart)
        worker = Worker(settings)
        expected = 2 * len(factories) * messages * points
        await wait_for_count(db_url, ROWS, expected, within=300)
        before = _duplicates(worker)
        sent = await resend_absorbed(db_url, own_mosquitto.url, factories, RESENT, points,
                                     rows_query=ROWS, rows=expected)  # fmt: skip
        assert _duplicates(worker) - before >= sent
    finally:
        await worker.close()


def _publish_range(url: str, factories: list[Factory], messages: int, points: int) -> None:
    publisher = Publisher(url, client_id="pub-after-restart")
    try:
        for f in factories:
            publisher.publish_all(data_messages(f, range(messages, 2 * messages), points))
    finally:
        publisher.close()


async def test_two_workers_share_one_subscription(db_url: str, own_mosquitto: Mosquitto) -> None:
    factories = await register(db_url, extra_edges=2)
    messages, points = 150, 10
    expected = len(factories) * messages * points
    one = Worker(worker_settings(db_url, own_mosquitto.url, client_id="ingest-1"))
    two = Worker(worker_settings(db_url, own_mosquitto.url, client_id="ingest-2"))
    await one.connected()
    await two.connected()
    try:
        stream = _stream(own_mosquitto.url, factories, messages, points)
        await asyncio.to_thread(stream.join, 300)
        await wait_for_count(db_url, ROWS, expected, within=300)
        assert one.metrics.messages_acked > 0
        assert two.metrics.messages_acked > 0
        assert one.metrics.messages_acked + two.metrics.messages_acked == len(factories) * messages
        # Out-of-order delivery between the workers leaves no gap behind.
        assert await scalar(db_url, "SELECT count(*) FROM sequence_gap") == 0
        before = _duplicates(one) + _duplicates(two)
        sent = await resend_absorbed(db_url, own_mosquitto.url, factories, RESENT, points,
                                     rows_query=ROWS, rows=expected)  # fmt: skip
        # Whichever worker got them, every resent point was offered and absorbed.
        assert _duplicates(one) + _duplicates(two) - before >= sent
    finally:
        await one.close()
        await two.close()
