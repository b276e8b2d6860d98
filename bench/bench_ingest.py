"""Ingest benchmark: points/s from broker to committed rows, next to the COPY ceiling.

Run:  .venv/bin/python bench/bench_ingest.py [--batched-messages 1500] [--single-messages 60000]
      [--lag-seconds 15] [--profile]

What it measures, in one run, on the machine's PostgreSQL (ZHIZAO_BENCH_DB_URL, default
the local server) and a Mosquitto of its own:

1. write paths: the same metric rows written through each path ``write_facts`` may
   take: unnest arrays, binary COPY into a staging table + INSERT ... ON CONFLICT,
   and binary COPY straight into the table in a savepoint (the path of new data);
2. raw ceiling: binary COPY of the same rows straight into ``metric_point`` by one
   connection (no idempotency, no conversion: the database's limit);
3. broker → committed rows for one worker (in this process), with ~200 points per
   message and with 1 point per message. The messages are queued in the worker's
   persistent session first, then the worker is started and timed until its last
   row is committed, so the publisher does not compete for the CPU;
4. end-to-end lag (source timestamp → commit) at half the batched rate, with a
   paced publisher in a subprocess;
5. peak resident memory of the process during each drain (VmRSS sampled);
6. with ``--rollups``: the batched drain again on recent timestamps (the last four
   hours, so the rollups have live hours to recompute), without rollups, with a
   ``zhizao rollup serve`` process beside the worker, and with the rollups inside the
   worker (``ZHIZAO_INGEST_ROLLUPS``), both every second (production: every 60 s)
   and with one day of history (warmed up by a first run before the timing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import generate_latest

from ingest.metrics import IngestMetrics
from ingest.service import run_ingest
from ingest.settings import ingest_settings
from tests.fix_mqtt import Mosquitto
from zhizao.codes import make_credit_code
from zhizao.embedded import free_port
from zhizao.registry import Device, DeviceType, EdgeGateway, Enterprise, Region
from zhizao.settings import DatabaseSettings
from zhizao.storage import facts
from zhizao.storage.connection import (
    connect,
    drop_database,
    ensure_database,
    with_database,
)
from zhizao.storage.facts import FactBatch, MetricRow, metric_ids, write_facts
from zhizao.storage.migrate import upgrade
from zhizao.storage.registry import (
    upsert_devices,
    upsert_edges,
    upsert_enterprises,
    upsert_regions,
)
from zhizao.storage.rollups import rollup_settings, run_rollups
from zhizao.wire import data_topic

SERVER = os.environ.get("ZHIZAO_BENCH_DB_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ENT = make_credit_code("91330106MA2BENCH0")
EDGE = "bench-edge"
DEVICES = [f"D-{i:04d}" for i in range(200)]
METRICS = ["spindle_speed", "spindle_load", "feed_rate", "temperature", "power"]
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def payload(seq: int, points: int, ts0: int | None = None, *, t0: int = T0) -> bytes:
    base = t0 + seq * 1000 if ts0 is None else ts0
    pts = [
        {
            "device": DEVICES[i % len(DEVICES)],
            "ts": base + (i // len(DEVICES)) * 7 + (seq % 1000 if ts0 is None else 0),
            "kind": "metric",
            "name": METRICS[(i // len(DEVICES) + seq) % len(METRICS)],
            "value": float(i) * 1.5,
        }
        for i in range(points)
    ]
    return json.dumps(
        {"v": 1, "enterprise": ENT, "edge": EDGE, "seq": seq, "sent_at": base, "points": pts}
    ).encode()


def publish(url_port: int, messages: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    topic = data_topic(ENT, EDGE)
    infos = [client.publish(topic, m, qos=1) for m in messages]
    for info in infos:
        info.wait_for_publish(600)
    client.disconnect()
    client.loop_stop()


async def setup_db(name: str) -> str:
    url = with_database(SERVER, name)
    await drop_database(url)
    await ensure_database(url)
    await upgrade(DatabaseSettings(url=url), timescale=False)
    conn = await connect(url)
    async with conn, conn.transaction():
        await upsert_regions(conn, [Region(code="330000", name="浙江省"),
                                    Region(code="330100", name="杭州市"),
                                    Region(code="330106", name="西湖区")])
        await upsert_enterprises(conn, [Enterprise(credit_code=ENT, name="基准企业",
                                                   region_code="330106", industry_code="C34")])
        await upsert_devices(conn, [Device(enterprise=ENT, code=d, name=d,
                                           device_type=DeviceType.CNC_MACHINE_TOOL)
                                    for d in DEVICES])
        await upsert_edges(conn, [EdgeGateway(enterprise=ENT, edge_id=EDGE,
                                              device_codes=tuple(DEVICES))])
    return url


async def truncate(url: str) -> None:
    conn = await connect(url, autocommit=True)
    async with conn:
        await conn.execute("TRUNCATE metric_point, edge_sequence, sequence_event, sequence_gap,"
                           " dead_letter, rollup_dirty")
        await conn.execute("VACUUM ANALYZE metric_point")
        # Every phase starts without dirty buffers from the one before, so that no
        # phase pays for a checkpoint of the previous one's writes.
        await conn.execute("CHECKPOINT")


async def bench_write_paths(url: str, rows_total: int, batch: int) -> dict[str, float]:
    """The three metric write paths of write_facts, and the raw COPY ceiling, same rows."""
    conn = await connect(url)
    results: dict[str, float] = {}
    async with conn:
        ids = await metric_ids(conn, METRICS)  # the ids ingest will find again later
        await conn.commit()
        mids = [ids[m] for m in METRICS]
        rows = [MetricRow(1 + i % 200, mids[(i // 200) % 5], T0 + i, i * 1.5, 0)
                for i in range(rows_total)]

        async def unnest(chunk: list[MetricRow]) -> None:
            await write_facts(conn, FactBatch(metrics=chunk))

        async def staged(chunk: list[MetricRow]) -> None:
            await facts.write_metrics_staged(conn, facts.encode_metrics(chunk))

        async def direct(chunk: list[MetricRow]) -> None:
            assert await facts.write_metrics_direct(conn, facts.encode_metrics(chunk))

        threshold = facts.COPY_METRICS_MIN_ROWS
        facts.COPY_METRICS_MIN_ROWS = 10**12  # write_facts: the unnest path only
        for label, write in (("unnest", unnest), ("copy_staging", staged),
                             ("copy_direct", direct), ("unnest#2", unnest),
                             ("copy_staging#2", staged), ("copy_direct#2", direct)):
            await truncate(url)
            started = time.perf_counter()
            for i in range(0, rows_total, batch):
                await write(rows[i : i + batch])
                await conn.commit()
            results[label] = rows_total / (time.perf_counter() - started)
        facts.COPY_METRICS_MIN_ROWS = threshold
        # Raw ceiling: binary COPY straight into the table, rows prepared beforehand.
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        raw = [(r.device_id, r.metric_id, epoch + timedelta(milliseconds=r.ts_ms), r.value, 0)
               for r in rows]
        for label in ("copy_ceiling", "copy_ceiling#2"):
            await truncate(url)
            started = time.perf_counter()
            async with conn.cursor().copy(
                "COPY metric_point (device_id, metric_id, time, value, quality)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", "int4", "timestamptz", "float8", "int2"])
                for r in raw:
                    await copy.write_row(r)
            await conn.commit()
            results[label] = rows_total / (time.perf_counter() - started)
    return results


ROLLUP_ENV = {"ZHIZAO_KPI_INTERVAL_S": "1", "ZHIZAO_KPI_HISTORY_DAYS": "1"}


def _get_json(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (urllib.error.URLError, ConnectionError):
        return {}
    return json.loads(body) if path == "/health" else body.decode()


def _rollup_figures(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        for key in ('zhizao_rollup_runs_total{outcome="ok"}', "zhizao_rollup_device_hours_total",
                    "zhizao_rollup_run_seconds_sum"):
            if line.startswith(key + " "):
                out[key] = float(line.split()[-1])
    return out


async def start_rollup_service(url: str) -> tuple[subprocess.Popen[bytes], int]:
    """``zhizao rollup serve`` in its own process, up and past its first run."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zhizao.cli", "--log-level", "WARNING", "rollup", "serve",
         "--health-port", str(port)],
        env={**os.environ, "ZHIZAO_DB_URL": url, **ROLLUP_ENV},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        doc = await asyncio.to_thread(_get_json, port, "/health")
        if doc.get("runs_ok", 0) >= 1:
            return proc, port
        if proc.poll() is not None:
            raise RuntimeError(f"zhizao rollup serve exited with {proc.returncode}")
        await asyncio.sleep(0.2)
    raise RuntimeError("zhizao rollup serve did not complete a first run")


