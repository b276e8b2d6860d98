"""Edge spool and uplink benchmarks: points per second, with the fsync policy's cost.

    .venv/bin/python -m bench.bench_edge [--points 20000] [--uplink-points 50000]

1. Spool alone. In the same run and on the same disk:
   - raw SQLite baseline: the spool's table, WAL mode, pre-serialised bodies,
     ``executemany`` + ``COMMIT`` per put, with ``synchronous=FULL`` and ``NORMAL``;
   - the spool (``Spool.put``: pydantic serialisation, worker-thread hop, commit) with
     ``durability=fsync`` (synchronous=FULL) and ``durability=os`` (NORMAL), for puts of
     1, 10 and 100 points from one producer, and of 10 points from 16 concurrent
     producers (group commit shares one fsync between them).
2. Spool → uplink → Mosquitto PUBACK: a Mosquitto of its own (free port, temporary
   folder) and the uplink draining a pre-filled spool (batches of 100, 500 and 1000 points),
   then a live stream (16 producers putting while the uplink drains). Points/s count
   points acknowledged by the broker and removed from the spool.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from edge.config import UplinkConfig
from edge.spool import Durability, Spool
from edge.uplink import Uplink
from zhizao.wire import Point, PointKind

ENTERPRISE = "91330106MA2XXXXX0Y"
T0 = 1_772_409_600_000


def make_points(count: int, start: int = 0) -> list[Point]:
    return [
        Point(
            device=f"CNC-{i % 50:03d}",
            ts=T0 + i,
            kind=PointKind.METRIC,
            name="spindle_speed",
            value=8000.0 + i % 100,
        )
        for i in range(start, start + count)
    ]


def raw_sqlite(folder: Path, bodies: list[bytes], per_put: int, sync: str) -> float:
    path = folder / f"raw-{sync}-{per_put}.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.execute(
        "CREATE TABLE points (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " spooled_at INTEGER NOT NULL, body BLOB NOT NULL)"
    )
    started = time.perf_counter()
    for offset in range(0, len(bodies), per_put):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO points(spooled_at, body) VALUES (?, ?)",
            [(T0, b) for b in bodies[offset : offset + per_put]],
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(bodies) / elapsed


async def spool_rate(
    folder: Path, points: list[Point], per_put: int, durability: Durability, producers: int = 1
) -> float:
    path = folder / f"spool-{durability}-{per_put}-{producers}.db"
    chunks = [points[i : i + per_put] for i in range(0, len(points), per_put)]
    async with Spool(
        path, enterprise=ENTERPRISE, edge="bench", durability=durability, max_bytes=1 << 34
    ) as spool:
        started = time.perf_counter()
        if producers == 1:
            for chunk in chunks:
                await spool.put(chunk)
        else:

            async def produce(mine: list[list[Point]]) -> None:
                for chunk in mine:
                    await spool.put(chunk)

            await asyncio.gather(*(produce(chunks[k::producers]) for k in range(producers)))
        elapsed = time.perf_counter() - started
        assert spool.stats.depth_points == len(points)
    return len(points) / elapsed


@contextmanager
def mosquitto(folder: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        "max_queued_messages 1000000\nmax_inflight_messages 0\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def uplink_rate(
    folder: Path, url: str, points: list[Point], *, batch: int, live: bool, durability: Durability
) -> float:
    path = folder / f"uplink-{batch}-{live}-{durability}.db"
    config = UplinkConfig(url=url, batch_max_points=batch, batch_max_wait_s=0.02)
    async with Spool(
        path, enterprise=ENTERPRISE, edge=f"bench-{batch}", durability=durability, max_bytes=1 << 34
    ) as spool:
        up = Uplink(config, enterprise=ENTERPRISE, edge_id=f"bench-{batch}", spool=spool)
        if not live:
            for offset in range(0, len(points), 1000):
                await spool.put(points[offset : offset + 1000])
        task = asyncio.create_task(up.run())
        await up.session.wait_connected()
        started = time.perf_counter()
        if live:
            chunks = [points[i : i + 10] for i in range(0, len(points), 10)]

            async def produce(mine: list[list[Point]]) -> None:
                for chunk in mine:
                    await spool.put(chunk)

            await asyncio.gather(*(produce(chunks[k::16]) for k in range(16)))
        await up.wait_acked(len(points))
        elapsed = time.perf_counter() - started
        await up.close()
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        assert spool.stats.depth_points == 0
    return len(points) / elapsed


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="zhizao-bench-", dir=args.dir) as tmp:
        folder = Path(tmp)
        points = make_points(args.points)
        bodies = [p.model_dump_json(exclude_none=True).encode() for p in points]
        print(f"# spool alone: {args.points} points, folder {folder}")
        print(f"{'what':<52} {'points/s':>12}")
        for per_put in (1, 10, 100):
            for sync in ("FULL", "NORMAL"):
                rate = raw_sqlite(folder, bodies, per_put, sync)
                print(
                    f"{f'raw SQLite WAL synchronous={sync}, {per_put}/commit':<52} {rate:>12,.0f}"
                )
            for durability in (Durability.FSYNC, Durability.OS):
                rate = await spool_rate(folder, points, per_put, durability)
                print(f"{f'spool durability={durability}, {per_put}/put':<52} {rate:>12,.0f}")
        for durability in (Durability.FSYNC, Durability.OS):
            rate = await spool_rate(folder, points, 10, durability, producers=16)
            label = f"spool durability={durability}, 10/put x 16 producers"
            print(f"{label:<52} {rate:>12,.0f}")

        up_points = make_points(args.uplink_points)
        print(f"\n# spool -> uplink -> Mosquitto PUBACK: {args.uplink_points} points")
        with mosquitto(folder) as url:
            for batch in (100, 500, 1000):
                rate = await uplink_rate(
                    folder, url, up_points, batch=batch, live=False, durability=Durability.FSYNC
                )
                print(f"{f'drain pre-filled spool, batch {batch}, fsync':<52} {rate:>12,.0f}")
            for durability in (Durability.FSYNC, Durability.OS):
                rate = await uplink_rate(
                    folder, url, up_points, batch=500, live=True, durability=durability
                )
                label = f"live: 16 producers + uplink, batch 500, {durability}"
                print(f"{label:<52} {rate:>12,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--uplink-points", type=int, default=50_000)
    parser.add_argument("--dir", default=None, help="folder on the disk to measure (default: tmp)")
    asyncio.run(main(parser.parse_args()))
