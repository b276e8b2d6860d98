"""``zhizao demo``: the platform's main job on embedded defaults.

On a machine with nothing installed but this package it starts an embedded MQTT
broker (amqtt, unless ``--mqtt-url``) and an embedded PostgreSQL (unless
``--db-url`` or ZHIZAO_DB_URL names one), migrates the database, imports the sample
equipment ledger of Zhejiang pilot enterprises and the demo factory's shift calendar,
then runs the whole data path on one simulated day of that factory:

    simulator (OPC UA machines and robots, MQTT devices)
      → edge collector (disk spool, uplink) → MQTT broker → ingest → PostgreSQL
      → rollups → OEE, 设备联网率, 数控化率

Each run simulates the next day. The facts a day produces are keyed by device and
simulated time, but the simulator's samples do not fall on the same milliseconds
twice, so replaying a day into the same database would double its facts and change
its OEE. The day is therefore chosen from the database itself, not from a file in the
data directory: the first working day of the demo calendar after the last simulated
fact of the demo factory. That also holds for a database of the user's own
(``--db-url``) reached from several data directories. ``--fresh`` drops the database
and starts again at the scenario's own date; when the next day would lie in the future
(ingest refuses facts from there) the demo refuses and names ``--fresh``.

The terminal belongs to the demo's report: the services' logs go to ``demo.log`` in
the data directory (its path is printed), simulated faults are announced as they
happen, in the factory's local time, and after the report nothing else is printed.
A broker or database that cannot be reached ends the demo before anything is
started, with one line and a non-zero exit; a run whose facts never reached the
database ends the same way instead of showing the figures of an earlier day.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shlex
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import typer
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edge.runtime import run_edge
from edge.simulator.edge_config import edge_config_for
from edge.simulator.run import run_simulator
from edge.simulator.scenario import FaultKind, Scenario, load_scenario, resolve
from ingest import ingest_settings, run_ingest
from ingest.rollup_service import RollupService
from zhizao.calendar import ShiftCalendar, read_calendar_file, shift_instances
from zhizao.cli.common import DbUrlOption, console, fail, one_line
from zhizao.cli.db import upgrade_database
from zhizao.cli.demo_board import (
    DEFAULT_PORT,
    LOGIN_FILE,
    BoardServer,
    DemoLogin,
    board_url,
    demo_login,
    ensure_demo_user,
    listen,
)
from zhizao.cli.kpi import pct, print_rates
from zhizao.cli.registry import import_ledger, load_summaries, print_changes, print_summaries
from zhizao.embedded import EmbeddedBroker, EmbeddedPostgres, demo_home, free_port
from zhizao.errors import MqttError, ZhizaoError
from zhizao.logs import log_to_file
from zhizao.networking import GroupBy, Method
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import Conn, connect, drop_database, redact, with_database
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
from zhizao.wire import StateClass

DEMO_DATABASE = "zhizao_demo"
#: The factory the simulator plays: the first enterprise of the sample ledger.
DEMO_ENTERPRISE = "91330206MA2GR7K17L"
DEMO_EDGE = "EDGE-RC-01"
#: How far ahead the demo looks for a working day of the calendar.
_SEARCH_DAYS = 14
_DAY = timedelta(days=1)
NO_EDGE = "无边缘网关接入 no edge connected (not part of the simulation)"
_WEEKDAYS = ("周一 Mon", "周二 Tue", "周三 Wed", "周四 Thu", "周五 Fri", "周六 Sat", "周日 Sun")


def sample_ledger_path() -> Path:
    return Path(str(resources.files("zhizao.data") / "sample_ledger.xlsx"))


def demo_calendar_path() -> Path:
    return Path(str(resources.files("zhizao.data") / "demo_calendar.yaml"))


def log_path() -> Path:
    """Where the demo's services log (JSON lines), in the data directory."""
    return demo_home() / "demo.log"


@dataclass
class Endpoints:
    db_url: str
    mqtt_url: str
    opcua: str
    edge_http: int
    ingest_http: int
    ground_truth: Path
    embedded_db: bool = False
    logs: Path = field(default_factory=log_path)


