"""The rollup service (``zhizao rollup serve``): supervision, health, several at once, kill -9.

Real PostgreSQL throughout; the concurrency test runs the real command in subprocesses
and kills the one that is computing with SIGKILL in the middle of its run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ingest.rollup_service import RollupService, rollup_service_settings, serve_rollups
from tests.fix_db import RUN_ID, create_database, drop_database
from tests.ingest.support import http_health
from zhizao.codes import make_credit_code
from zhizao.embedded import free_port
from zhizao.health import HealthServer
from zhizao.ledger import Ledger
from zhizao.regions import zhejiang_regions
from zhizao.registry import Device, Enterprise
from zhizao.storage.connection import Conn, connect
from zhizao.storage.facts import CountRow, FactBatch, StateRow, write_facts
from zhizao.storage.registry import store_ledger, upsert_regions
from zhizao.storage.rollups import rollup_settings, run_rollups
from zhizao.wire import StateClass as S

ENT = make_credit_code("91330206MA2RL5XC1")
UNTIL = datetime(2026, 3, 10, tzinfo=UTC)
HOUR = 3_600_000
DEVICES = 40
HISTORY_DAYS = 7
CHUNK = 4  # ten chunk transactions per run: a kill lands between or inside them
ROOT = Path(__file__).resolve().parents[2]


def _ledger(devices: int) -> Ledger:
    ent = Enterprise(credit_code=ENT, name="宁波汇总服务测试有限公司", region_code="330206",
                     industry_code="C3670")  # fmt: skip
    return Ledger(
        enterprises=[ent],
        devices=[
            Device(
                enterprise=ENT,
                code=f"M-{i:03d}",
                name=f"机床 {i}",
                device_type="cnc_machine_tool",
                ideal_cycle_time_s=30.0,
            )
            for i in range(devices)
        ],
        source="rollup-service-test",
    )


def _facts(ids: list[int], first_hour: int, hours: int) -> FactBatch:
    """States that change every few hours and hourly counts, different per device."""
    until = int(UNTIL.timestamp() * 1000)
    cycle = (S.RUNNING, S.IDLE, S.RUNNING, S.UNPLANNED_STOP, S.SETUP)
    batch = FactBatch()
    for n, device in enumerate(ids):
        for h in range(first_hour, first_hour + hours):
            ts = until - (h + 1) * HOUR + (n * 61_000) % HOUR
            if (h + n) % 3 == 0:
                batch.states.append(StateRow(device, ts, cycle[(h + n) % len(cycle)]))
            batch.counts.append(CountRow(device, ts + 90_000, 0, 50 + (h * 7 + n) % 40))
    return batch


async def _seed(url: str, devices: int) -> list[int]:
    conn = await connect(url)
    async with conn:
        await upsert_regions(conn, zhejiang_regions())
        await store_ledger(conn, _ledger(devices))
        cur = await conn.execute("SELECT id FROM device ORDER BY code")
        ids = [int(r[0]) for r in await cur.fetchall()]
        await conn.commit()
        # Three days of facts: every device has marks and a history to cover.
        await write_facts(conn, _facts(ids, 0, 72))
        await conn.commit()
    return ids


async def _late(url: str, ids: list[int]) -> None:
    """Late facts from two writers at once (two ingest workers): more dirty marks."""

    async def one(part: list[int]) -> None:
        conn = await connect(url)
        async with conn:
            await write_facts(conn, _facts(part, 100, 6))  # hours 4 days back
            await conn.commit()

    await asyncio.gather(one(ids[::2]), one(ids[1::2]))


async def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Both rollup tables, without the column that says when a row was written."""
    conn = await connect(url)
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with conn:
        for table, key in (("rollup_device_hour", "hour"), ("rollup_device_day", "day")):
            cur = await conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = %s AND column_name <> 'computed_at' ORDER BY ordinal_position",
                (table,),
            )
            cols = ", ".join(str(r[0]) for r in await cur.fetchall())
            cur = await conn.execute(f"SELECT {cols} FROM {table} ORDER BY device_id, {key}")
            out[table] = list(await cur.fetchall())
    return out


async def _scalar(conn: Conn, query: str) -> Any:
    cur = await conn.execute(query)
    row = await cur.fetchone()
    return None if row is None else row[0]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


@pytest.fixture
def two_databases(template_db: str) -> Iterator[tuple[str, str]]:
    names = [f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}" for _ in range(2)]
    urls = [create_database(name, template=template_db) for name in names]
    yield urls[0], urls[1]
    for name in names:
        drop_database(name)


# -- supervision, in process -------------------------------------------------------------


