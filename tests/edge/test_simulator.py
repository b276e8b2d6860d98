"""The factory simulator: scenarios, the ground truth, MQTT devices and fault injection."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from asyncua import Client
from asyncua.ua.object_ids import ObjectIds
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt.config import MqttSourceConfig
from edge.opcua.check import check_source
from edge.opcua.config import NodeMapping, OpcUaSourceConfig
from edge.simulator.edge_config import edge_config_for
from edge.simulator.mqtt_devices import GARBAGE, STATUS_CODES
from edge.simulator.scenario import SCENARIOS, bundled, load_scenario
from edge.simulator.timeline import build_timeline, read_ground_truth
from tests.fix_opcua import START, MakeSimulator, running, scenario, source_config
from zhizao.errors import ConfigError
from zhizao.wire import PointKind, StateClass

START_MS = int(START.timestamp() * 1000)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_scenarios_validate(path: Path) -> None:
    loaded = load_scenario(path)
    assert build_timeline(loaded)


def test_scenario_errors_name_file_key_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nstart: 2026-03-02T08:00:00+08:00\nduration: 1h\n"
        "devices:\n"
        "  - {code: CNC-1, type: cnc, episodes: [{at: 10x, duration: 5m, state: SETUP}]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.key == "devices.0.episodes.0.at"
    assert "not a duration" in caught.value.problem


def test_timeline_covers_the_scenario_without_gaps_and_counts_exactly() -> None:
    cnc = {
        "code": "CNC-1",
        "type": "cnc",
        "ideal_cycle_s": 60,
        "reject_every": 10,
        "micro_stops": {"every": "50m", "duration": "2m"},
        "episodes": [
            {"at": "1h", "duration": "30m", "state": "UNPLANNED_STOP"},
            {"at": "2h", "duration": "1h", "speed": 0.5},
        ],
    }
    loaded = scenario([cnc], duration="4h", shifts=[{"start": "30m", "end": "4h"}])
    timeline = build_timeline(loaded)["CNC-1"]
    intervals = timeline.intervals
    assert intervals[0].start == START_MS
    assert intervals[-1].end == START_MS + 4 * 3_600_000
    assert all(a.end == b.start for a, b in itertools.pairwise(intervals))
    assert intervals[0].state is StateClass.PLANNED_STOP
    assert intervals[0].reason == "no shift"
    micro = [i for i in intervals if i.reason == "micro stop"]
    assert micro
    assert all(i.end - i.start == 120_000 for i in micro)
    running_ms = sum(i.end - i.start for i in intervals if i.state is StateClass.RUNNING)
    # 172 running minutes, 58 of them at half speed (the hour from 2h minus the micro
    # stop at 2h30m): 172 - 58 / 2 parts.
    assert running_ms == 172 * 60_000
    assert len(timeline.parts) == 172 - 29
    for part in timeline.parts:
        assert timeline.state_at(part.ts - 1).state is StateClass.RUNNING
    assert sum(p.reject for p in timeline.parts) == len(timeline.parts) // 10


async def test_ground_truth_is_written_up_to_the_time_reached(
    simulator: MakeSimulator, tmp_path: Path
) -> None:
    path = tmp_path / "truth.jsonl"
    cnc = {"code": "CNC-1", "type": "cnc", "ideal_cycle_s": 60}
    sim = await simulator(scenario([cnc], duration="8h"), speed=3600, ground_truth_path=path)
    task = asyncio.create_task(sim.run())
    await sim.wait_until(3600)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    records = read_ground_truth(path)
    header = records[0]
    assert header["type"] == "scenario"
    assert header["start"] == START_MS
    assert START_MS + 3_600_000 <= header["end"] < START_MS + 8 * 3_600_000
    (summary,) = [r for r in records if r["type"] == "summary"]
    parts = [r for r in records if r["type"] == "part"]
    assert summary["good"] == len(parts) == sum(1 for p in parts if p["ts"] <= header["end"])
    states = [r for r in records if r["type"] == "state"]
    assert sum(r["end"] - r["start"] for r in states) == header["end"] - START_MS
    assert summary["seconds"]["RUNNING"] * 1000 == header["end"] - START_MS


class Subscriber:
    """Collects what arrives on a topic filter of the shared broker."""

    def __init__(self, url: str, topic: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        loop = asyncio.get_running_loop()
        # paho calls back on its own thread; hand everything to the event loop.
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        subscribed = loop.create_future()

        def on_connect(client: mqtt.Client, *_: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(*_: Any) -> None:
            loop.call_soon_threadsafe(lambda: subscribed.done() or subscribed.set_result(None))

        def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self.messages.put_nowait, (message.topic, message.payload))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.subscribed = subscribed

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_mqtt_devices_publish_json_with_simulated_time_and_garbage(
    simulator: MakeSimulator, mqtt_url: str
) -> None:
    line = f"T{uuid.uuid4().hex[:8]}"  # a line of our own on the shared broker
    device = {"code": "CMM-01", "type": "mqtt", "line": line, "ideal_cycle_s": 300}
    loaded = scenario(
        [device],
        duration="2h",
        metric_period="10m",
        network_drops=[{"at": "30m", "duration": "30m", "target": "CMM-01"}],
        faults=[{"at": "1h30m", "kind": "garbage_payload", "target": "CMM-01", "count": 4}],
    )
    subscriber = Subscriber(mqtt_url, f"plant/{line}/+/telemetry")
    try:
        await asyncio.wait_for(subscriber.subscribed, 10)
        sim = await simulator(loaded, mqtt_url=mqtt_url, speed=3600, opcua_port=None)
        await sim.run()
        assert sim.mqtt is not None
        expected = sim.mqtt.published
        received: list[tuple[str, bytes]] = []
        async with asyncio.timeout(10):
            while len(received) < expected:
                received.append(await subscriber.messages.get())
    finally:
        subscriber.stop()
    assert {topic for topic, _ in received} == {f"plant/{line}/CMM-01/telemetry"}
    payloads = [payload for _, payload in received]
    assert sum(payload in GARBAGE for payload in payloads) == 4
    documents = [json.loads(p) for p in payloads if p not in GARBAGE]
    assert set(documents[0]) == {"ts", "status", "good_total", "reject_total", "temperature"}
    times = [d["ts"] for d in documents]
    assert times == sorted(times)
    # Nothing while the device was off the network (30 to 60 minutes in).
    assert not [t for t in times if START_MS + 1_800_000 <= t < START_MS + 3_600_000]
    assert documents[-1]["status"] == STATUS_CODES[StateClass.RUNNING]
    assert documents[-1]["good_total"] == 24  # two hours at one part per five minutes


async def test_scenario_faults_restart_the_server_and_remove_a_node(
    simulator: MakeSimulator,
) -> None:
    cnc = {"code": "CNC-101", "type": "cnc", "ideal_cycle_s": 60}
    loaded = scenario(
        [cnc],
        duration="4h",
        faults=[
            {"at": "1h", "kind": "server_restart", "renumber": True, "down": "10m"},
            {"at": "2h", "kind": "node_removed", "target": "CNC-101.SpindleTemperature"},
        ],
    )
    sim = await simulator(loaded, speed=1800)
    nodes = [
        {"preset": "machinery", "device": "CNC-101", "root": "Machines/CNC-101"},
        {
            "device": "CNC-101",
            "kind": "metric",
            "name": "temperature",
            "browse_path": "Machines/CNC-101/SpindleTemperature",
        },
    ]
    config = source_config(sim.server.endpoint, nodes)
    async with running(config) as run:
        await run.sink.wait_for(1)
        await sim.run()
        await run.sink.wait_for(3, within=20)
        async with asyncio.timeout(20):
            while run.sink.connectivity("CNC-101") != ["online", "offline", "online"]:
                await run.sink.wait_for(len(run.sink.points) + 1)
    assert sim.restarts == 1
    assert sim.server.generation == 1
    checks = {c.label: c for c in await check_source(config)}
    assert checks["nodes.0.item_state"].error is None
    assert "SpindleTemperature" in str(checks["nodes.1"].error)


def test_the_simulators_edge_config_carries_every_counters_ideal_cycle_time(
    tmp_path: Path,
) -> None:
    """The demo's edge guards its counters: each gets its device's cycle time."""
    factory = load_scenario(bundled("factory"))
    config = edge_config_for(
        factory, enterprise="91330206MA2GR7K17L", edge_id="demo-edge",
        opcua_endpoint="opc.tcp://127.0.0.1:4840/zhizao/sim/",
        device_broker_url="mqtt://127.0.0.1:1883", uplink_url="mqtt://127.0.0.1:1883",
        spool_path=tmp_path / "spool.db",
    )  # fmt: skip
    cycle = {d.code: d.ideal_cycle_s for d in factory.devices}
    opcua = next(s for s in config.sources if isinstance(s, OpcUaSourceConfig))
    counters = [n for n in opcua.nodes if isinstance(n, NodeMapping) and n.kind is PointKind.COUNT]
    assert counters
    assert {(n.device, n.ideal_cycle_s) for n in counters} == {
        (n.device, cycle[n.device]) for n in counters
    }
    mqtt = next(s for s in config.sources if isinstance(s, MqttSourceConfig))
    assert mqtt.ideal_cycle_s == {d: cycle[d] for d in mqtt.devices}


async def _start_time(endpoint: str) -> object:
    async with Client(endpoint) as client:
        return await client.get_node(f"i={ObjectIds.Server_ServerStatus_StartTime}").read_value()


async def test_a_network_drop_keeps_the_servers_start_time(simulator: MakeSimulator) -> None:
    """Clients tell an outage from a restart by ServerStatus/StartTime (the edge keeps its
    counters' baselines across an outage): a simulated network drop is no restart."""
    cnc = {"code": "CNC-101", "type": "cnc", "ideal_cycle_s": 60}
    loaded = scenario(
        [cnc], duration="2h", network_drops=[{"at": "1h", "duration": "10m", "target": "opcua"}]
    )
    sim = await simulator(loaded, speed=3600)
    endpoint = sim.server.endpoint
    before = await _start_time(endpoint)
    run = asyncio.create_task(sim.run())
    async with asyncio.timeout(30):
        while sim.restarts < 1 or not sim.server.running:  # noqa: ASYNC110 - polls the simulator
            await asyncio.sleep(0.05)
        after_drop = await _start_time(endpoint)
        await run
    assert sim.restarts == 1
    assert after_drop == before
