"""The OPC UA collector against real asyncua servers (the factory simulator)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable

from asyncua import ua

from edge.opcua.check import check_source
from edge.simulator.timeline import StateInterval
from edge.sink import MemorySink
from tests.fix_opcua import SIM_NS, START, MakeSimulator, running, scenario, source_config
from zhizao.wire import COUNTER_EVENT, PointKind, Quality, StateClass

CNC = {
    "code": "CNC-101",
    "type": "cnc",
    "ideal_cycle_s": 60,
    "reject_every": 4,
    "episodes": [
        {"at": "1h", "duration": "30m", "state": "SETUP"},
        {"at": "2h", "duration": "20m", "state": "UNPLANNED_STOP"},
        {"at": "3h", "duration": "15m", "state": "IDLE"},
        {"at": "4h", "duration": "30m", "state": "PLANNED_STOP"},
    ],
}
ROBOT = {
    "code": "RB-101",
    "type": "robot",
    "episodes": [
        {"at": "1h", "duration": "20m", "state": "UNPLANNED_STOP"},
        {"at": "3h", "duration": "30m", "state": "SETUP"},
    ],
}
CNC_NODES = [
    {"preset": "machinery", "device": "CNC-101", "root": "Machines/CNC-101"},
    {
        "device": "CNC-101",
        "kind": "count",
        "name": "good",
        "browse_path": "Machines/CNC-101/GoodPartCount",
    },
    {
        "device": "CNC-101",
        "kind": "count",
        "name": "reject",
        "browse_path": "Machines/CNC-101/RejectPartCount",
    },
    {
        "device": "CNC-101",
        "kind": "metric",
        "name": "spindle_speed",
        "unit": "rpm",
        "browse_path": "Machines/CNC-101/SpindleSpeed",
    },
]


async def until(sink: MemorySink, done: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for points until ``done()``; fails with what arrived if it never is."""
    try:
        async with asyncio.timeout(within):
            while not done():
                await sink.wait_for(len(sink.points) + 1, within=within)
    except TimeoutError:
        summary: Counter[object] = Counter((p.device, p.kind.value, p.name) for p in sink.points)
        for point in sink.points:
            if point.kind is PointKind.COUNT:
                summary[f"{point.device} {point.name} total"] += int(point.value)
        raise AssertionError(f"condition not met; received {dict(summary)}") from None


def skipped(sink: MemorySink, device: str) -> Counter[str]:
    """Parts made while the edge could not see them: what each re-baseline jumped over
    (the counter events record the totals before and after)."""
    total: Counter[str] = Counter()
    for point in sink.points:
        if point.device == device and point.kind is PointKind.EVENT:
            event, _, counter = point.name.partition(".")
            if event == COUNTER_EVENT:
                document = json.loads(str(point.value))
                total[counter] += document["new_total"] - document["old_total"]
    return total


def transitions(intervals: list[StateInterval]) -> list[str]:
    return [interval.state.value for interval in intervals]


def states(sink: MemorySink, device: str) -> list[str]:
    return [str(p.value) for p in sink.points if p.device == device and p.kind is PointKind.STATE]


def counts(sink: MemorySink, device: str) -> Counter[str]:
    total: Counter[str] = Counter()
    for point in sink.points:
        if point.device == device and point.kind is PointKind.COUNT:
            total[point.name] += int(point.value)
    return total