class DemoError(ZhizaoError):
    """The demo cannot go on; the message is the one line the person reads."""


# -- local time ---------------------------------------------------------------------------


def _offset(instant: datetime) -> str:
    """``+08:00`` for an aware instant."""
    raw = instant.strftime("%z")
    return f"{raw[:3]}:{raw[3:]}" if raw else "+00:00"


def local_minute(instant: datetime) -> str:
    """``10:42+08:00``: a time as the factory reads it."""
    return f"{instant:%H:%M}{_offset(instant)}"


def _local_instant(instant: datetime, zone: ZoneInfo) -> str:
    local = instant.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M}{_offset(local)}"


def period_label(start: datetime, end: datetime) -> str:
    """The simulated window as a local period, e.g. ``2026-03-03 周二 Tue 00:00–24:00 +08:00``."""
    last = end - timedelta(microseconds=1)
    weekday = _WEEKDAYS[start.weekday()]
    if last.date() == start.date():
        until = "24:00" if end.date() != start.date() else f"{end:%H:%M}"
        return f"{start:%Y-%m-%d} {weekday} {start:%H:%M}–{until} {_offset(start)}"
    return f"{start:%Y-%m-%d %H:%M} … {end:%Y-%m-%d %H:%M} {_offset(start)}"


# -- infrastructure -----------------------------------------------------------------------


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
    try:
        yield with_database(server_url, DEMO_DATABASE)
    finally:
        await asyncio.to_thread(embedded.stop)


