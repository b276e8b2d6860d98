"""API benchmark: the KPI benchmark's synthetic province behind a real API server.

    .venv/bin/python -m bench.bench_api [--server-url postgresql://postgres@127.0.0.1/postgres]
        [--concurrency 50] [--requests 1000] [--uncached-requests 1000] [--workers 2]
        [--keep | --reuse] [--only WORD]

Builds a database of its own: the province of bench_kpi (500 enterprises, 10,000
devices, a year of day rollups) plus 7 days of one metric at 1 Hz for one device
(604,800 points). Starts ``zhizao api run`` and, in another process, a load generator
with ``--concurrency`` clients on loopback. For three endpoints:

* networking rate by city, one month;
* OEE of a line over 30 days;
* a metric's series over 7 days in 500 points,

it prints requests per second and p50/p95/p99 through the API, beside the same
kernel queries run directly on the database in the same run with the same
concurrency (a pool as large as the API's), and the same two single-client, so the
figure "what the API adds" is the difference at p50 with one client. Asserts
nothing about time (benchmarks print, tests assert behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import httpx
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from bench.bench_kpi import build_registry, copy_day_rollups
from platform_api.security import hash_password, issue_access_token
from zhizao.access import Grant, Role, visibility
from zhizao.networking import GroupBy, Scope
from zhizao.settings import DatabaseSettings
from zhizao.storage import kpi
from zhizao.storage.connection import Conn, connect, with_database
from zhizao.storage.migrate import upgrade
from zhizao.storage.telemetry import find_device, metric_series
from zhizao.storage.users import add_grant, create_user
from zhizao.telemetry import plan_buckets

DB = "zhizao_bench_api"
MONTH = (date(2026, 3, 1), date(2026, 3, 31))
OEE_DAYS = (date(2026, 3, 1), date(2026, 3, 30))
SERIES_END = datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
SERIES_START = SERIES_END - timedelta(days=7)
ZONE = ZoneInfo("Asia/Shanghai")
METRIC = "spindle_speed"


def _say(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    direct: Callable[[Conn], Awaitable[object]]


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return ordered[len(ordered) // 2] * 1000, q[94] * 1000, q[98] * 1000


# --- the load generator (another process) ---------------------------------------------


async def _load(
    base: str, token: str, path: str, concurrency: int, requests: int
) -> dict[str, object]:
    # aiohttp rather than httpx: on two cores the load generator shares the CPU with
    # the server, and httpx spends several times more per request than aiohttp.
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    left = requests
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        base, connector=connector, headers=headers, timeout=timeout
    ) as client:
        async with client.get(path) as response:  # warm the server's caches
            await response.read()

        async def worker() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                async with client.get(path) as response:
                    await response.read()
                latencies.append(time.perf_counter() - t0)
                if response.status != 200:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"latencies": latencies, "wall": wall, "errors": errors}


def load_main(args: argparse.Namespace) -> None:
    result = asyncio.run(_load(args.base, args.token, args.path, args.concurrency, args.requests))
    print(json.dumps(result))


def _run_load(
    base: str, token: str, path: str, concurrency: int, requests: int
) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_api", "--load", "--base", base, "--token", token,
         "--path", path, "--concurrency", str(concurrency), "--requests", str(requests)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout)
    return result


# --- direct queries (this process) ----------------------------------------------------


async def _direct(
    pool: AsyncConnectionPool, job: Callable[[Conn], Awaitable[object]], concurrency: int,
    requests: int,
) -> dict[str, object]:  # fmt: skip
    latencies: list[float] = []
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            async with pool.connection() as conn:
                await job(conn)
            latencies.append(time.perf_counter() - t0)

    async with pool.connection() as conn:
        await job(conn)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"latencies": latencies, "wall": time.perf_counter() - t0, "errors": 0}


# --- setup ----------------------------------------------------------------------------


async def _series_points(conn: Conn, device_id: int) -> int:
    cur = await conn.execute("INSERT INTO metric_name (name) VALUES (%s) RETURNING id", (METRIC,))
    row = await cur.fetchone()
    assert row is not None
    metric_id = int(row[0])
    rng = random.Random(7)
    start_s = int(SERIES_START.timestamp())
    total = 7 * 86_400
    async with conn.cursor().copy(
        "COPY metric_point (device_id, metric_id, time, value, quality) FROM STDIN"
    ) as copy:
        chunk: list[str] = []
        for i in range(total):
            ts = datetime.fromtimestamp(start_s + i, UTC).isoformat()
            chunk.append(f"{device_id}\t{metric_id}\t{ts}\t{rng.uniform(800, 12000):.1f}\t0\n")
            if len(chunk) == 50_000:
                await copy.write("".join(chunk))
                chunk.clear()
        await copy.write("".join(chunk))
    await conn.commit()
    return total


async def setup(url: str) -> tuple[str, str, int]:
    """The province, the series, an admin; (an enterprise, its line, the admin's id)."""
    rng = random.Random(20260301)
    conn = await connect(url)
    async with conn:
        t0 = time.perf_counter()
        devices = await build_registry(conn, rng)
        rows = await copy_day_rollups(conn, devices, set(), rng)
        device_id, enterprise = devices[0]
        points = await _series_points(conn, device_id)
        user = await create_user(conn, "bench.admin", hash_password(secrets.token_urlsafe(16)))
        await add_grant(conn, user.id, Grant(Role.ADMIN))
        await conn.commit()
        await conn.set_autocommit(True)
        await conn.execute("VACUUM ANALYZE")
        _say(f"setup: {len(devices):,} devices, {rows:,} day rollups, {points:,} metric points"
             f" ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return enterprise, "L1", user.id


def targets(enterprise: str, line: str) -> list[Target]:
    vis = visibility([Grant(Role.ADMIN)])
    start, end = SERIES_START.isoformat(), SERIES_END.isoformat()

    async def networking(conn: Conn) -> object:
        figures = await kpi.networking_rates(conn, *MONTH, GroupBy.CITY, Scope.ALL)
        return figures, await kpi.group_names(conn, GroupBy.CITY)

    async def oee(conn: Conn) -> object:
        scope = kpi.OeeScope(kpi.Level.LINE, line, enterprise)
        return await kpi.oee_for_days(conn, scope, *OEE_DAYS)

    async def series(conn: Conn) -> object:
        device = await find_device(conn, vis, enterprise, "D00")
        assert device is not None
        plan = plan_buckets(SERIES_START, SERIES_END, ZONE, points=500)
        return await metric_series(conn, vis, device, METRIC, start=SERIES_START,
                                   end=SERIES_END, plan=plan)  # fmt: skip

    q = httpx.QueryParams
    return [
        Target("networking rate by city, 1 month",
               "/api/v1/kpi/networking?" + str(q(period="month", date="2026-03-01",
                                                   group_by="city")), networking),
        Target("OEE of a line, 30 days",
               "/api/v1/kpi/oee?" + str(q(level="line", code=line, enterprise=enterprise,
                                           period="custom", start="2026-03-01",
                                           end="2026-03-30")), oee),
        Target("metric series, 7 days, 500 points",
               f"/api/v1/enterprises/{enterprise}/devices/D00/metrics/{METRIC}/series?"
               + str(q(start=start, end=end, points=500)), series),
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _row(label: str, result: dict[str, object]) -> tuple[float, str]:
    latencies = result["latencies"]
    assert isinstance(latencies, list)
    wall = result["wall"]
    assert isinstance(wall, float)
    p50, p95, p99 = _percentiles(latencies)
    text = (f"  {label:<26} {len(latencies) / wall:8.0f} req/s   p50 {p50:7.1f}  p95 {p95:7.1f}"
            f"  p99 {p99:7.1f} ms   errors {result['errors']}")  # fmt: skip
    return p50, text


async def _existing(url: str) -> tuple[str, str, int]:
    conn = await connect(url)
    async with conn:
        cur = await conn.execute(
            "SELECT (SELECT e.credit_code FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
            " ORDER BY d.id LIMIT 1), (SELECT id FROM app_user WHERE username = 'bench.admin')"
        )
        row = await cur.fetchone()
    assert row is not None
    return str(row[0]), "L1", int(row[1])


def _start_server(
    url: str, secret: str, *, workers: int, pool_size: int, extra: dict[str, str], out: IO[bytes]
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "ZHIZAO_API_JWT_SECRET": secret, "ZHIZAO_LOG_LEVEL": "WARNING",
           "ZHIZAO_DB_POOL_MAX_SIZE": str(pool_size), **extra}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "zhizao.cli", "api", "run", "--port", str(port),
         "--workers", str(workers), "--db-url", url],
        env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return server, f"http://127.0.0.1:{port}"


def _wait_ready(base: str) -> None:
    for _ in range(200):
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {base} did not become ready")


async def measure(url: str, args: argparse.Namespace, *, reuse: bool) -> None:
    """Two API servers side by side: as configured by default (answers reused for
    ZHIZAO_API_RESULT_CACHE_S, 5 s) and with the result cache off, so that the run
    shows both what fifty viewers of one figure see and what every new question costs."""
    enterprise, line, admin_id = await (_existing(url) if reuse else setup(url))
    secret = secrets.token_urlsafe(48)
    pool_size = 8
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_api_servers.log"  # noqa: S108
    with log.open("wb") as out:
        cached, cached_base = _start_server(
            url, secret, workers=args.workers, pool_size=pool_size, extra={}, out=out
        )
        fresh, fresh_base = _start_server(
            url,
            secret,
            workers=args.workers,
            pool_size=pool_size,
            extra={"ZHIZAO_API_RESULT_CACHE_S": "0"},
            out=out,
        )
        try:
            _wait_ready(cached_base)
            _wait_ready(fresh_base)
            token, _ = issue_access_token(secret, admin_id, 60)
            pool = AsyncConnectionPool(url, min_size=pool_size * args.workers,
                                       max_size=pool_size * args.workers, open=False)  # fmt: skip
            await pool.open(wait=True)
            _say(f"API: {args.workers} worker(s) × pool {pool_size}, one server with the result"
                 f" cache as by default (5 s), one without; direct: pool"
                 f" {pool_size * args.workers}; load generator in another process")  # fmt: skip
            n = args.concurrency
            chosen = [
                target for target in targets(enterprise, line)
                if not args.only or any(w.lower() in target.name.lower() for w in args.only)
            ]  # fmt: skip
            if not chosen:
                names = "; ".join(t.name for t in targets(enterprise, line))
                raise SystemExit(f"--only {' '.join(args.only)}: no endpoint is named so ({names})")
            for target in chosen:
                _say(f"\n{target.name}  ({target.path[:70]}…)")
                single = max(50, args.requests // 10)
                # Uncached, the slow queries serve about ten requests a second: a
                # cached run's thousands would take an hour there.
                uncached = min(args.requests, args.uncached_requests)
                rows = [
                    ("API, cache, 1 client", _run_load(cached_base, token, target.path, 1, single)),
                    ("API, no cache, 1 client",
                     _run_load(fresh_base, token, target.path, 1, min(single, uncached))),
                    ("direct, 1 client",
                     await _direct(pool, target.direct, 1, min(single, uncached))),
                    (f"API, cache, {n} clients",
                     _run_load(cached_base, token, target.path, n, args.requests)),
                    (f"API, no cache, {n} clients",
                     _run_load(fresh_base, token, target.path, n, uncached)),
                    (f"direct, {n} clients", await _direct(pool, target.direct, n, uncached)),
                ]  # fmt: skip
                p50 = {}
                for label, result in rows:
                    p50[label], text = _row(label, result)
                    _say(text)
                added = p50["API, no cache, 1 client"] - p50["direct, 1 client"]
                _say(f"  without the cache the API adds {added:.1f} ms at p50 (one client)")
            await pool.close()
        finally:
            for server in (cached, fresh):
                server.terminate()
                server.wait(timeout=30)


async def main(args: argparse.Namespace) -> None:
    url = with_database(args.server_url, DB)
    if args.reuse:
        await measure(url, args, reuse=True)
        return
    admin = await connect(with_database(args.server_url, "postgres"), autocommit=True)
    async with admin:
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DB)))  # fmt: skip
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    try:
        await upgrade(DatabaseSettings(url=url), timescale=False)
        await measure(url, args, reuse=False)
    finally:
        if not args.keep:
            admin = await connect(with_database(args.server_url, "postgres"), autocommit=True)
            async with admin:
                await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(DB)))  # fmt: skip


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--uncached-requests", type=int, default=1000,
        help="at most this many requests for the rows without the cache (default 1000)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure a database kept by --keep")
    parser.add_argument(
        "--only",
        action="append",
        metavar="WORD",
        help="measure only endpoints whose name contains WORD (repeatable)",
    )
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_main(args)
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
