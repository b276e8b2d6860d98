"""Profile the ingest worker while it drains queued messages, and nothing else.

Run:  .venv/bin/python bench/profile_ingest.py [--messages 16000] [--seconds 8]
Needs py-spy (``pip install py-spy``; it attaches by pid, so run as root or with
ptrace allowed). Writes py-spy's raw stacks (all threads, idle samples included) and
prints the worker's main-thread time by activity.

The messages are queued in the worker's persistent session first, exactly as in
``bench_ingest.py``; py-spy attaches only then, so setup and publishing are not in the
profile.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_ingest

#: First matching frame wins: a stack is counted once, under its most specific activity.
ACTIVITIES = [
    ("select (selectors", "idle in epoll (waiting for PostgreSQL or the broker)"),
    ("decode_batch", "zhizao.wire.decode_batch (pydantic)"),
    ("encode_metrics", "packing the COPY buffer"),
    ("Converter._points", "per-point authorisation and rows"),
    ("Converter.convert", "convert: topic and envelope checks"),
    ("paho", "paho: reading and parsing MQTT packets"),
    ("_acknowledge", "acknowledgements"),
    ("BatchWriter", "commit: other Python (psycopg, sequence tracking)"),
    ("PendingBatch.add", "batching"),
]


def summarise(raw: Path) -> list[tuple[str, float]]:
    shares: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "MainThread" not in stack.split(";", 1)[0]:
            continue
        label = next((name for key, name in ACTIVITIES if key in stack), "the rest")
        shares[label] += int(count)
    total = sum(shares.values()) or 1
    return [(label, 100 * n / total) for label, n in shares.most_common()]


async def main(args: argparse.Namespace, spy: str) -> None:
    from zhizao.logs import configure_logging

    configure_logging(json_lines=False, level="WARNING")
    queued = bench_ingest.publish
    spying: list[subprocess.Popen[bytes]] = []

    def publish_then_attach(port: int, messages: list[bytes]) -> None:
        queued(port, messages)
        spying.append(subprocess.Popen([
            spy, "record", "-r", "250", "-f", "raw", "--threads", "--idle",
            "-d", str(args.seconds), "-o", str(args.out), "--pid", str(os.getpid()),
        ]))

    bench_ingest.publish = publish_then_attach
    url = await bench_ingest.setup_db(f"zhizao_profile_{os.getpid()}")
    broker = bench_ingest.Mosquitto(Path(tempfile.mkdtemp(prefix="profile-mosquitto-")))
    broker.start()
    try:
        result = await bench_ingest.drain(
            url, broker, [bench_ingest.payload(s, 200) for s in range(args.messages)], 200,
            profile=False, label="profile",
        )
    finally:
        broker.kill()
        await bench_ingest.drop_database(url)
    await asyncio.to_thread(spying[0].wait)
    print(f"drained {result['points_per_s']:,.0f} points/s over {result['seconds']:.1f} s"
          f" (profile covers the first {args.seconds} s; raw stacks in {args.out})")
    for label, share in summarise(args.out):
        print(f"  {share:4.0f} %  {label}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=16_000)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "ingest.spy")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    asyncio.run(main(args, spy))


if __name__ == "__main__":
    cli()
