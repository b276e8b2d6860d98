"""``zhizao demo``: the platform's main job on embedded defaults.

On a machine with nothing installed but this package it starts an embedded
PostgreSQL (unless ``--db-url`` or ZHIZAO_DB_URL names one), migrates it, imports the
sample equipment ledger of Zhejiang pilot enterprises and the demo factory's shift
calendar, then runs the whole data path on one simulated day of that factory:

    simulator (OPC UA machines and robots, MQTT devices)
      → edge collector (disk spool, uplink) → MQTT broker (embedded amqtt unless
      ``--mqtt-url``) → ingest → PostgreSQL → rollups → OEE, 设备联网率, 数控化率

It shows progress while the day runs, prints the KPIs when it is done and where to
look, then keeps the database, broker and ingest running until Ctrl-C (or for
``--duration`` seconds in all), so ``zhizao kpi ...`` can be pointed at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edge.runtime import run_edge
from edge.simulator.edge_config import edge_config_for
from edge.simulator.run import run_simulator
from edge.simulator.scenario import Scenario, load_scenario, resolve
from ingest import ingest_settings, run_ingest
from zhizao.calendar import load_calendars
from zhizao.cli.common import DbUrlOption, console, fail
from zhizao.cli.db import upgrade_database
from zhizao.cli.kpi import pct, print_rates
from zhizao.cli.registry import import_ledger, load_summaries, print_changes, print_summaries
from zhizao.embedded import EmbeddedBroker, EmbeddedPostgres, demo_home, free_port
from zhizao.errors import ZhizaoError
from zhizao.networking import GroupBy
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import connect, drop_database, redact, with_database
from zhizao.storage.kpi import (
    Level,
    OeeScope,
    group_names,
    nc_rates,
    networking_rates,
    oee_for_interval,
)
from zhizao.storage.rollups import (
    rollup_settings,
    run_rollups,
    store_calendars,
)

DEMO_DATABASE = "zhizao_demo"
#: The factory the simulator plays: the first enterprise of the sample ledger.
DEMO_ENTERPRISE = "91330206MA2GR7K17L"
DEMO_EDGE = "EDGE-RC-01"


def sample_ledger_path() -> Path:
    return Path(str(resources.files("zhizao.data") / "sample_ledger.xlsx"))


def demo_calendar_path() -> Path:
    return Path(str(resources.files("zhizao.data") / "demo_calendar.yaml"))


@dataclass
class Endpoints:
    db_url: str
    mqtt_url: str
    opcua: str
    edge_http: int
    ingest_http: int
    ground_truth: Path


@asynccontextmanager
async def _database(db_url: str | None) -> AsyncIterator[str]:
    """The demo database URL: the given one, or an embedded PostgreSQL's."""
    if db_url is not None:
        yield db_url
        return
    pgdata = demo_home() / "pgdata"
    embedded = EmbeddedPostgres(pgdata)
    with console.status(f"启动嵌入式 PostgreSQL starting embedded PostgreSQL in {pgdata}"):
        server_url = await asyncio.to_thread(embedded.start)
    console.print(f"[green]✓[/] embedded PostgreSQL running ({pgdata})")
    try:
        yield with_database(server_url, DEMO_DATABASE)
    finally:
        await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def _broker(mqtt_url: str | None) -> AsyncIterator[tuple[str, str]]:
    """(broker URL, MQTT protocol): the given broker (MQTT 5), or an embedded amqtt (3.1.1)."""
    if mqtt_url is not None:
        yield mqtt_url, "5"
        return
    async with EmbeddedBroker() as broker:
        console.print(f"[green]✓[/] embedded MQTT broker (amqtt, MQTT 3.1.1) on {broker.url}")
        yield broker.url, "3.1.1"


async def _prepare_database(settings: DatabaseSettings, fresh: bool) -> None:
    if fresh:
        await drop_database(settings.url)
    with console.status("迁移数据库 migrating the database"):
        result = await upgrade_database(settings)
    engine = "TimescaleDB" if result.timescaledb else "plain PostgreSQL"
    console.print(
        f"[green]✓[/] schema at version {result.version}"
        f" ({len(result.applied)} migrations applied; {engine})"
    )
    ledger, changes = await import_ledger(settings, sample_ledger_path())
    print_changes(ledger, changes)
    print_summaries(await load_summaries(settings))
    conn = await connect(settings.url)
    async with conn, conn.transaction():
        await store_calendars(conn, load_calendars(demo_calendar_path()))


