"""A burst of large messages during a database outage, against a real worker process.

Shared by ``tests/ingest/test_memory.py`` (a burst small enough for the suite) and
``bench/burst_ingest.py`` (500 × 3 MiB, figures for docs/robustness.md). Steps:

1. a worker (``python -m ingest``) consumes a few small messages, so that its
   connections and caches exist; its resident set then is the *baseline*;
2. the worker's database (a PostgreSQL cluster of the caller's own) is stopped;
3. the burst is published, QoS 1, each message acknowledged by the broker; the worker
   takes what its in-flight window allows and the broker queues the rest;
4. once the worker has stopped reading (its window is full), the database comes back
   and the worker drains the broker's queue;
5. when every row is stored, the resident set is sampled again.

The worker's VmRSS is sampled all along from ``/proc/<pid>/status``. The payloads are
``event`` points whose values are long texts (a machine's alarm log, say): the worst
case for memory per byte, since every byte of a payload is kept, as text, in the rows
of its batch until the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.memory import rss_bytes
from tests.fix_mqtt import Mosquitto
from tests.ingest.support import T0, Factory, Publisher, register, scalar, wait_until
from zhizao.embedded import free_port
from zhizao.wire import data_topic

MIB = 2**20
EVENT_POINTS = 1000
ROWS = "SELECT count(*) FROM device_event WHERE name = 'alarm_log'"


def event_payload(factory: Factory, seq: int, size: int, points: int = EVENT_POINTS) -> bytes:
    """A data message of about ``size`` bytes: ``points`` events with long text values."""
    text_len = max(1, (size - 400) // points - 110)
    filler = (f"seq {seq} " * (text_len // 6 + 2))[:text_len]
    body = {
        "v": 1,
        "enterprise": factory.enterprise,
        "edge": factory.edge,
        "seq": seq,
        "sent_at": T0 + seq * 10_000,
        "points": [
            {
                "device": factory.devices[i % len(factory.devices)],
                "ts": T0 + seq * 10_000 + i,
                "kind": "event",
                "name": "alarm_log",
                "value": filler,
            }
            for i in range(points)
        ],
    }
    return json.dumps(body).encode()


@dataclass
class Sampler:
    """Samples a process's VmRSS in a thread; ``mark`` starts a new phase's peak."""

    pid: int
    interval_s: float = 0.02
    samples: int = 0
    peaks: dict[str, int] = field(default_factory=dict)
    phase: str = "start"
    last: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = rss_bytes(self.pid)
            except (OSError, LookupError):
                return  # the process is gone
            self.samples += 1
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), self.last)
            time.sleep(self.interval_s)

    def mark(self, phase: str) -> None:
        self.phase = phase

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@dataclass
class BurstResult:
    messages: int
    payload_bytes: int
    rows_expected: int
    rows_stored: int
    messages_counted: int
    replays: int
    gaps: int
    dead_letters: int
    baseline: int
    peak_outage: int
    peak_drain: int
    after: int
    inflight_bytes_max: int
    seconds_drain: float
    memory_trims: int

    def lines(self, inflight_max_bytes: int) -> list[str]:
        m = MIB
        return [
            f"burst: {self.messages} messages x {self.payload_bytes / m:.2f} MiB"
            f" = {self.messages * self.payload_bytes / m:.0f} MiB,"
            f" inflight_max_bytes {inflight_max_bytes / m:.0f} MiB",
            f"worker RSS baseline        {self.baseline / m:8.1f} MiB",
            f"worker RSS peak, outage    {self.peak_outage / m:8.1f} MiB"
            f"  (+{(self.peak_outage - self.baseline) / m:.1f})",
            f"worker RSS peak, draining  {self.peak_drain / m:8.1f} MiB"
            f"  (+{(self.peak_drain - self.baseline) / m:.1f})",
            f"worker RSS after the drain {self.after / m:8.1f} MiB"
            f"  (+{(self.after - self.baseline) / m:.1f}), memory trims {self.memory_trims}",
            f"in-flight bytes, highest seen {self.inflight_bytes_max / m:.1f} MiB",
            f"rows stored {self.rows_stored} of {self.rows_expected}; messages counted"
            f" {self.messages_counted}, replays {self.replays}, gaps {self.gaps},"
            f" dead letters {self.dead_letters}; drain {self.seconds_drain:.1f} s",
        ]


def spawn_worker(
    db_url: str, mqtt_url: str, log: Path, health_port: int, **settings: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ZHIZAO_DB_URL": db_url,
        "ZHIZAO_INGEST_MQTT_URL": mqtt_url,
        "ZHIZAO_INGEST_CLIENT_ID": f"ingest-burst-{os.getpid()}",
        "ZHIZAO_INGEST_HEALTH_PORT": str(health_port),
        "ZHIZAO_INGEST_ROLLUPS": "false",
        "ZHIZAO_INGEST_RETRY_MAX_S": "1",
        **{f"ZHIZAO_INGEST_{k.upper()}": v for k, v in settings.items()},
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ingest"],
            env=env,
            stdout=out,
            stderr=out,
            cwd=Path(__file__).resolve().parents[2],
        )


def _get(port: int, path: str) -> bytes:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:  # 503 while the database is down: still a body
        return bytes(exc.read())


def health(port: int) -> dict[str, Any]:
    return dict(json.loads(_get(port, "/healthz")))


def metric(port: int, name: str) -> float:
    """A metric of the worker's /metrics, summed over its labels (0 when absent)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in _get(port, "/metrics").decode().splitlines()
        if line.startswith((name + " ", name + "{"))
    )


