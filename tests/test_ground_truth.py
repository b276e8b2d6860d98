"""Ground truth (issue 5): the KPIs of a simulated factory agree with what it really did.

The ``groundtruth`` scenario runs end to end on real components: the simulator (an
asyncua server for CNC machines and robots, an MQTT device) → the edge (OPC UA and
MQTT collectors, disk spool, uplink) → a Mosquitto of the test's own → ingest →
PostgreSQL → rollups. Then A, P, Q and OEE per device and per line from the platform's
KPI queries must agree within 0.5 percentage points with the same figures computed from
the simulator's ground truth (exact state intervals and the time of every part), and
the enterprise's networking and NC rates for the scenario day must be exact.

Same definitions on both sides (DESIGN §7): the truth's intervals and parts go through
the pure :func:`zhizao.intervals.split` with the same schedule, and
:func:`zhizao.oee.compute` takes the ratios, so what is compared is what the data path
(collectors, timestamps, counters, spool, ingest, storage, rollups) made of the
factory, not two implementations of OEE.

The schedule is a shift calendar built from the scenario's shifts, stored like any
calendar. Without one all time would be scheduled, which is right for machines that
report PLANNED_STOP themselves, but a robot's OPC 40010 safety state cannot show a
planned stop (the simulator shows "no shift" as OperationalMode OTHER, which reads as
IDLE): its time outside the shift would count as idle loss that the factory never
had. The calendar is how DESIGN §7 tells planned from unplanned time for such devices,
and it is what the simulated factory works by; both sides use it.

Run it and see the table: ``.venv/bin/pytest tests/test_ground_truth.py -s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.opcua.config import OpcUaSourceConfig
from edge.runtime import EdgeRuntime
from edge.simulator.edge_config import edge_config_for
from edge.simulator.run import Simulator
from edge.simulator.scenario import DeviceType, Scenario, bundled, load_scenario
from edge.simulator.timeline import read_ground_truth
from ingest import ingest_settings, run_ingest
from tests.fix_mqtt import Mosquitto, free_port
from zhizao.calendar import Schedule, ShiftCalendar, parse_calendars, scheduled_intervals
from zhizao.cli.registry import import_ledger
from zhizao.intervals import CountPoint, Interval, split, total, transitions_from_intervals
from zhizao.networking import GroupBy, Kind, Method
from zhizao.oee import Oee, OeeComponents, compute, summed
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import Conn, connect
from zhizao.storage.kpi import Level, OeeScope, nc_rates, networking_rates, oee_for_interval
from zhizao.storage.rollups import run_rollups, store_calendars
from zhizao.wire import StateClass

pytestmark = pytest.mark.slow

ENTERPRISE = "91330206MA2GR7K17L"  # the first enterprise of the sample ledger
EDGE_ID = "EDGE-RC-01"
ZONE = ZoneInfo("Asia/Shanghai")
TOLERANCE = 0.005  # 0.5 percentage points
#: Simulated seconds per wall second: a simulator tick (50 ms wall) covers 30 simulated
#: seconds, a third of the scenario's shortest episode, and one OPC UA publish at the
#: edge config's default 500 ms covers 300 s, so one publish often carries a whole
#: micro-stop (start and end): the collector must judge a machine's state at each
#: source timestamp in a publish, not once per publish (edge/opcua/presets.py judge_batch).
#: ZHIZAO_GT_SPEED and ZHIZAO_GT_PUBLISHING_MS override them to explore (docs/kpi.md);
#: by default the edge runs the config ``zhizao demo`` runs.
SPEED = float(os.environ.get("ZHIZAO_GT_SPEED", "600"))
PUBLISHING_MS = (
    float(os.environ["ZHIZAO_GT_PUBLISHING_MS"])
    if os.environ.get("ZHIZAO_GT_PUBLISHING_MS")
    else None
)
#: Wall-clock limits for waiting on conditions; generous for a loaded 2-core machine.
READY_S = 60.0
DRAIN_S = 120.0
QUIET_S = 5.0  # the fact count has not changed for this long: all is stored


def sample_ledger() -> Path:
    return Path(str(resources.files("zhizao.data") / "sample_ledger.xlsx"))


def calendar_for(scenario: Scenario, enterprise: str) -> list[ShiftCalendar]:
    """The factory's shift calendar: the scenario's shifts as local clock times."""
    shifts = []
    for index, shift in enumerate(scenario.shifts):
        start = (scenario.start + timedelta(seconds=shift.start)).astimezone(ZONE)
        end = (scenario.start + timedelta(seconds=shift.end)).astimezone(ZONE)
        if end - start >= timedelta(days=1) or (start.second or end.second):
            raise ValueError("the scenario's shifts do not fit a weekly calendar")
        shifts.append({
            "name": f"shift {index + 1}",
            "start": f"{start:%H:%M}",
            "end": f"{end:%H:%M}",
            "days": [f"{start:%a}".lower()],
        })  # fmt: skip
    return parse_calendars(
        {"calendars": [{"enterprise": enterprise, "name": scenario.name, "shifts": shifts}]},
        source=f"scenario {scenario.name}",
    )


# --- the truth --------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    start_ms: int
    end_ms: int
    intervals: dict[str, list[Interval]]
    parts: dict[str, list[CountPoint]]


def parse_truth(records: list[dict[str, Any]]) -> Truth:
    header = next(r for r in records if r["type"] == "scenario")
    intervals: dict[str, list[Interval]] = {}
    parts: dict[str, list[CountPoint]] = {}
    for record in records:
        if record["type"] == "state":
            intervals.setdefault(record["device"], []).append(
                Interval(record["start"], record["end"], StateClass(record["state"]))
            )
        elif record["type"] == "part":
            good = record["name"] == "good"
            parts.setdefault(record["device"], []).append(
                CountPoint(record["ts"], good=int(good), reject=int(not good))
            )
    return Truth(int(header["start"]), int(header["end"]), intervals, parts)


def truth_components(
    truth: Truth, device: str, schedule: Schedule, ideal_cycle_s: float | None
) -> OeeComponents:
    """The device's OEE components from its exact intervals and parts, by the platform's
    own definitions (split over the same schedule, 120 s micro-stop threshold)."""
    buckets = split(
        transitions_from_intervals(truth.intervals[device]),
        truth.parts.get(device, []),
        schedule,
        truth.start_ms,
        truth.end_ms,
    )
    return OeeComponents.from_bucket(total(buckets.values()), ideal_cycle_s)


# --- the platform -----------------------------------------------------------------------


async def _wait_for(
    what: str, check: Callable[[], Awaitable[bool]], limit_s: float, *, every: float = 0.2
) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {limit_s:.0f} s waiting for {what}")
        await asyncio.sleep(every)


async def _scalar(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    conn = await connect(url)
    async with conn:
        cur = await conn.execute(query.encode(), params)
        row = await cur.fetchone()
    return None if row is None else row[0]


async def _facts(url: str) -> int:
    return int(
        await _scalar(
            url,
            "SELECT (SELECT count(*) FROM metric_point) + (SELECT count(*) FROM state_change)"
            " + (SELECT count(*) FROM production_count)",
        )
    )


def _publishing(config: Any) -> Any:
    """The scenario's edge config, with OPC UA publishing at PUBLISHING_MS if set."""
    if PUBLISHING_MS is None:
        return config
    sources = [
        source.model_copy(
            update={
                "publishing_interval_ms": PUBLISHING_MS,
                "sampling_interval_ms": min(PUBLISHING_MS, source.sampling_interval_ms),
            }
        )
        if isinstance(source, OpcUaSourceConfig)
        else source
        for source in config.sources
    ]
    return config.model_copy(update={"sources": sources})