async def drain(url: str, broker: Mosquitto, messages: list[bytes], points: int, *,  # noqa: PLR0915
                profile: bool, label: str,
                rollups: Literal["none", "beside", "inside"] = "none") -> dict[str, float]:
    """Queue the messages in the worker's session, then time the worker draining them."""
    await truncate(url)
    # Ingest alone unless asked: the scheduled rollups (bench/bench_kpi.py measures them)
    # would otherwise carry the benchmark's devices forward hour by hour inside the timing.
    extra: dict[str, Any] = {}
    if rollups == "inside":
        extra = {"rollups": True, "rollup": rollup_settings(interval_s=1, history_days=1)}
    settings = ingest_settings(db_url=url, mqtt_url=broker.url, client_id="bench-ingest",
                               health_port=None, shared_group=None, rollups=False)
    timed_settings = settings.model_copy(update=extra)
    metrics = IngestMetrics()
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingest(settings, stop=stop, metrics=metrics))
    while metrics.broker_connected._value.get() != 1:  # noqa: ASYNC110 - polls a gauge
        await asyncio.sleep(0.05)
    stop.set()
    await task  # the persistent session now holds the subscription
    await asyncio.to_thread(publish, broker.port, messages)
    expected = len(messages) * points
    count = len(messages)
    messages.clear()  # the payloads now live in the broker, not here
    gc.collect()
    service: tuple[subprocess.Popen[bytes], int] | None = None
    if rollups == "beside":
        service = await start_rollup_service(url)
    metrics = IngestMetrics()
    stop = asyncio.Event()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        profiler.start()
    baseline = peak = rss_mb()
    before = {} if service is None else _rollup_figures(
        await asyncio.to_thread(_get_json, service[1], "/metrics"))
    started = time.perf_counter()
    task = asyncio.create_task(run_ingest(timed_settings, stop=stop, metrics=metrics))
    while metrics.points_committed < expected:
        await asyncio.sleep(0.05)
        peak = max(peak, rss_mb())
        if task.done():
            task.result()
    elapsed = time.perf_counter() - started
    if profiler is not None:
        profiler.stop()
        out = Path(tempfile.gettempdir()) / f"bench_ingest_{label}.txt"
        out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        print(f"  profile written to {out}")
    commit_s = metrics.registry.get_sample_value("zhizao_ingest_commit_seconds_sum") or 0.0
    if service is not None:
        after = _rollup_figures(await asyncio.to_thread(_get_json, service[1], "/metrics"))
        service[0].terminate()
        service[0].wait(60)
    else:
        after = _rollup_figures(generate_latest(metrics.registry).decode())
    stop.set()
    await task
    runs = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return {"points_per_s": expected / elapsed, "messages_per_s": count / elapsed,
            "commit_share": commit_s / elapsed,
            "seconds": elapsed, "peak_rss_mb": peak, "rss_growth_mb": peak - baseline,
            "rollup_runs": runs.get('zhizao_rollup_runs_total{outcome="ok"}', 0.0),
            "rollup_device_hours": runs.get("zhizao_rollup_device_hours_total", 0.0),
            "rollup_seconds": runs.get("zhizao_rollup_run_seconds_sum", 0.0)}