async def test_presets_and_counters_match_the_ground_truth(simulator: MakeSimulator) -> None:
    sim = await simulator(scenario([CNC, ROBOT], duration="6h"), speed=7200)
    nodes = [*CNC_NODES, {"preset": "robotics", "device": "RB-101", "root": "Robots/RB-101"}]
    async with running(source_config(sim.server.endpoint, nodes)) as run:
        # The initial values (states, counter baselines) arrive before the clock runs.
        await until(
            run.sink, lambda: bool(states(run.sink, "CNC-101") and states(run.sink, "RB-101"))
        )
        await sim.run()
        truth = sim.timelines["CNC-101"]
        robot = sim.timelines["RB-101"]
        # Everything the simulator wrote arrives within a few publishing intervals.
        await until(
            run.sink,
            lambda: (
                counts(run.sink, "CNC-101").total() == len(truth.parts)
                and len(states(run.sink, "RB-101")) == len(robot.intervals)
                and len(states(run.sink, "CNC-101")) == len(truth.intervals)
            ),
        )
    assert states(run.sink, "CNC-101") == transitions(truth.intervals)
    assert states(run.sink, "RB-101") == transitions(sim.timelines["RB-101"].intervals)
    made = Counter("reject" if part.reject else "good" for part in truth.parts)
    assert counts(run.sink, "CNC-101") == made
    assert run.sink.connectivity("CNC-101")[0] == "online"
    assert any(p.name == "spindle_speed" and p.value == 8000.0 for p in run.sink.points)
    assert run.collector.node_errors == {}


async def test_a_bad_node_is_reported_and_the_others_keep_flowing(
    simulator: MakeSimulator,
) -> None:
    sim = await simulator(scenario([CNC], duration="2h"), speed=7200)
    nodes = [
        *CNC_NODES,
        {
            "device": "CNC-101",
            "kind": "metric",
            "name": "no_such_path",
            "browse_path": "Machines/CNC-101/NoSuchVariable",
        },
        {
            "device": "CNC-101",
            "kind": "metric",
            "name": "no_such_node",
            "node": f"nsu={SIM_NS};s=CNC-101.Missing",
        },
        {
            "device": "CNC-101",
            "kind": "metric",
            "name": "no_such_namespace",
            "node": "nsu=urn:nobody:here;s=CNC-101.SpindleSpeed",
        },
    ]
    async with running(source_config(sim.server.endpoint, nodes)) as run:
        await until(run.sink, lambda: bool(states(run.sink, "CNC-101")))
        await sim.run()
        truth = sim.timelines["CNC-101"]
        await until(run.sink, lambda: counts(run.sink, "CNC-101").total() == len(truth.parts))
    errors = run.collector.node_errors
    assert set(errors) == {"nodes.4", "nodes.5", "nodes.6"}
    assert "NoSuchVariable" in errors["nodes.4"]
    assert "BadNodeIdUnknown" in errors["nodes.5"]
    assert "urn:nobody:here" in errors["nodes.6"]
    assert run.collector.health.errors >= 3
    assert states(run.sink, "CNC-101") == transitions(truth.intervals)


async def test_reconnects_after_a_server_restart_and_reports_the_gap(
    simulator: MakeSimulator,
) -> None:
    sim = await simulator(scenario([CNC, ROBOT], duration="6h"), speed=1800)
    nodes = [*CNC_NODES, {"preset": "robotics", "device": "RB-101", "root": "Robots/RB-101"}]
    async with running(source_config(sim.server.endpoint, nodes)) as run:
        await until(
            run.sink, lambda: bool(states(run.sink, "CNC-101") and states(run.sink, "RB-101"))
        )
        clock = asyncio.create_task(sim.run())
        await sim.wait_until(30 * 60)
        await sim.server.stop()
        await until(run.sink, lambda: run.sink.connectivity("RB-101") == ["online", "offline"])
        assert run.sink.connectivity("CNC-101") == ["online", "offline"]
        await sim.server.start()
        await until(run.sink, lambda: run.sink.connectivity("CNC-101")[-1:] == ["online"])
        await clock
        truth = sim.timelines["CNC-101"]
        await until(
            run.sink,
            lambda: (
                (counts(run.sink, "CNC-101") + skipped(run.sink, "CNC-101")).total()
                == len(truth.parts)
                and states(run.sink, "CNC-101")[-1:] == [truth.intervals[-1].state.value]
            ),
        )
    assert run.sink.connectivity("RB-101") == ["online", "offline", "online"]
    assert run.collector.sessions == 2
    # After the reconnect each counter re-baselined: the parts made while the server was
    # down are not counted (edge.counters), and nothing else is missing or added.
    made = Counter("reject" if part.reject else "good" for part in truth.parts)
    assert skipped(run.sink, "CNC-101")["good"] > 0
    assert counts(run.sink, "CNC-101") + skipped(run.sink, "CNC-101") == made
    # After the gap the current state is reported again, even if it did not change.
    assert states(run.sink, "CNC-101").count("RUNNING") >= 2