def _mqtt_string(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session): every broker version answers it."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big")
    body += _mqtt_string(client_id)
    for field_value in (username, password):
        if field_value is not None:
            body += _mqtt_string(field_value)
    length, encoded = len(body), b""
    while True:  # the remaining length, 7 bits a byte
        length, digit = divmod(length, 128)
        encoded += bytes([digit | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


_CONNACK_REFUSED = {1: "protocol version", 2: "client id", 3: "server unavailable",
                    4: "bad user name or password", 5: "not authorised"}  # fmt: skip


async def probe_broker(url: str, timeout_s: float = 5.0) -> None:
    """Fail now, with one line, when no MQTT broker answers at ``url``.

    A TCP connection is not enough (a port forwarded to nothing, another server on the
    port): the probe sends a CONNECT and waits for the CONNACK. Over TLS only the
    connection is tried; the edge and ingest report a handshake problem themselves.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    tls = parts.scheme in {"mqtts", "ssl"}
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise DemoError(f"--mqtt-url {url!r} is not a broker URL: {exc}") from exc
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            if tls:
                return
            probe_id = f"zhizao-demo-probe-{os.getpid()}"
            writer.write(connect_packet(probe_id, parts.username, parts.password))
            await writer.drain()
            connack = await reader.readexactly(4)
            writer.write(b"\xe0\x00")  # DISCONNECT
            await writer.drain()
    except TimeoutError as exc:
        raise MqttError(
            f"cannot reach the MQTT broker {url}: no MQTT answer within {timeout_s:g} s"
        ) from exc
    except asyncio.IncompleteReadError as exc:
        raise MqttError(
            f"cannot reach the MQTT broker {url}: the connection closed without an MQTT answer"
        ) from exc
    except OSError as exc:
        raise MqttError(f"cannot reach the MQTT broker {url}: {one_line(exc)}") from exc
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    if connack[0] != 0x20 or connack[3] != 0:
        why = _CONNACK_REFUSED.get(connack[3], f"return code {connack[3]}")
        raise MqttError(f"the MQTT broker {url} refused the demo's connection: {why}")


@asynccontextmanager
async def _broker(mqtt_url: str | None) -> AsyncIterator[tuple[str, str]]:
    """(broker URL, MQTT protocol): the given broker (MQTT 5), or an embedded amqtt (3.1.1)."""
    if mqtt_url is not None:
        await probe_broker(mqtt_url)
        yield mqtt_url, "5"
        return
    async with EmbeddedBroker() as broker:
        yield broker.url, "3.1.1"


async def _migrate(settings: DatabaseSettings, fresh: bool) -> str:
    """Migrate (after dropping, with --fresh); the line that says so, printed later."""
    if fresh:
        await drop_database(settings.url)
    with console.status("迁移数据库 migrating the database"):
        result = await upgrade_database(settings)
    engine = "TimescaleDB" if result.timescaledb else "plain PostgreSQL"
    return (
        f"[green]✓[/] schema at version {result.version}"
        f" ({len(result.applied)} migrations applied; {engine})"
    )


async def _import_sample(settings: DatabaseSettings) -> Callable[[], None]:
    """Import the sample ledger and the demo calendar; returns what prints the result."""
    ledger, changes = await import_ledger(settings, sample_ledger_path())
    summaries = await load_summaries(settings)
    conn = await connect(settings.url)
    async with conn, conn.transaction():
        await store_calendars(conn, read_calendar_file(demo_calendar_path()))

    def report() -> None:
        print_changes(ledger, changes)
        print_summaries(summaries)

    return report


# -- the board ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Board:
    url: str
    login: DemoLogin
    login_file: Path


async def _start_board(
    stack: AsyncExitStack, db_url: str, host: str, port: int | None, day: date
) -> Board:
    """The API with the board, serving until the demo ends; the demo user made. The
    address opens the demo factory on the simulated day (the wall clock's day may
    have no production, only the running edge's online reports)."""
    login = demo_login(demo_home())
    conn = await connect(db_url)
    async with conn, conn.transaction():
        await ensure_demo_user(conn, login, DEMO_ENTERPRISE)
    server = BoardServer(db_url, demo_home(), listen(host, port), log_path())
    stack.push_async_callback(server.stop)
    await server.start()
    url = board_url(host, server.port, DEMO_ENTERPRISE, day)
    return Board(url, login, demo_home() / LOGIN_FILE)


def _login_line(board: Board) -> str:
    return (
        f"用户 user {board.login.username}  密码 password {board.login.password}"
        f"  (generated for this data directory, kept in {board.login_file})"
    )


def _print_board(board: Board) -> None:
    # Never wrapped: a URL or password broken at the terminal's width would not paste.
    console.print(f"看板 board  {board.url}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"  {_login_line(board)}", soft_wrap=True, markup=False, highlight=False)


# -- which day ----------------------------------------------------------------------------

_LATEST_FACT = """
SELECT greatest(
    (SELECT max(f.time) FROM state_change f WHERE f.device_id = ANY(%(ids)s)),
    (SELECT max(f.time) FROM production_count f WHERE f.device_id = ANY(%(ids)s)),
    (SELECT max(f.time) FROM metric_point f WHERE f.device_id = ANY(%(ids)s)))
"""


async def _factory(url: str) -> tuple[list[int], ZoneInfo, str]:
    """The demo factory's device ids, time zone and name, from the registry."""
    conn = await connect(url)
    async with conn:
        cur = await conn.execute(
            "SELECT e.time_zone, e.name, coalesce(array_agg(d.id) FILTER"
            " (WHERE d.id IS NOT NULL), '{}') FROM enterprise e"
            " LEFT JOIN device d ON d.enterprise_id = e.id"
            " WHERE e.credit_code = %s GROUP BY e.time_zone, e.name",
            (DEMO_ENTERPRISE,),
        )
        row = await cur.fetchone()
    if row is None:
        raise DemoError(f"the demo factory {DEMO_ENTERPRISE} is not in the registry")
    return [int(i) for i in row[2]], ZoneInfo(str(row[0])), str(row[1])


async def latest_fact(url: str, device_ids: list[int]) -> datetime | None:
    """The simulated time of the demo factory's last stored fact, if any."""
    conn = await connect(url)
    async with conn:
        cur = await conn.execute(_LATEST_FACT, {"ids": device_ids})
        row = await cur.fetchone()
    value = None if row is None else row[0]
    return value if isinstance(value, datetime) else None


def _scheduled(
    calendars: list[ShiftCalendar], zone: ZoneInfo, start: datetime, end: datetime
) -> bool:
    if not calendars:
        return True
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    return any(shift_instances(c, zone, start_ms, end_ms) for c in calendars)


def next_day(
    scenario: Scenario,
    latest: datetime | None,
    *,
    calendars: list[ShiftCalendar],
    zone: ZoneInfo,
    now: datetime,
    max_future: timedelta,
) -> tuple[Scenario, int]:
    """The scenario moved to the day this run simulates, and how many days it moved.

    The first run plays the scenario's own date. A later one starts at the first
    scenario start, a whole number of days on, that is not before the last stored
    fact (a day's last sample lies on its end, the next day's start), skipping days
    on which the demo calendar has no shift (Sundays): such a day has no planned time
    and so no OEE to show.
    """
    days = 0
    if latest is not None and latest >= scenario.start:
        days = max(1, math.ceil((latest - scenario.start) / _DAY))
    for _ in range(_SEARCH_DAYS):
        start = scenario.start + days * _DAY
        if _scheduled(calendars, zone, start, start + timedelta(seconds=scenario.duration)):
            break
        days += 1
    moved = scenario.model_copy(update={"start": scenario.start + days * _DAY})
    end = moved.start + timedelta(seconds=scenario.duration)
    if end > now + max_future:
        raise DemoError(
            f"the next simulated day ({moved.start:%Y-%m-%d}) lies in the future, whose facts"
            " ingest refuses: the database already holds the days before it;"
            " run `zhizao demo --fresh` to start anew"
        )
    return moved, days


# -- while the day runs -------------------------------------------------------------------


@dataclass(frozen=True)
class Announcement:
    offset_s: float
    text: str


def announcements(scenario: Scenario) -> list[Announcement]:
    """The scenario's faults and breakdowns, as the demo announces them, in order."""
    found: list[Announcement] = []
    for device in scenario.devices:
        for episode in device.episodes:
            if episode.state is StateClass.UNPLANNED_STOP:
                why = f": {episode.reason}" if episode.reason else ""
                minutes = round(episode.duration / 60)
                found.append(Announcement(
                    episode.at, f"{device.code} 故障停机 breakdown{why} ({minutes} min)"
                ))  # fmt: skip
    for fault in scenario.faults:
        if fault.kind is FaultKind.SERVER_RESTART:
            text = f"OPC UA 服务器重启 server restart (down {fault.down:g} s)"
        elif fault.kind is FaultKind.NODE_REMOVED:
            text = f"{fault.target} 节点删除 node removed"
        elif fault.kind is FaultKind.GARBAGE_PAYLOAD:
            text = f"{fault.target} 乱码报文 garbage payload ×{fault.count}"
        else:
            text = f"{fault.target} 计数器清零 counter reset"
        found.append(Announcement(fault.at, f"{text} 故障 fault"))
    for drop in scenario.network_drops:
        target = "OPC UA 服务器 server" if drop.target == "opcua" else drop.target
        found.append(Announcement(
            drop.at, f"{target} 网络中断 network drop ({round(drop.duration / 60)} min)"
        ))  # fmt: skip
    found.sort(key=lambda a: a.offset_s)
    return found


async def _count_facts(url: str, device_ids: list[int], start: datetime, end: datetime) -> int:
    """Facts of the demo factory in the simulated window (its end included)."""
    conn = await connect(url)
    async with conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM metric_point f WHERE {w})"
            " + (SELECT count(*) FROM state_change f WHERE {w})"
            " + (SELECT count(*) FROM production_count f WHERE {w})".replace(
                "{w}", "f.device_id = ANY(%(ids)s) AND f.time BETWEEN %(start)s AND %(end)s"
            ),
            {"ids": device_ids, "start": start, "end": end},
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


#: The demo's rollups: every 5 s, no empty history for devices without data.
DEMO_ROLLUPS = rollup_settings(interval_s=5, history_days=0)

#: Wall seconds the simulator keeps serving after the day (see run_simulator).
SIM_LINGER_S = 2.0


async def _watch(
    scenario: Scenario, speed: float, sim: asyncio.Task[Any], url: str, device_ids: list[int]
) -> None:
    """Progress of the simulated day and of its facts, faults as they happen."""
    total_s = scenario.duration
    end = scenario.start + timedelta(seconds=total_s)
    pending = announcements(scenario)
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
        while True:
            done = sim.done()
            simulated = total_s if done else min((time.monotonic() - started) * speed, total_s)
            clock = scenario.start + timedelta(seconds=simulated)
            while pending and pending[0].offset_s <= simulated:
                event = pending.pop(0)
                at = scenario.start + timedelta(seconds=event.offset_s)
                progress.console.print(f"[yellow]⚠ {local_minute(at)} {event.text}[/]")
            stored = await _count_facts(url, device_ids, scenario.start, end)
            progress.update(
                task,
                completed=simulated,
                clock=f"{clock:%m-%d %H:%M}{_offset(clock)}",
                stored=f"{stored:,} facts",
            )
            if done:
                break
            await asyncio.wait({sim}, timeout=1.0)


async def _drain(
    url: str,
    device_ids: list[int],
    window: tuple[datetime, datetime],
    *,
    quiet_s: float = 3.0,
    limit_s: float = 60.0,
) -> int:
    """Wait until the edge's spool has been ingested: the day's fact count stops changing."""
    deadline = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = await _count_facts(url, device_ids, *window)
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        await asyncio.sleep(0.5)
    return last


# -- the report ---------------------------------------------------------------------------


async def _edges_reporting(conn: Conn) -> set[str]:
    """Credit codes of enterprises one of whose edges has ever reported to the platform."""
    cur = await conn.execute(
        "SELECT DISTINCT e.credit_code FROM enterprise e"
        " JOIN edge_gateway g ON g.enterprise_id = e.id"
        " WHERE EXISTS (SELECT 1 FROM edge_status s WHERE s.edge_pk = g.id)"
    )
    return {str(code).strip() for (code,) in await cur.fetchall()}


def _heading(text: str) -> None:
    console.print(f"\n{text}", style="bold", soft_wrap=True, markup=False, highlight=False)


async def _report(url: str, scenario: Scenario, factory: str) -> None:
    start = scenario.start
    # OEE over exactly the simulated window: after it the last states would be carried
    # forward to today, which is not what the factory did.
    end = start + timedelta(seconds=scenario.duration)
    day = start.date()  # the scenario's start carries the factory's UTC offset
    period = period_label(start, end)
    conn = await connect(url)
    async with conn:
        # Up to the window's end, as the periodic runs did (`zhizao rollup run` carries
        # the demo's days forward to today when it is asked to).
        await run_rollups(conn, until=end, history_days=DEMO_ROLLUPS.history_days)
        # Headings above the tables, not table titles: a title wraps at the table's
        # width and would cut the period in two.
        _heading(f"OEE 按产线 by line — {period} — {factory} {DEMO_ENTERPRISE}")
        lines = Table("产线 line", "A 可用率", "P 性能", "Q 合格率", "OEE", "产量 produced",
                      "不良 reject", "离线 offline h")  # fmt: skip
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
        reporting = await _edges_reporting(conn)
        _heading(f"设备联网率 Equipment networking rate — {day} {_WEEKDAYS[day.weekday()]}"
                 f" (local day, {_offset(start)}) — by enterprise")  # fmt: skip
        rates = Table("企业 enterprise", "联网率 rate", "联网 networked / 在役生产 in service",
                      "说明 note")  # fmt: skip
        for figure in await networking_rates(conn, day, day, GroupBy.ENTERPRISE):
            if figure.method is not Method.RATIO_OF_SUMS:
                continue  # one enterprise: both methods give the same figure
            label = f"{figure.group} {names.get(figure.group, '')}".strip()
            counts = f"{figure.numerator:,.0f} / {figure.denominator:,.0f}"
            if figure.group in reporting:
                rates.add_row(label, f"[bold]{pct(figure.rate)}[/]", counts, "")
            else:
                rates.add_row(label, "—", counts, NO_EDGE)
        console.print(rates)
        print_rates(f"数控化率 NC rate {day} (by cluster, from the ledger)",
                    await nc_rates(conn, day, GroupBy.CLUSTER),
                    await group_names(conn, GroupBy.CLUSTER))  # fmt: skip


def suggested_commands(endpoints: Endpoints, scenario: Scenario) -> list[str]:
    """Shell lines a person can paste to look at this run's day with the CLI."""
    start = scenario.start
    end = start + timedelta(seconds=scenario.duration)
    day = start.date().isoformat()
    ent = DEMO_ENTERPRISE
    return [
        f"export ZHIZAO_DB_URL={shlex.quote(endpoints.db_url)}",
        f"zhizao kpi oee line L1 --enterprise {ent}"
        f" --start {start.isoformat(timespec='minutes')} --end {end.isoformat(timespec='minutes')}",
        f"zhizao kpi shifts enterprise {ent} --date {day}",
        f"zhizao kpi networking --group-by enterprise --date {day} --evidence {ent}",
        f"zhizao kpi nc --group-by cluster --date {day}",
        f"zhizao report networking --period {day}..{day} --format csv --table enterprises",
        "zhizao registry show",
    ]


def _where(endpoints: Endpoints, scenario: Scenario, board: Board, *, keep_running: bool) -> None:
    api_root = board.url.split("/board/")[0]
    console.print(
        Panel.fit(
            f"看板 board           {api_root}/board/   (API {api_root}/api/v1/docs)\n"
            f"数据库 database      {redact(endpoints.db_url)}\n"
            f"MQTT broker          {endpoints.mqtt_url}   (topics zhizao/v1/+/edge/+/#)\n"
            f"OPC UA 模拟工厂       {endpoints.opcua}\n"
            f"边缘 edge            http://127.0.0.1:{endpoints.edge_http}/health  /metrics\n"
            f"接入 ingest          http://127.0.0.1:{endpoints.ingest_http}/health  /metrics\n"
            f"真值 ground truth    {endpoints.ground_truth}\n"
            f"日志 service logs    {endpoints.logs}\n"
            "docs: docs/board.md, docs/kpi.md, docs/wire-contract.md, docs/edge.md,"
            " docs/ingest.md",
            title="智造 zhizao demo: where to look",
        )
    )
    if keep_running:
        _print_board(board)
    else:
        console.print("看板 the board served this run's figures while it ran; without --exit it"
                      " keeps serving them:")  # fmt: skip
        console.print(f"  {_login_line(board)}", soft_wrap=True, markup=False, highlight=False)
    if endpoints.embedded_db and not keep_running:
        console.print(
            "查询 to query this day, run `zhizao demo` without --exit: the embedded"
            " database runs only while the demo does. Then, in another terminal:"
        )
    else:
        console.print("查询 query this day from another terminal:")
    for line in suggested_commands(endpoints, scenario):
        # Never wrapped: a line broken at the terminal's width would not paste.
        console.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)


@dataclass
class SimClock:
    """Where the simulated day is: its start plus the wall time since the simulator
    began, times the speed; never past the day's end (nor before its start)."""

    start: datetime
    duration_s: float
    speed: float
    began: float | None = None

    def begin(self) -> None:
        self.began = time.monotonic()

    def now(self) -> datetime:
        if self.began is None:
            return self.start
        simulated = (time.monotonic() - self.began) * self.speed
        return self.start + timedelta(seconds=min(simulated, self.duration_s))


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
            # The edge's subscription delivers every 0.5 s: without a pause the last parts
            # of the day would still be in the server when it stops.
            linger_s=SIM_LINGER_S,
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
        # At 600x a second of backoff is ten simulated minutes in which a restarted
        # server's parts cannot be counted (the counters re-baseline): retry quickly.
        reconnect_s=(0.1, 1.0),
    )  # fmt: skip
    edge_stop = asyncio.Event()
    return sim, edge_stop, services.spawn(run_edge(config, stop=edge_stop))


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _raise_if_failed(task: asyncio.Task[Any], what: str) -> None:
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise DemoError(f"{what} stopped: {one_line(task.exception())} (see {log_path()})")


async def _choose_day(url: str, scenario: Scenario) -> tuple[Scenario, list[int], str, str]:
    """The day this run simulates, the factory's device ids and name, and the line that
    announces the day (printed after the board's address)."""
    device_ids, zone, factory = await _factory(url)
    latest = await latest_fact(url, device_ids)
    calendars = [
        c for c in read_calendar_file(demo_calendar_path()) if c.enterprise == DEMO_ENTERPRISE
    ]
    max_future = timedelta(seconds=ingest_settings().max_future_s)
    moved, days = next_day(
        scenario,
        latest,
        calendars=calendars,
        zone=zone,
        now=datetime.now(UTC),
        max_future=max_future,
    )
    end = moved.start + timedelta(seconds=moved.duration)
    if days and latest is not None:
        note = (
            f"→ 模拟日 simulated day {period_label(moved.start, end)}: the database already"
            f" holds the demo factory's facts up to {_local_instant(latest, zone)},"
            " so this run simulates the next working day (--fresh starts anew)"
        )
    else:
        note = f"→ 模拟日 simulated day {period_label(moved.start, end)}"
    return moved, device_ids, factory, note


async def _bring_up(  # noqa: PLR0917 - the parts _run has chosen
    stack: AsyncExitStack,
    settings: DatabaseSettings,
    fresh: bool,
    scenario: Scenario,
    embedded_db: bool,
    broker_url: str,
    embedded_broker: bool,
    board_host: str,
    board_port: int | None,
) -> tuple[Scenario, list[int], str, Board]:
    """Migrate, import the sample, choose the day and start the board; then say so,
    the board's address and login first."""
    url = settings.url
    migrated = await _migrate(settings, fresh)
    imported = await _import_sample(settings)
    scenario, device_ids, factory, day_note = await _choose_day(url, scenario)
    # The board first: its address and login are the first lines the person reads,
    # and it shows the figures as the day's facts arrive.
    board = await _start_board(stack, url, board_host, board_port, scenario.start.date())
    _print_board(board)
    if embedded_db:
        console.print(f"[green]✓[/] embedded PostgreSQL running ({demo_home() / 'pgdata'})")
    console.print(migrated)
    imported()
    if embedded_broker:
        console.print(f"[green]✓[/] embedded MQTT broker (amqtt, MQTT 3.1.1) on {broker_url}")
    else:
        console.print(f"[green]✓[/] MQTT broker {broker_url} reachable")
    console.print(day_note)
    return scenario, device_ids, factory, board


async def _run(  # noqa: PLR0917 - one parameter per CLI option
    db_url: str | None,
    mqtt_url: str | None,
    fresh: bool,
    duration: float | None,
    scenario: Scenario,
    speed: float | None,
    keep_running: bool,
    board_host: str = "127.0.0.1",
    board_port: int | None = None,
) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    speed = speed or scenario.speed
    services = _Services()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, services.stop.set)

    async with AsyncExitStack() as stack:
        # The broker first: an unreachable one ends the demo before anything is shown
        # as started, and so does an unreachable database (the first upgrade step).
        broker_url, protocol = await stack.enter_async_context(_broker(mqtt_url))
        url = await stack.enter_async_context(_database(db_url))
        settings = DatabaseSettings(url=url)
        scenario, device_ids, factory, board = await _bring_up(
            stack, settings, fresh, scenario, db_url is None, broker_url, mqtt_url is None,
            board_host, board_port,
        )  # fmt: skip
        window = (scenario.start, scenario.start + timedelta(seconds=scenario.duration))
        before = await _count_facts(url, device_ids, *window)
        stack.push_async_callback(services.close)
        endpoints = Endpoints(
            url, broker_url, "", free_port(), free_port(),
            demo_home() / f"ground-truth-{scenario.name}-{scenario.start:%Y-%m-%d}.jsonl",
            embedded_db=db_url is None,
        )  # fmt: skip
        ingest = services.spawn(run_ingest(
            ingest_settings(mqtt_url=broker_url, mqtt_protocol=protocol, shared_group=None,
                            client_id="zhizao-demo-ingest", health_port=endpoints.ingest_http,
                            database=settings, rollups=False),
            stop=services.stop,
        ))  # fmt: skip
        sim, edge_stop, edge = await _start_factory(services, scenario, speed, endpoints, protocol)
        # The rollups every 5 s, so that KPIs are live on the board, on the simulated
        # clock: the day is rolled up as far as it has run ("so far"), a day of the past
        # is not carried forward to today at every run, and devices without data get no
        # weeks of empty history (history_days=0): each run is small, and the edge and
        # the simulator sharing this process are not held up by it.
        clock = SimClock(scenario.start, scenario.duration, speed)
        clock.begin()
        # The supervised rollup service of production (`zhizao rollup serve`), in process.
        rollups = RollupService(
            url, DEMO_ROLLUPS, retry_initial_s=0.5, retry_max_s=5, until=clock.now
        )
        services.spawn(rollups.run(services.stop))  # fmt: skip
        console.print(
            f"[green]✓[/] simulator ({scenario.name}, {len(scenario.devices)} devices,"
            f" {speed:g}x), edge {DEMO_EDGE} and ingest running; logs in {endpoints.logs}"
        )

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                _until(services.stop, _watch(scenario, speed, sim, url, device_ids)),
                timeout=_left(deadline),
            )
        if not sim.done():
            sim.cancel()  # cut short: the KPIs cover the part of the day simulated
        await asyncio.gather(sim, return_exceptions=True)
        _raise_if_failed(sim, "the simulator")
        with console.status("等待数据入库 waiting for the edge's spool to drain"):
            stored = await _drain(url, device_ids, window)
        edge_stop.set()
        await asyncio.gather(edge, return_exceptions=True)
        _raise_if_failed(edge, "the edge")
        _raise_if_failed(ingest, "ingest")
        if stored - before <= 0:
            raise DemoError(
                f"no fact of the simulated day {scenario.start:%Y-%m-%d} reached the database:"
                f" the edge could not deliver through {broker_url} (see {endpoints.logs})"
            )
        console.print(
            f"[green]✓[/] {stored - before:,} facts of the simulated day stored;"
            f" ground truth {endpoints.ground_truth}"
        )
        await _report(url, scenario, factory)
        _where(endpoints, scenario, board, keep_running=keep_running)

        if keep_running:
            if deadline is None:
                console.print("运行中 database, broker and ingest keep running; Ctrl-C stops")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(services.stop.wait(), timeout=_left(deadline))


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
    fresh: bool = typer.Option(
        False, help="Drop the demo database first and start anew at the scenario's own day."
    ),
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
    board_port: int | None = typer.Option(
        None,
        "--board-port",
        help=f"Port of the API and the board (default {DEFAULT_PORT}, or a"
        " free one when that is taken).",
    ),
    board_host: str = typer.Option(
        "127.0.0.1", "--board-host", help="Address the board listens on (0.0.0.0: a TV on the LAN)."
    ),
) -> None:
    """Run the whole platform on embedded defaults on a simulated day (each run the next)."""
    try:
        loaded = load_scenario(resolve(scenario))
        log_to_file(log_path())
        asyncio.run(_run(db_url or os.environ.get("ZHIZAO_DB_URL"), mqtt_url, fresh, duration,
                         loaded, speed, keep_running, board_host, board_port))  # fmt: skip
    except ZhizaoError as exc:
        # One line: a psycopg error carries its hint on lines of its own.
        raise fail(one_line(exc), 2) from exc