PACED_PUBLISHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
port, rate, seconds, points, topic, ent, edge, seq0 = sys.argv[1:9]
port, rate, seconds, points, seq0 = int(port), float(rate), float(seconds), int(points), int(seq0)
devices = [f"D-{i:04d}" for i in range(200)]
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paced",
                protocol=MQTTProtocolVersion.MQTTv5)
c.max_inflight_messages_set(2000); c.max_queued_messages_set(0)
c.connect("127.0.0.1", port); c.loop_start()
start = time.monotonic(); sent = 0; seq = seq0; infos = []
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * rate)
    while sent < due:
        now = int(time.time() * 1000)
        pts = [{"device": devices[i % 200], "ts": now, "kind": "metric", "name": f"lag{i // 200}",
                "value": 1.0} for i in range(points)]
        infos.append(c.publish(topic, json.dumps({"v": 1, "enterprise": ent, "edge": edge,
                     "seq": seq, "sent_at": now, "points": pts}), qos=1))
        sent += 1; seq += 1
    time.sleep(0.002)
for info in infos:  # all acknowledged by the broker before disconnecting
    info.wait_for_publish(120)
behind = (time.monotonic() - start) - seconds
c.disconnect(); c.loop_stop()
print(sent, round(behind, 2))
"""


async def lag_at(url: str, broker: Mosquitto, points_per_s: float, points: int,
                 seconds: float) -> dict[str, float]:
    await truncate(url)
    # Ingest alone: the scheduled rollups (bench/bench_kpi.py measures them) would
    # otherwise carry the benchmark's devices forward hour by hour inside the timing.
    settings = ingest_settings(db_url=url, mqtt_url=broker.url, client_id="bench-lag",
                               health_port=None, shared_group=None, rollups=False)
    metrics = IngestMetrics()
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingest(settings, stop=stop, metrics=metrics))
    while metrics.broker_connected._value.get() != 1:  # noqa: ASYNC110 - polls a gauge
        await asyncio.sleep(0.05)
    rate = points_per_s / points
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PACED_PUBLISHER, str(broker.port), str(rate), str(seconds),
        str(points), data_topic(ENT, EDGE), ENT, EDGE, "10000000",
        stdout=subprocess.PIPE,
    )
    peak = rss_mb()
    while proc.returncode is None:
        await asyncio.sleep(0.1)
        peak = max(peak, rss_mb())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.01)
    out, _ = await proc.communicate()
    sent_text, behind = [*out.decode().split(), "0", "0"][:2]
    sent = int(sent_text)
    deadline = time.monotonic() + 120
    while metrics.messages_acked < sent and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    stop.set()
    await task
    samples = sorted(metrics.lag_samples)
    return {
        "rate_points_per_s": points_per_s,
        "messages": sent,
        "p50_ms": 1000 * statistics.median(samples),
        "p99_ms": 1000 * samples[int(0.99 * (len(samples) - 1))],
        "max_ms": 1000 * samples[-1],
        "acked": metrics.messages_acked,
        "publisher_behind_s": float(behind),
        "peak_rss_mb": peak,
    }


async def bench_rollups(url: str, broker: Mosquitto, count: int) -> None:
    """The batched drain on recent timestamps: alone, with rollups beside, inside."""
    t0 = int(time.time() * 1000) - 4 * 3_600_000
    conn = await connect(url, autocommit=True)
    async with conn:  # the devices' coverage, as a running installation has it
        await run_rollups(conn, history_days=1)
    print("broker → committed, 200 points/message, timestamps of the last 4 hours;"
          " rollups every 1 s, 1 day of history:")
    for mode in ("none", "beside", "inside", "none"):
        figures = await drain(url, broker, [payload(s, 200, t0=t0) for s in range(count)], 200,
                              profile=False, label=f"rollups-{mode}",
                              rollups=mode)  # type: ignore[arg-type]
        what = {"none": "no rollups", "beside": "zhizao rollup serve beside",
                "inside": "rollups inside ingest"}[mode]
        print(f"  {what:28s} {figures['points_per_s']:10,.0f} points/s"
              f" ({figures['seconds']:.1f} s); rollup runs during the drain"
              f" {figures['rollup_runs']:.0f}, {figures['rollup_device_hours']:,.0f}"
              f" device-hours, {figures['rollup_seconds']:.1f} s computing")
        t0 += count * 1000 + 1000  # the next phase's points are new rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batched-messages", type=int, default=1500)
    parser.add_argument("--single-messages", type=int, default=60_000)
    parser.add_argument("--lag-seconds", type=float, default=15)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rollups", action="store_true",
                        help="also the batched drain with rollups beside and inside ingest")
    parser.add_argument("--only-rollups", action="store_true",
                        help="only the --rollups phases")
    args = parser.parse_args()
    from zhizao.logs import configure_logging

    configure_logging(json_lines=False, level="WARNING")
    name = f"zhizao_bench_{os.getpid()}"
    url = await setup_db(name)
    folder = Path(tempfile.mkdtemp(prefix="bench-mosquitto-"))
    broker = Mosquitto(folder)
    broker.start()
    try:
        print(f"host: {os.cpu_count()} cores (shared with other work), "
              f"python {sys.version.split()[0]}")
        if args.rollups or args.only_rollups:
            await bench_rollups(url, broker, args.batched_messages)
        if args.only_rollups:
            return
        rows = args.batched_messages * 200
        paths = await bench_write_paths(url, rows, 20_000)
        print("write paths, same rows, batches of 20,000 (rows/s):")
        for label, value in paths.items():
            print(f"  {label:16s} {value:12,.0f}")
        ceiling = max(paths["copy_ceiling"], paths["copy_ceiling#2"])

        batched = await drain(url, broker, [payload(s, 200) for s in range(args.batched_messages)],
                              200, profile=args.profile, label="batched")
        print(f"broker → committed, 200 points/message: {batched['points_per_s']:,.0f} points/s"
              f" ({batched['messages_per_s']:,.0f} msg/s, {batched['seconds']:.1f} s,"
              f" RSS peak {batched['peak_rss_mb']:.0f} MB, +{batched['rss_growth_mb']:.0f} MB"
              " while draining) = "
              f"{100 * batched['points_per_s'] / ceiling:.0f}% of the COPY ceiling;"
              f" a commit in progress {100 * batched['commit_share']:.0f}% of the time")
        single = await drain(url, broker, [payload(s, 1) for s in range(args.single_messages)],
                             1, profile=args.profile, label="single")
        print(f"broker → committed, 1 point/message:    {single['points_per_s']:,.0f} points/s"
              f" ({single['seconds']:.1f} s, RSS peak {single['peak_rss_mb']:.0f} MB,"
              f" +{single['rss_growth_mb']:.0f} MB while draining)")
        lag = await lag_at(url, broker, batched["points_per_s"] / 2, 200, args.lag_seconds)
        print(f"lag at {lag['rate_points_per_s']:,.0f} points/s (half the batched rate),"
              f" {lag['messages']} messages: p50 {lag['p50_ms']:.0f} ms,"
              f" p99 {lag['p99_ms']:.0f} ms,"
              f" max {lag['max_ms']:.0f} ms, peak RSS {lag['peak_rss_mb']:.0f} MB"
              f" ({lag['acked']} acknowledged; publisher finished"
              f" {lag['publisher_behind_s']:.1f} s late)")
    finally:
        broker.kill()
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