async def test_browse_paths_are_resolved_again_after_a_restart_renumbered_the_nodes(
    simulator: MakeSimulator,
) -> None:
    sim = await simulator(scenario([CNC], duration="4h"), speed=1800)
    nodes = [
        *CNC_NODES,
        # Addressed by NodeId: after renumbering this one is gone, and says so.
        {
            "device": "CNC-101",
            "kind": "metric",
            "name": "coolant",
            "node": f"nsu={SIM_NS};s=CNC-101.CoolantTemperature",
        },
    ]
    async with running(source_config(sim.server.endpoint, nodes)) as run:
        await until(run.sink, lambda: bool(states(run.sink, "CNC-101")))
        clock = asyncio.create_task(sim.run())
        await sim.wait_until(30 * 60)
        await sim.server.restart(renumber=True)
        await until(
            run.sink, lambda: run.sink.connectivity("CNC-101") == ["online", "offline", "online"]
        )
        await clock
        truth = sim.timelines["CNC-101"]
        await until(
            run.sink,
            lambda: (
                (counts(run.sink, "CNC-101") + skipped(run.sink, "CNC-101")).total()
                == len(truth.parts)
            ),
        )
    assert "nodes.4" in run.collector.node_errors
    assert "BadNodeIdUnknown" in run.collector.node_errors["nodes.4"]
    assert states(run.sink, "CNC-101")[-1] == truth.intervals[-1].state.value
    assert not any(
        label.startswith(("nodes.0", "nodes.1", "nodes.2")) for label in run.collector.node_errors
    )


async def test_counter_wrap_and_reset_are_counted_exactly(simulator: MakeSimulator) -> None:
    wrapping = {
        **CNC,
        "counter_bits": 16,
        "counter_start": 65_500,
        "reject_every": None,
        "episodes": [],
    }
    sim = await simulator(
        scenario(
            [wrapping],
            duration="4h",
            faults=[{"at": "3h", "kind": "counter_reset", "target": "CNC-101"}],
        ),
        speed=7200,
    )
    nodes = [CNC_NODES[0], {**CNC_NODES[1], "counter_bits": 16}]
    async with running(source_config(sim.server.endpoint, nodes)) as run:
        # The first state comes with the counter's first value: the baseline.
        await until(run.sink, lambda: bool(states(run.sink, "CNC-101")))
        await sim.run()
        truth = sim.timelines["CNC-101"]
        await until(run.sink, lambda: counts(run.sink, "CNC-101")["good"] == len(truth.parts))
    assert all(int(p.value) >= 0 for p in run.sink.points if p.kind is PointKind.COUNT)


async def test_check_source_reads_every_mapped_variable(simulator: MakeSimulator) -> None:
    sim = await simulator(scenario([CNC, ROBOT], duration="1h"))
    nodes = [
        *CNC_NODES,
        {"preset": "robotics", "device": "RB-101", "root": "Robots/RB-101"},
        {
            "device": "CNC-101",
            "kind": "metric",
            "name": "missing",
            "browse_path": "Machines/CNC-101/Nope",
        },
    ]
    checks = await check_source(source_config(sim.server.endpoint, nodes))
    by_label = {check.label: check for check in checks}
    assert by_label["nodes.0.item_state"].value == "Executing"
    assert by_label["nodes.0.operation_mode"].value == "Processing"
    assert (
        by_label["nodes.0.item_state"].node_id
        == f"nsu={SIM_NS};s=CNC-101.MachineryItemState.CurrentState"
    )
    assert by_label["nodes.1"].value == 0
    assert by_label["nodes.4.operational_mode"].value == 3
    assert by_label["nodes.4.emergency_stop"].value is False
    assert all(c.quality is Quality.GOOD for c in checks if c.error is None)
    assert "BadNoMatch" in str(by_label["nodes.5"].error)
    assert by_label["nodes.5"].value is None


