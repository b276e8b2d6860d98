"""Soak: a steady stream into an ingest worker that is killed with SIGKILL again and again.

Run:  .venv/bin/python bench/soak_ingest.py [--minutes 10] [--rate 50000] [--kill-every 20]

A publisher sends 200-point messages at ``--rate`` points/s to a Mosquitto of its own
(QoS 1, each message acknowledged by the broker) while a worker (``python -m ingest``,
default settings: shared subscription, persistent session) is killed with SIGKILL every
``--kill-every`` seconds and started again at once. After each kill the publisher
also sends its last ``--replay`` messages again, as an edge does when a PUBACK was
lost, so the write path's fallback from COPY to the staging path runs every time
(messages the dead worker committed but had not acknowledged come back as well).

At the end it waits for the worker to catch up and checks, on the database:
rows = distinct keys = points sent (nothing lost, nothing twice), the KPI tally
counts each row once, no dead letters, no sequence gaps. It prints the figures and
exits 1 if any check fails. The figures of a run are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.bench_ingest import EDGE, ENT, Mosquitto, payload, setup_db
from zhizao.storage.connection import connect, drop_database
from zhizao.wire import data_topic

POINTS = 200


class Stream(threading.Thread):
    """Publishes paced 200-point messages until stopped; counts what the broker took."""

    def __init__(self, port: int, rate_points: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.rate_messages = rate_points / POINTS
        self.sent = 0
        self.resent = 0
        self.stopping = threading.Event()
        self._replay = 0

    def replay(self, messages: int) -> None:
        """Send the last ``messages`` again, as an edge does after a lost PUBACK."""
        self._replay = messages

    def run(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-publisher",
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        topic = data_topic(ENT, EDGE)
        started = time.monotonic()
        infos = []
        try:
            while not self.stopping.is_set():
                due = int((time.monotonic() - started) * self.rate_messages)
                while self.sent < due:
                    infos.append(client.publish(topic, payload(self.sent, POINTS), qos=1))
                    self.sent += 1
                if self._replay:
                    first, self._replay = max(0, self.sent - self._replay), 0
                    for seq in range(first, self.sent):
                        infos.append(client.publish(topic, payload(seq, POINTS), qos=1))
                    self.resent += self.sent - first
                time.sleep(0.01)
                # Keep memory flat: forget what the broker has acknowledged.
                infos = [info for info in infos if not info.is_published()]
            for info in infos:
                info.wait_for_publish(120)
        finally:
            client.disconnect()
            client.loop_stop()


def spawn(db_url: str, mqtt_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ZHIZAO_DB_URL": db_url, "ZHIZAO_INGEST_MQTT_URL": mqtt_url,
           "ZHIZAO_INGEST_CLIENT_ID": "soak-ingest", "ZHIZAO_INGEST_HEALTH_PORT": "0",
           "ZHIZAO_INGEST_ROLLUPS": "false"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ingest"], env=env, stdout=out,
                                stderr=out, cwd=Path(__file__).resolve().parents[1])


def wait_for_line(log: Path, text: bytes) -> None:
    while text not in log.read_bytes():
        time.sleep(0.1)


async def scalar(url: str, query: str) -> int:
    conn = await connect(url, autocommit=True)
    async with conn:
        cur = await conn.execute(query.encode())
        row = await cur.fetchone()
        return int(row[0] or 0) if row else 0


async def soak(args: argparse.Namespace) -> bool:
    url = await setup_db(f"zhizao_soak_{os.getpid()}")
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    broker = Mosquitto(folder)
    broker.start()
    log = folder / "worker.log"
    worker = spawn(url, broker.url, log)
    try:
        # The worker's session must exist before the stream starts.
        await asyncio.to_thread(wait_for_line, log, b"connected to broker")
        stream = Stream(broker.port, args.rate)
        stream.start()
        kills = 0
        ends = time.monotonic() + args.minutes * 60
        while time.monotonic() < ends:
            await asyncio.sleep(args.kill_every)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
            kills += 1
            worker = spawn(url, broker.url, log)
            stream.replay(args.replay)
            stored = await scalar(url, "SELECT count(*) FROM metric_point")
            print(f"  kill {kills}: {stream.sent * POINTS:,} points sent, {stored:,} stored",
                  flush=True)
        stream.stopping.set()
        await asyncio.to_thread(stream.join, 300)
        expected = stream.sent * POINTS
        deadline = time.monotonic() + 600
        stored = 0
        while time.monotonic() < deadline:
            stored = await scalar(url, "SELECT count(*) FROM metric_point")
            if stored >= expected:
                break
            await asyncio.sleep(1)
        figures = {
            "points sent (acknowledged by the broker)": expected,
            "rows stored": stored,
            "distinct keys": await scalar(
                url, "SELECT count(DISTINCT (device_id, metric_id, time)) FROM metric_point"),
            "KPI tally points": await scalar(url, "SELECT sum(points) FROM device_hour_tally"),
            "dead letters": await scalar(url, "SELECT count(*) FROM dead_letter"),
            "open sequence gaps": await scalar(url, "SELECT count(*) FROM sequence_gap"),
            "replayed messages recorded": await scalar(
                url, "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM sequence_event"
                " WHERE kind = 'replay'"),
        }
        figures["messages sent again by the publisher"] = stream.resent
        print(f"soak: {args.minutes:g} min at {args.rate:,.0f} points/s, {kills} SIGKILLs")
        for label, value in figures.items():
            print(f"  {label:42s} {value:>12,}")
        ok = (stored == expected == figures["distinct keys"] == figures["KPI tally points"]
              and figures["dead letters"] == 0 and figures["open sequence gaps"] == 0)
        print("soak: PASS" if ok else "soak: FAIL")
        return ok
    finally:
        worker.kill()
        worker.wait(timeout=30)
        broker.kill()
        await drop_database(url)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50_000, help="points per second")
    parser.add_argument("--kill-every", type=float, default=20, help="seconds")
    parser.add_argument("--replay", type=int, default=100,
                        help="messages the publisher sends again after each kill")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(soak(args)) else 1)


if __name__ == "__main__":
    cli()