def _publish(url: str, factory: Factory, seqs: range, size: int) -> None:
    publisher = Publisher(url, client_id=f"pub-burst-{os.getpid()}-{seqs.start}")
    topic = data_topic(factory.enterprise, factory.edge)
    try:
        # In slices: the publisher should not hold the whole burst either.
        for start in range(seqs.start, seqs.stop, 10):
            chunk = range(start, min(start + 10, seqs.stop))
            publisher.publish_all([(topic, event_payload(factory, s, size)) for s in chunk])
    finally:
        publisher.close()


async def run_burst(
    cluster: Any,
    broker: Mosquitto,
    log: Path,
    *,
    messages: int,
    payload_bytes: int,
    inflight_max_bytes: int,
    settle_bytes: int,
    warmup: int = 5,
) -> BurstResult:
    """Steps 1-5 of the module docstring; ``cluster`` is a tests.fix_pgcluster.PgCluster.

    After the drain it waits (30 s at most) for the RSS to come within ``settle_bytes``
    of the baseline, and reports where it is.
    """
    db_url = cluster.url
    factory = (await register(db_url))[0]
    port = free_port()
    worker = spawn_worker(
        db_url, broker.url, log, port, inflight_max_bytes=str(inflight_max_bytes)
    )
    sampler = Sampler(worker.pid)
    try:
        await wait_until(
            lambda: asyncio.to_thread(lambda: b"connected to broker" in log.read_bytes()),
            within=60,
            what="worker connected",
        )
        # 1. Warm up with small messages, then the baseline.
        await asyncio.to_thread(_publish, broker.url, factory, range(warmup), 20_000)
        await _wait_rows(db_url, warmup * EVENT_POINTS)
        sampler.start()
        await asyncio.sleep(1.0)  # a few dozen samples of the idle worker
        baseline = sampler.last
        # 2.-3. The database goes away; the burst arrives.
        sampler.mark("outage")
        await asyncio.to_thread(cluster.stop, "fast")
        burst = range(warmup, warmup + messages)
        publishing = asyncio.ensure_future(
            asyncio.to_thread(_publish, broker.url, factory, burst, payload_bytes)
        )
        inflight_max = [0]

        async def window_full() -> bool:
            state = await asyncio.to_thread(health, port)
            inflight_max[0] = max(inflight_max[0], int(state.get("inflight_bytes", 0)))
            paused = await asyncio.to_thread(metric, port, "zhizao_ingest_reading_paused")
            converted = await asyncio.to_thread(
                metric, port, "zhizao_ingest_messages_received_total"
            )
            # A window bounded only in messages (before issue 10) takes the whole burst.
            return paused == 1 or int(state["inflight"]) + converted >= warmup + messages

        await wait_until(window_full, within=600, what="the worker's window full")
        await asyncio.wait_for(publishing, timeout=900)
        for _ in range(10):  # the window stays full while the database is away
            await window_full()
            await asyncio.sleep(0.2)
        # 4. The database is back: the worker drains the broker's queue.
        sampler.mark("drain")
        started = time.monotonic()
        await asyncio.to_thread(cluster.start)
        expected = (warmup + messages) * EVENT_POINTS
        await _wait_rows(db_url, expected, within=900)
        seconds = time.monotonic() - started
        # 5. After the burst: the window drains, memory is handed back (a second later,
        # ingest.memory.TrimAfterBurst); the worker is idle, only a trim moves its RSS.
        sampler.mark("after")
        await wait_until(
            lambda: asyncio.to_thread(lambda: health(port).get("inflight_bytes", 0) == 0),
            within=60,
            what="the window drained",
        )
        with contextlib.suppress(AssertionError):  # the caller judges the figure
            await wait_until(
                lambda: _true(sampler.last <= baseline + settle_bytes),
                within=30,
                what="RSS back near the baseline",
            )
        after = sampler.last
        trims = int(await asyncio.to_thread(metric, port, "zhizao_ingest_memory_trims_total"))
        return BurstResult(
            messages=messages,
            payload_bytes=len(event_payload(factory, warmup, payload_bytes)),
            rows_expected=expected,
            rows_stored=int(await scalar(db_url, ROWS)),
            messages_counted=int(await scalar(db_url, "SELECT sum(messages) FROM edge_sequence")),
            replays=int(
                await scalar(db_url, "SELECT count(*) FROM sequence_event WHERE kind = 'replay'")
            ),
            gaps=int(await scalar(db_url, "SELECT count(*) FROM sequence_gap")),
            dead_letters=int(await scalar(db_url, "SELECT count(*) FROM dead_letter")),
            baseline=baseline,
            peak_outage=sampler.peaks.get("outage", 0),
            peak_drain=sampler.peaks.get("drain", 0),
            after=after,
            inflight_bytes_max=inflight_max[0],
            seconds_drain=seconds,
            memory_trims=trims,
        )
    finally:
        sampler.stop()
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=30)


async def _true(value: bool) -> bool:
    return value


async def _wait_rows(db_url: str, expected: int, within: float = 300) -> None:
    async def stored() -> bool:
        try:
            return bool(await scalar(db_url, ROWS) == expected)
        except Exception:  # noqa: BLE001 - the database may still be starting
            return False

    await wait_until(stored, within=within, what=f"{expected} rows stored")