async def test_a_silent_subscription_is_detected_by_the_heartbeat_and_rebuilt(
    simulator: MakeSimulator,
) -> None:
    sim = await simulator(scenario([CNC], duration="8h"), speed=600)
    config = source_config(sim.server.endpoint, CNC_NODES, heartbeat_timeout_s=2)
    async with running(config) as run:
        await until(run.sink, lambda: bool(states(run.sink, "CNC-101")))
        clock = asyncio.create_task(sim.run())
        assert await sim.server.silence_subscriptions() == 1
        await until(
            run.sink, lambda: run.sink.connectivity("CNC-101") == ["online", "offline", "online"]
        )
        before = counts(run.sink, "CNC-101").total()
        # Data flows again on the rebuilt subscription.
        await until(run.sink, lambda: counts(run.sink, "CNC-101").total() > before)
        clock.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock
    assert run.collector.sessions == 2
    assert "silent" in str(run.collector.health.last_error)


async def test_the_collector_stops_when_cancelled_during_a_steady_stream(
    simulator: MakeSimulator,
) -> None:
    sim = await simulator(scenario([CNC], duration="8h"))
    node = {
        "device": "CNC-101",
        "kind": "metric",
        "name": "speed",
        "browse_path": "Machines/CNC-101/SpindleSpeed",
    }
    stop = asyncio.Event()

    async def write_forever() -> None:
        value = 0.0
        while not stop.is_set():
            value += 1
            await sim.server.write("CNC-101.SpindleSpeed", value, ua.VariantType.Double, START)
            await asyncio.sleep(0)

    writer = asyncio.create_task(write_forever())
    try:
        async with running(source_config(sim.server.endpoint, [node])) as run:
            await run.sink.wait_for(500)
            run.task.cancel()
            # A cancellation that coincides with a queued value must not be lost.
            async with asyncio.timeout(30):
                with contextlib.suppress(asyncio.CancelledError):
                    await run.task
            assert run.task.cancelled()
    finally:
        stop.set()
        await writer


async def test_polled_nodes_and_deadbands(simulator: MakeSimulator) -> None:
    sim = await simulator(scenario([CNC], duration="2h"))
    nodes = [
        # A PLC status word read by polling, mapped by hand.
        {
            "device": "CNC-101",
            "kind": "state",
            "name": "plc",
            "mode": "poll",
            "poll_interval_ms": 50,
            "node": f"nsu={SIM_NS};s=CNC-101.PlcStatus",
            "state_map": {
                0: "PLANNED_STOP",
                1: "RUNNING",
                2: "IDLE",
                3: "SETUP",
                4: "UNPLANNED_STOP",
            },
        },
        {
            "device": "CNC-101",
            "kind": "metric",
            "name": "speed",
            "browse_path": "Machines/CNC-101/SpindleSpeed",
            "deadband": {"type": "absolute", "value": 100},
        },
    ]
    async with running(source_config(sim.server.endpoint, nodes)) as run:
        await until(run.sink, lambda: len(states(run.sink, "CNC-101")) == 1)
        for speed in (8000.0, 8050.0, 8099.0, 8200.0, 8250.0, 8400.0):
            await sim.server.write("CNC-101.SpindleSpeed", speed, ua.VariantType.Double, START)
        await until(
            run.sink, lambda: any(p.name == "speed" and p.value == 8400.0 for p in run.sink.points)
        )
        await sim.server.set_state(sim.scenario.devices[0], StateClass.SETUP, START)
        await until(run.sink, lambda: states(run.sink, "CNC-101")[-1:] == ["SETUP"])
    speeds = [p.value for p in run.sink.points if p.name == "speed"]
    # Changes of 100 rpm or less from the last reported value are not reported.
    assert speeds == [8000.0, 8200.0, 8400.0]
    # A poll reads the same value many times; only changes become points.
    assert states(run.sink, "CNC-101") == ["RUNNING", "SETUP"]
