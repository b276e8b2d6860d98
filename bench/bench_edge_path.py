"""The whole edge path: OPC UA value changes → collector → disk spool → uplink → PUBACK.

    .venv/bin/python -m bench.bench_edge_path [--nodes 200] [--seconds 10] [--dir FOLDER]

An asyncua server in its own process changes ``--nodes`` Double variables as fast as it
can (bench/bench_opcua.py). In the same run:

1. a bare asyncua client subscribes to all of them and only counts notifications;
2. a complete edge (EdgeRuntime: our OPC UA collector, the SQLite spool with its
   default fsync durability, the MQTT uplink) reads the same variables and publishes to
   a Mosquitto of the benchmark's own on 127.0.0.1; counted are the points the broker
   acknowledged (PUBACK), i.e. what left the spool.

Printed: changes/s the server made in each phase, what each path delivered per second,
and the ratio edge / bare (the issue asks for ≥ 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.bench_opcua import BenchServer, Rate, bare_rate, collector_config, free_port
from edge.config import parse_config
from edge.runtime import EdgeRuntime

ENTERPRISE = "91350100M000100Y43"


def _mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, f"mqtt://127.0.0.1:{port}"


async def edge_rate(server: BenchServer, seconds: float, folder: Path) -> Rate:
    broker, url = _mosquitto(folder)
    source = collector_config(server.endpoint, server.count).model_dump(mode="json")
    config = parse_config(
        {
            "identity": {"enterprise": ENTERPRISE, "edge_id": "bench-edge"},
            "uplink": {"url": url, "protocol": "5", "batch_max_points": 500,
                       "batch_max_wait_s": 0.2},
            "spool": {"path": str(folder / "spool.db")},
            "http": {"port": None},
            "sources": [source],
        },
        source="bench",
    )  # fmt: skip
    runtime = EdgeRuntime(config)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(runtime.ready.wait(), 60)
        # The initial values went all the way through before the clock starts.
        await asyncio.wait_for(
            runtime.uplink.wait_for(lambda stats: stats.points_sent >= server.count), 60
        )
        await asyncio.sleep(0.5)
        sent0, writes0 = runtime.uplink.stats.points_sent, server.writes
        server.start_writing()
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        server.stop_writing()
        elapsed = time.perf_counter() - began
        return Rate(runtime.uplink.stats.points_sent - sent0, elapsed, server.writes - writes0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        broker.kill()
        broker.wait()


async def main(nodes: int, seconds: float, folder: Path) -> None:
    with BenchServer(nodes) as server:
        bare = await bare_rate(server, seconds)
        edge = await edge_rate(server, seconds, folder)
    print(f"nodes {nodes}, {seconds:g} s per phase, spool in {folder}")
    print(f"bare asyncua client : server {bare.server_per_second:10,.0f}/s  "
          f"received {bare.per_second:10,.0f}/s")  # fmt: skip
    print(f"edge → PUBACK       : server {edge.server_per_second:10,.0f}/s  "
          f"acknowledged {edge.per_second:10,.0f}/s")  # fmt: skip
    print(f"ratio edge / bare   : {edge.per_second / bare.per_second:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dir", type=Path, default=None, help="Folder for the spool.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(main(args.nodes, args.seconds, Path(tmp)))