async def _count_facts(url: str) -> int:
    conn = await connect(url)
    async with conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM metric_point) + (SELECT count(*) FROM state_change)"
            " + (SELECT count(*) FROM production_count)"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _watch(scenario: Scenario, speed: float, sim: asyncio.Task[Any], url: str) -> None:
    """Progress of the simulated day and of the facts stored, until the simulator ends."""
    total_s = scenario.duration
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TextColumn("{task.fields[stored]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("模拟一天 simulated day", total=total_s, clock="", stored="")
        while not sim.done():
            simulated = min((time.monotonic() - started) * speed, total_s)
            clock = scenario.start + timedelta(seconds=simulated)
            stored = await _count_facts(url)
            progress.update(
                task, completed=simulated, clock=f"{clock:%m-%d %H:%M}", stored=f"{stored:,} facts"
            )
            await asyncio.wait({sim}, timeout=1.0)
        progress.update(task, completed=total_s)


async def _drain(url: str, *, quiet_s: float = 3.0, limit_s: float = 60.0) -> int:
    """Wait until the edge's spool has been ingested: the fact count stops changing."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = await _count_facts(url)
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        await asyncio.sleep(0.5)
    return last


async def _report(url: str, scenario: Scenario) -> None:
    day = scenario.start.date()  # the scenario's start carries the factory's UTC offset
    # OEE over exactly the simulated window: after it the last states would be carried
    # forward to today, which is not what the factory did.
    start = scenario.start
    end = start + timedelta(seconds=scenario.duration)
    conn = await connect(url)
    async with conn:
        await run_rollups(conn)
        lines = Table("产线 line", "A 可用率", "P 性能", "Q 合格率", "OEE", "产量 produced",
                      "不良 reject", "离线 offline h",
                      title=f"OEE 按产线 by line — {DEMO_ENTERPRISE}"
                            f" {start:%Y-%m-%d %H:%M} … {end:%H:%M}")  # fmt: skip
        cur = await conn.execute(
            "SELECT l.code FROM line l JOIN enterprise e ON e.id = l.enterprise_id"
            " WHERE e.credit_code = %s ORDER BY l.code",
            (DEMO_ENTERPRISE,),
        )
        for (line,) in await cur.fetchall():
            report = await oee_for_interval(
                conn, OeeScope(Level.LINE, line, enterprise=DEMO_ENTERPRISE), start, end
            )
            r, c = report.result, report.result.components
            lines.add_row(line, pct(r.availability), pct(r.performance), pct(r.quality),
                          f"[bold]{pct(r.oee)}[/]", str(c.produced), str(c.reject),
                          f"{c.offline_s / 3600:.2f}")  # fmt: skip
        console.print(lines)
        names = await group_names(conn, GroupBy.ENTERPRISE)
        print_rates(f"设备联网率 Equipment networking rate {day} (by enterprise)",
                    await networking_rates(conn, day, day, GroupBy.ENTERPRISE), names)  # fmt: skip
        print_rates(f"数控化率 NC rate {day} (by cluster)",
                    await nc_rates(conn, day, GroupBy.CLUSTER),
                    await group_names(conn, GroupBy.CLUSTER))  # fmt: skip


def _where(endpoints: Endpoints, scenario: Scenario) -> Panel:
    day = scenario.start.date().isoformat()
    return Panel.fit(
        f"数据库 database      {redact(endpoints.db_url)}\n"
        f"MQTT broker          {endpoints.mqtt_url}   (topics zhizao/v1/+/edge/+/#)\n"
        f"OPC UA 模拟工厂       {endpoints.opcua}\n"
        f"边缘 edge            http://127.0.0.1:{endpoints.edge_http}/health  /metrics\n"
        f"接入 ingest          http://127.0.0.1:{endpoints.ingest_http}/health  /metrics\n"
        f"真值 ground truth    {endpoints.ground_truth}\n"
        "\n"
        f"  export ZHIZAO_DB_URL='{endpoints.db_url}'\n"
        f"  zhizao kpi oee --level line --code L1 --enterprise {DEMO_ENTERPRISE} --date {day}\n"
        f"  zhizao kpi shifts --level enterprise --code {DEMO_ENTERPRISE} --date {day}\n"
        f"  zhizao kpi networking --group-by enterprise --date {day} --evidence {DEMO_ENTERPRISE}\n"
        "  zhizao registry show\n"
        "docs: docs/kpi.md, docs/wire-contract.md, docs/edge.md, docs/ingest.md",
        title="智造 zhizao demo: where to look",
    )


class _Services:
    """The demo's background tasks, stopped together."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _start_factory(
    services: _Services, scenario: Scenario, speed: float, endpoints: Endpoints, protocol: str
) -> tuple[asyncio.Task[Any], asyncio.Event, asyncio.Task[Any]]:
    """Start the simulator, then an edge reading it; returns (simulator, edge stop, edge)."""
    opcua_port = free_port()
    endpoints.opcua = f"opc.tcp://127.0.0.1:{opcua_port}/zhizao/sim/"
    ready = asyncio.Event()
    sim = services.spawn(
        run_simulator(
            scenario, opcua_port=opcua_port, mqtt_url=endpoints.mqtt_url,
            ground_truth_path=endpoints.ground_truth, speed=speed, started=ready,
        )
    )  # fmt: skip
    await asyncio.wait({sim, services.spawn(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if sim.done():
        sim.result()  # the simulator failed to start: raise its error
    config = edge_config_for(
        scenario, enterprise=DEMO_ENTERPRISE, edge_id=DEMO_EDGE,
        opcua_endpoint=endpoints.opcua, device_broker_url=endpoints.mqtt_url,
        uplink_url=endpoints.mqtt_url, uplink_protocol=protocol,
        spool_path=demo_home() / "edge-spool.db", http_port=endpoints.edge_http,
    )  # fmt: skip
    edge_stop = asyncio.Event()
    return sim, edge_stop, services.spawn(run_edge(config, stop=edge_stop))


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


async def _run(  # noqa: PLR0917 - one parameter per CLI option
    db_url: str | None,
    mqtt_url: str | None,
    fresh: bool,
    duration: float | None,
    scenario: Scenario,
    speed: float | None,
    keep_running: bool,
) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    speed = speed or scenario.speed
    services = _Services()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, services.stop.set)

    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(_database(db_url))
        settings = DatabaseSettings(url=url)
        await _prepare_database(settings, fresh)
        broker_url, protocol = await stack.enter_async_context(_broker(mqtt_url))
        stack.push_async_callback(services.close)
        endpoints = Endpoints(url, broker_url, "", free_port(), free_port(),
                              demo_home() / f"ground-truth-{scenario.name}.jsonl")  # fmt: skip
        # Ingest also runs the rollups, every 5 s here so KPIs can be queried live.
        services.spawn(run_ingest(
            ingest_settings(mqtt_url=broker_url, mqtt_protocol=protocol, shared_group=None,
                            client_id="zhizao-demo-ingest", health_port=endpoints.ingest_http,
                            database=settings, rollup=rollup_settings(interval_s=5)),
            stop=services.stop,
        ))  # fmt: skip
        sim, edge_stop, edge = await _start_factory(services, scenario, speed, endpoints, protocol)
        console.print(
            f"[green]✓[/] simulator ({scenario.name}, {len(scenario.devices)} devices,"
            f" {speed:g}x), edge {DEMO_EDGE} and ingest running"
        )
        console.print(_where(endpoints, scenario))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                _until(services.stop, _watch(scenario, speed, sim, url)), timeout=_left(deadline)
            )
        if not sim.done():
            sim.cancel()  # cut short: the KPIs cover the part of the day simulated
        await asyncio.gather(sim, return_exceptions=True)
        with console.status("等待数据入库 waiting for the edge's spool to drain"):
            stored = await _drain(url)
        edge_stop.set()
        await asyncio.gather(edge, return_exceptions=True)
        console.print(f"[green]✓[/] {stored:,} facts stored; ground truth {endpoints.ground_truth}")
        await _report(url, scenario)

        if keep_running:
            if deadline is None:
                console.print("运行中 database, broker and ingest keep running; Ctrl-C stops")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(services.stop.wait(), timeout=_left(deadline))
        console.print("停止 stopping")


async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it ends or ``stop`` is set."""
    job = asyncio.create_task(work)
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({job, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (job, waiter):
            task.cancel()
        await asyncio.gather(job, waiter, return_exceptions=True)


def demo(  # noqa: PLR0917 - typer maps each option to a parameter
    db_url: DbUrlOption = None,
    mqtt_url: str | None = typer.Option(
        None, "--mqtt-url", help="Use this MQTT 5 broker instead of the embedded amqtt."
    ),
    fresh: bool = typer.Option(False, help="Drop the demo database first and start anew."),
    duration: float | None = typer.Option(
        None, help="Stop after this many seconds in all (default: run until Ctrl-C)."
    ),
    scenario: str = typer.Option(
        "factory", help="Simulator scenario: a bundled name (factory, smoke) or a file."
    ),
    speed: float | None = typer.Option(
        None, help="Simulated seconds per wall second (default: the scenario's)."
    ),
    keep_running: bool = typer.Option(
        True, "--keep-running/--exit", help="After the report, keep serving or exit."
    ),
) -> None:
    """Run the whole platform on embedded defaults on a simulated factory day."""
    try:
        loaded = load_scenario(resolve(scenario))
        asyncio.run(_run(db_url or os.environ.get("ZHIZAO_DB_URL"), mqtt_url, fresh, duration,
                         loaded, speed, keep_running))  # fmt: skip
    except ZhizaoError as exc:
        raise fail(exc) from exc
