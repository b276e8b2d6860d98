"""Bounded memory (issue 10): no burst and no single message can exhaust the worker.

A worker process takes large messages during a database outage; its resident set is
sampled from /proc and must stay under the bound docs/ingest.md states ("Memory"),
every message must be stored exactly once when the database is back, and the resident
set must come back near where it was. A packet above ``max_packet_bytes`` never enters
the worker, whatever the protocol, and the messages behind it flow.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.settings import MAX_PACKET_BYTES
from tests.fix_mqtt import Mosquitto
from tests.fix_pgcluster import PgCluster
from tests.ingest.burst import EVENT_POINTS, MIB, ROWS, event_payload, run_burst
from tests.ingest.support import (
    Publisher,
    Worker,
    register,
    scalar,
    wait_for_count,
    worker_settings,
)
from zhizao.wire import data_topic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WINDOW = 32 * MIB
#: docs/ingest.md, "Memory": RSS ≤ baseline + 4 × inflight_max_bytes + 2 × max_packet_bytes.
K = 4
#: After the burst, the worker is back within this of its baseline (docs/robustness.md).
SETTLE = 32 * MIB


async def test_a_burst_during_a_database_outage_stays_under_the_bound(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    # The broker queues the burst in memory; saving 300 MiB every second would only
    # slow the test down.
    broker = Mosquitto(tmp_path / "broker", extra_config="autosave_interval 3600\n")
    broker.start()
    try:
        result = await run_burst(
            pg_cluster,
            broker,
            tmp_path / "worker.log",
            messages=100,
            payload_bytes=3 * MIB,
            inflight_max_bytes=WINDOW,
            settle_bytes=SETTLE,
        )
    finally:
        broker.kill()
    report = "\n".join(result.lines(WINDOW))
    print(report)
    # The window held what it allows (one message past the bound), the broker the rest.
    assert result.inflight_bytes_max <= WINDOW + MAX_PACKET_BYTES, report
    assert result.inflight_bytes_max < result.messages * result.payload_bytes // 4, report
    bound = result.baseline + K * WINDOW + 2 * MAX_PACKET_BYTES
    assert result.peak_outage <= bound, report
    assert result.peak_drain <= bound, report
    # Every message stored exactly once: all rows, each sequence number counted once.
    assert result.rows_stored == result.rows_expected, report
    assert result.messages_counted == result.messages + 5, report  # and the warm-up
    assert (result.replays, result.gaps, result.dead_letters) == (0, 0, 0), report
    # And the memory is given back.
    assert result.memory_trims >= 1, report
    assert result.after <= result.baseline + SETTLE, report


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_packet_above_max_packet_bytes_never_enters_the_worker(
    db_url: str, own_mosquitto: Mosquitto, protocol: str
) -> None:
    factory = (await register(db_url))[0]
    topic = data_topic(factory.enterprise, factory.edge)
    oversize = event_payload(factory, 1, MAX_PACKET_BYTES + MIB)
    settings = worker_settings(
        db_url, own_mosquitto.url, mqtt_protocol=protocol, client_id=f"ingest-big-{protocol}"
    )
    worker = Worker(settings)
    await worker.connected()
    publisher = Publisher(own_mosquitto.url, client_id=f"pub-big-{protocol}")
    try:
        # The broker here has no size limit of its own: the worker's is what counts.
        await asyncio.to_thread(publisher.publish_all, [
            (topic, event_payload(factory, 0, 20_000)),
            (topic, oversize),
            (topic, event_payload(factory, 2, 20_000)),
        ])  # fmt: skip
        await wait_for_count(db_url, ROWS, 2 * EVENT_POINTS)
        # Not a dead letter: it never got into the worker's memory. The sequence
        # tracker reports the message as missing.
        assert await scalar(db_url, "SELECT count(*) FROM dead_letter") == 0
        gap = "SELECT count(*) FROM sequence_gap WHERE first_seq = 1 AND last_seq = 1"
        assert await scalar(db_url, gap) == 1
        dropped = worker.metrics.oversize_dropped._value.get()
        # MQTT 5: the broker dropped it (Maximum Packet Size); 3.1.1: the worker did,
        # as it arrived, and acknowledged it.
        assert dropped == (0 if protocol == "5" else 1)
        await worker.close()
        # Acknowledged, it does not come back with the session.
        worker = Worker(settings)
        await worker.connected()
        await asyncio.to_thread(publisher.publish_all, [(topic, event_payload(factory, 3, 20_000))])
        await wait_for_count(db_url, ROWS, 3 * EVENT_POINTS)
        assert worker.metrics.oversize_dropped._value.get() == 0
        assert worker.metrics.messages_received_count == 1
    finally:
        publisher.close()
        await worker.close()