async def run_factory(
    scenario: Scenario, db_url: str, broker_url: str, folder: Path, *, speed: float = SPEED
) -> Truth:
    """Simulator → edge → broker → ingest → database, until everything is stored.

    The edge is connected (every OPC UA machine's first state stored, the MQTT
    collector connected) before the simulated clock starts, so it reads the factory
    from the instant the ground truth begins: the first counter value is a baseline.
    """
    truth_path = folder / "truth.jsonl"
    stop = asyncio.Event()
    edge_stop = asyncio.Event()
    ingest = asyncio.create_task(
        run_ingest(
            ingest_settings(
                mqtt_url=broker_url, mqtt_protocol="5", shared_group=None,
                client_id=f"gt-ingest-{uuid.uuid4().hex[:8]}", health_port=None,
                database=DatabaseSettings(url=db_url),
            ),
            stop=stop,
        )
    )  # fmt: skip
    opcua_port = free_port()
    sim = Simulator(
        scenario, opcua_port=opcua_port, mqtt_url=broker_url, ground_truth_path=truth_path,
        speed=speed,
    )  # fmt: skip
    edge_task: asyncio.Task[None] | None = None
    try:
        await sim.start()
        config = edge_config_for(
            scenario, enterprise=ENTERPRISE, edge_id=EDGE_ID,
            opcua_endpoint=f"opc.tcp://127.0.0.1:{opcua_port}/zhizao/sim/",
            device_broker_url=broker_url, uplink_url=broker_url, uplink_protocol="5",
            spool_path=folder / "spool.db",
        )  # fmt: skip
        edge = EdgeRuntime(_publishing(config))
        edge_task = asyncio.create_task(edge.run(edge_stop))
        opcua = [d.code for d in scenario.devices if d.type is not DeviceType.MQTT]

        async def machines_seen() -> bool:
            if edge_task is not None and edge_task.done():
                edge_task.result()  # the edge failed: raise its error
            seen = await _scalar(
                db_url,
                "SELECT count(DISTINCT d.code) FROM state_change s"
                " JOIN device d ON d.id = s.device_id WHERE d.code = ANY(%s)",
                (opcua,),
            )
            mqtt = all(c.health.connected for c in edge.collectors.values())
            return int(seen) == len(opcua) and mqtt

        await _wait_for("the edge to report every machine's first state", machines_seen, READY_S)
        await asyncio.sleep(1.0)  # the MQTT collector's subscription, just after connecting
        await asyncio.wait_for(sim.run(), timeout=scenario.duration / speed * 5 + READY_S)

        last, since = -1, time.monotonic()

        async def drained() -> bool:
            nonlocal last, since
            if edge.spool.stats.depth_points > 0:
                since = time.monotonic()
                return False
            count = await _facts(db_url)
            if count != last:
                last, since = count, time.monotonic()
            return time.monotonic() - since >= QUIET_S

        await _wait_for("the edge's spool to be stored", drained, DRAIN_S, every=0.5)
    finally:
        edge_stop.set()
        stop.set()
        if edge_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(edge_task, timeout=30)
        await sim.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(ingest, timeout=30)
    return parse_truth(read_ground_truth(truth_path))