async def test_any_error_degrades_health_and_the_run_is_retried_with_backoff(
    db_url: str,
) -> None:
    """A bug-like error (not a database error) fails two runs; health says so, then recovers."""
    await _seed(db_url, 2)
    calls: list[int] = []

    def clock() -> datetime:
        calls.append(1)
        if len(calls) <= 2:
            raise ValueError("the clock of this run is broken")
        return UNTIL

    stop = asyncio.Event()
    settings = rollup_service_settings(
        db_url=db_url, health_port=0, retry_initial_s=0.2, retry_max_s=0.4,
        rollup=rollup_settings(interval_s=0.1, history_days=1),
    )  # fmt: skip
    ports: list[int] = []

    def started(_service: RollupService, health: HealthServer | None) -> None:
        assert health is not None
        ports.append(health.port)

    task = asyncio.create_task(serve_rollups(settings, stop=stop, until=clock, started=started))
    try:
        while not ports:  # noqa: ASYNC110 - the service starts on this loop
            await asyncio.sleep(0.01)
        degraded: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            code, doc = await asyncio.to_thread(http_health, ports[0])
            if code == 503:
                degraded.append(doc)
            elif code == 200 and doc.get("runs_ok", 0) >= 1:
                break
            await asyncio.sleep(0.02)
        assert degraded, "health never said degraded while runs failed"
        assert {d["status"] for d in degraded} == {"degraded"}
        # Degraded from the first failure until a run succeeds (also while it runs).
        assert "failing" in {d["state"] for d in degraded}
        assert degraded[-1]["last_error"] == "ValueError: the clock of this run is broken"
        assert max(d["consecutive_failures"] for d in degraded) == 2
        code, doc = await asyncio.to_thread(http_health, ports[0])
        assert code == 200
        assert doc["status"] == "ok"
        assert doc["service"] == "rollup"
        assert doc["consecutive_failures"] == 0
        assert doc["last_error"] is None
        assert doc["computed_until"] == UNTIL.isoformat()
        metrics = await asyncio.to_thread(_metrics, ports[0])
        assert 'zhizao_rollup_runs_total{outcome="failed"} 2.0' in metrics
        assert "zhizao_rollup_consecutive_failures 0.0" in metrics
        assert "zhizao_rollup_dirty_marks_pending 0.0" in metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    conn = await connect(db_url)
    async with conn:
        assert await _scalar(conn, "SELECT count(*) FROM rollup_device_hour") > 0


async def test_an_unreachable_database_is_a_failed_run_not_the_end(db_url: str) -> None:
    service = RollupService(
        "postgresql://nobody@127.0.0.1:1/nothing", rollup_settings(interval_s=0.05),
        retry_initial_s=0.05, retry_max_s=0.05,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        while service.failures < 3:  # noqa: ASYNC110 - the service runs on this loop
            await asyncio.sleep(0.01)
        assert not service.healthy
        assert service.state == "failing"
        assert service.last_error is not None
        assert service.last_error.startswith("DatabaseUnavailable: cannot connect to")
        assert "nothing" in service.last_error  # names the database it tried
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert service.state == "stopped"


# -- two services on one database, one killed with SIGKILL mid-run ----------------------


def _spawn(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ZHIZAO_DB_URL": url,
        "ZHIZAO_KPI_CHUNK_DEVICES": str(CHUNK),
        "ZHIZAO_KPI_HISTORY_DAYS": str(HISTORY_DAYS),
        "ZHIZAO_ROLLUP_RETRY_MAX_S": "1",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zhizao.cli", "--log-json", "rollup", "serve",
             "--health-port", str(port), "--interval-s", "0.2", "--until", UNTIL.isoformat()],
            env=env, stdout=out, stderr=out, cwd=ROOT,
        )  # fmt: skip


async def test_two_services_share_one_database_and_a_kill_9_loses_no_dirty_mark(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    shared, reference = two_databases
    ports = [free_port(), free_port()]
    procs = [_spawn(shared, port, tmp_path / f"rollup-{i}.log") for i, port in enumerate(ports)]
    conn = await connect(shared, autocommit=True)
    try:
        async with conn:
            # Both up and idle on an empty registry, then the work arrives.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                docs = [(await asyncio.to_thread(http_health, p))[1] for p in ports]
                if all(d.get("runs_ok", 0) + (d.get("state") == "standby") for d in docs):
                    break
                await asyncio.sleep(0.05)
            ids = await _seed(shared, DEVICES)
            # Kill the one computing, once the other has found the lock taken and part of
            # the run's chunks are committed.
            victim: int | None = None
            both_running = 0
            deadline = time.monotonic() + 60
            while victim is None and time.monotonic() < deadline:
                states = [(await asyncio.to_thread(http_health, p))[1].get("state") for p in ports]
                both_running += states == ["running", "running"]
                covered = await _scalar(conn, "SELECT count(*) FROM rollup_coverage")
                if sorted(map(str, states)) == ["running", "standby"] and 0 < covered < DEVICES:
                    victim = states.index("running")
                    procs[victim].send_signal(signal.SIGKILL)
                await asyncio.sleep(0.01)
            assert victim is not None, f"no service was caught mid-run (logs in {tmp_path})"
            procs[victim].wait(10)
            marks_left = await _scalar(conn, "SELECT count(*) FROM rollup_dirty")
            assert marks_left > 0, "the killed run's uncommitted marks are gone"
            # Late data from two writers while the survivor takes over.
            await _late(shared, ids)
            survivor = ports[1 - victim]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                pending = await _scalar(conn, "SELECT count(*) FROM rollup_dirty")
                if pending == 0:
                    break
                await asyncio.sleep(0.1)
            doc = (await asyncio.to_thread(http_health, survivor))[1]
            assert pending == 0, f"the surviving service did not finish: {pending} marks; {doc}"
            assert doc["status"] == "ok"
            assert doc["computed_until"] == UNTIL.isoformat()
            metrics = await asyncio.to_thread(_metrics, survivor)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait(20)
    assert both_running == 0, "two services computed at the same time"
    assert 'zhizao_rollup_runs_total{outcome="busy"} 0.0' not in metrics
    assert procs[1 - victim].returncode == 0  # SIGTERM: a clean stop
    # The same facts rolled up by one uninterrupted run give the same rows.
    assert await _seed(reference, DEVICES) == ids
    await _late(reference, ids)
    ref = await connect(reference, autocommit=True)
    async with ref:
        await run_rollups(ref, until=UNTIL, history_days=HISTORY_DAYS)
    got, want = await _rows(shared), await _rows(reference)
    assert len(want["rollup_device_hour"]) >= DEVICES * 24 * HISTORY_DAYS
    assert got == want