# --- comparison -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    level: str
    code: str
    platform: Oee
    truth: Oee

    def deltas(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in ("availability", "performance", "quality", "oee"):
            got, want = getattr(self.platform, name), getattr(self.truth, name)
            out[name] = None if got is None or want is None else got - want
        return out

    def problems(self) -> list[str]:
        found = []
        for name, delta in self.deltas().items():
            got, want = getattr(self.platform, name), getattr(self.truth, name)
            if (got is None) != (want is None):
                found.append(f"{self.code} {name}: platform {got} vs truth {want}")
            elif delta is not None and abs(delta) > TOLERANCE:
                found.append(
                    f"{self.code} {name}: platform {got:.4%} vs truth {want:.4%}"
                    f" ({delta * 100:+.2f} pp)"
                )
        return found


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:6.2f}"


def table(rows: list[Row]) -> str:
    """Platform vs truth per device and line, in percent; Δ in percentage points."""
    head = (
        f"{'':6} {'code':8} {'A plat':>7} {'A true':>7} {'P plat':>7} {'P true':>7}"
        f" {'Q plat':>7} {'Q true':>7} {'OEE plat':>8} {'OEE true':>8} {'max Δ pp':>8}"
        f" {'offline s':>9}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        p, t = row.platform, row.truth
        worst = max((abs(d) for d in row.deltas().values() if d is not None), default=0.0)
        lines.append(
            f"{row.level:6} {row.code:8} {_pct(p.availability):>7} {_pct(t.availability):>7}"
            f" {_pct(p.performance):>7} {_pct(t.performance):>7} {_pct(p.quality):>7}"
            f" {_pct(t.quality):>7} {_pct(p.oee):>8} {_pct(t.oee):>8} {worst * 100:8.4f}"
            f" {p.components.offline_s:9.1f}"
        )
    return "\n".join(lines)


async def compare(conn: Conn, scenario: Scenario, truth: Truth) -> list[Row]:
    """Platform vs truth for every simulated production device and every line."""
    start = scenario.start
    end = start + timedelta(seconds=scenario.duration)
    cur = await conn.execute(
        "SELECT d.code, d.ideal_cycle_time_s, l.code FROM device d"
        " JOIN enterprise e ON e.id = d.enterprise_id LEFT JOIN line l ON l.id = d.line_id"
        " WHERE e.credit_code = %s AND d.is_production_equipment",
        (ENTERPRISE,),
    )
    registry = {
        str(code): (None if ict is None else float(ict), line)
        for code, ict, line in await cur.fetchall()
    }
    calendar = calendar_for(scenario, ENTERPRISE)[0]
    schedule = Schedule(scheduled_intervals(calendar, ZONE, truth.start_ms, truth.end_ms))
    rows: list[Row] = []
    lines: dict[str, list[OeeComponents]] = {}
    for device in scenario.devices:
        if device.code not in registry:
            continue
        ict, line = registry[device.code]
        components = truth_components(truth, device.code, schedule, ict)
        if line is not None:
            lines.setdefault(str(line), []).append(components)
        report = await oee_for_interval(
            conn, OeeScope(Level.DEVICE, device.code, enterprise=ENTERPRISE), start, end
        )
        assert report.source == "rollup_device_hour"  # the rollups are what is checked
        rows.append(Row("device", device.code, report.result, compute(components)))
    for line, parts in sorted(lines.items()):
        report = await oee_for_interval(
            conn, OeeScope(Level.LINE, line, enterprise=ENTERPRISE), start, end
        )
        assert report.source == "rollup_device_hour"
        rows.append(Row("line", line, report.result, compute(summed(parts))))
    return rows


async def expected_rates(conn: Conn, day: date, sent: set[str]) -> tuple[int, int, int]:
    """(networked, in service, NC) production devices of the enterprise on ``day``,
    from the ledger as stored and the devices that sent data."""
    cur = await conn.execute(
        "SELECT d.code, d.is_nc FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
        " WHERE e.credit_code = %s AND d.is_production_equipment"
        " AND (d.commissioned_on IS NULL OR d.commissioned_on <= %s)"
        " AND (d.decommissioned_on IS NULL OR d.decommissioned_on > %s)",
        (ENTERPRISE, day, day),
    )
    in_service = {str(code): bool(nc) for code, nc in await cur.fetchall()}
    return len(sent & in_service.keys()), len(in_service), sum(in_service.values())


async def test_kpis_agree_with_the_simulators_ground_truth(
    db_url: str, own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    scenario = load_scenario(bundled("groundtruth"))
    settings = DatabaseSettings(url=db_url)
    await import_ledger(settings, sample_ledger())
    conn = await connect(db_url)
    async with conn:
        async with conn.transaction():
            await store_calendars(conn, calendar_for(scenario, ENTERPRISE))
            # The ledger has no standard cycle time for the CMM; an engineer enters the
            # one the scenario runs at, so its performance is checked too.
            await conn.execute(
                "UPDATE device SET ideal_cycle_time_s = 600 WHERE code = 'CMM-01'"
                " AND ideal_cycle_time_s IS NULL"
            )
        cur = await conn.execute(
            "SELECT d.code, d.ideal_cycle_time_s FROM device d"
            " WHERE d.code = ANY(%s) AND d.is_production_equipment",
            ([d.code for d in scenario.devices],),
        )
        ledger_ict = {str(c): float(i) for c, i in await cur.fetchall()}
    # The scenario runs at the registry's ideal cycle times: P means the same on both sides.
    assert {d.code: d.ideal_cycle_s for d in scenario.devices if d.code in ledger_ict} == (
        ledger_ict
    )

    truth = await run_factory(scenario, db_url, own_mosquitto.url, tmp_path)
    end = scenario.start + timedelta(seconds=scenario.duration)
    assert truth.end_ms == int(end.timestamp() * 1000), "the simulator did not finish the run"

    conn = await connect(db_url)
    async with conn:
        await run_rollups(conn, until=end)
        rows = await compare(conn, scenario, truth)
        print(f"\nground truth check, scenario {scenario.name} at {SPEED:g}x (%):")
        print(table(rows))

        # Networking and NC rates of the scenario day: exact.
        day = scenario.start.astimezone(ZONE).date()
        cur = await conn.execute(
            "SELECT DISTINCT d.code FROM device d JOIN state_change s ON s.device_id = d.id"
            " WHERE s.quality = 0"
        )
        sent = {str(r[0]) for r in await cur.fetchall()}
        assert sent == {d.code for d in scenario.devices}, "every simulated device sent states"
        networked, in_service, nc = await expected_rates(conn, day, sent)
        figures = {
            (f.kind, f.method): f
            for f in [
                *await networking_rates(conn, day, day, GroupBy.ENTERPRISE),
                *await nc_rates(conn, day, GroupBy.ENTERPRISE),
            ]
            if f.group == ENTERPRISE
        }
    net = figures[Kind.NETWORKING, Method.RATIO_OF_SUMS]
    ncf = figures[Kind.NC, Method.RATIO_OF_SUMS]
    print(f"设备联网率 networking {day}: {net.numerator:g}/{net.denominator:g}"
          f" (expected {networked}/{in_service}); 数控化率 NC {ncf.numerator:g}/"
          f"{ncf.denominator:g} (expected {nc}/{in_service})")  # fmt: skip
    assert (net.numerator, net.denominator) == (networked, in_service)
    assert net.rate == networked / in_service
    assert (ncf.numerator, ncf.denominator) == (nc, in_service)
    assert ncf.rate == nc / in_service

    problems = [p for row in rows for p in row.problems()]
    assert not problems, "platform and ground truth disagree:\n" + "\n".join(problems)
    assert {row.code for row in rows if row.level == "line"} == {"L1", "L2"}
