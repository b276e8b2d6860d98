"""Run a scenario: replay the timeline against a simulated clock, inject faults.

The simulated clock starts at the scenario's ``start`` and runs ``speed`` times faster
than the wall clock, so an eight-hour shift can take seconds in a test. Every value
the simulator publishes carries its simulated timestamp (OPC UA SourceTimestamp, the
``ts`` of MQTT JSON), and the ground truth is in simulated time too.

Each tick replays what happened since the previous tick (state changes, parts) and,
every ``metric_period``, refreshes metrics and MQTT telemetry. Faults and network
drops happen at their simulated time; restarting the OPC UA server runs in the
background so the machines keep working (and counting) while it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua

from edge.simulator import mqtt_devices
from edge.simulator.opcua_server import Security, SimServer
from edge.simulator.scenario import Device, DeviceType, Fault, FaultKind, Scenario
from edge.simulator.timeline import DeviceTimeline, build_timeline, write_ground_truth
from zhizao.wire import StateClass

log = logging.getLogger(__name__)

DEFAULT_TICK_S = 0.05

Action = Callable[[int], Awaitable[None]]


class SimClock:
    """Simulated epoch ms: ``start_ms`` when started, then ``speed`` times wall time."""

    def __init__(
        self, start_ms: int, speed: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self._monotonic = monotonic
        self._origin = monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((self._monotonic() - self._origin) * self.speed * 1000)

    def wall_seconds_until(self, sim_ms: int) -> float:
        return max(0.0, (sim_ms - self.now_ms()) / 1000 / self.speed)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class _DeviceRun:
    device: Device
    timeline: DeviceTimeline
    state_index: int = 0
    part_index: int = 0
    state: StateClass | None = None
    good: int = 0  # the counters as the machine shows them (wrap, reset)
    reject: int = 0
    good_made: int = 0
    reject_made: int = 0
    silent_until: int = 0  # MQTT device dropped off the network until then
    history: list[tuple[int, StateClass]] = field(default_factory=list)


class Simulator:
    """A running scenario. ``await start()``, ``await run()``, ``await stop()``."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        opcua_port: int | None = None,
        mqtt_url: str | None = None,
        ground_truth_path: Path | None = None,
        speed: float | None = None,
        host: str = "127.0.0.1",
        security: Security | None = None,
        tick_s: float = DEFAULT_TICK_S,
    ) -> None:
        self.scenario = scenario
        self.speed = speed or scenario.speed
        self.ground_truth_path = ground_truth_path
        self.tick_s = tick_s
        self.timelines = build_timeline(scenario)
        self.runs = {
            code: _DeviceRun(
                timeline.device,
                timeline,
                good=timeline.device.counter_start,
                reject=timeline.device.counter_start,
            )
            for code, timeline in self.timelines.items()
        }
        opcua_devices = [d for d in scenario.devices if d.type is not DeviceType.MQTT]
        self.server: SimServer | None = None
        if opcua_devices:
            if opcua_port is None:
                raise ValueError("the scenario has OPC UA devices: give an opcua_port")
            self.server = SimServer(opcua_devices, opcua_port, host=host, security=security)
        self.mqtt: mqtt_devices.MqttPublisher | None = None
        if any(d.type is DeviceType.MQTT for d in scenario.devices):
            if mqtt_url is None:
                raise ValueError("the scenario has MQTT devices: give an mqtt_url")
            self.mqtt = mqtt_devices.MqttPublisher(
                mqtt_url, client_id=f"zhizao-sim-{scenario.name}"
            )
        self.clock = SimClock(scenario.start_ms, self.speed)
        self.end_ms = scenario.start_ms + round(scenario.duration * 1000)
        self.reached_ms = scenario.start_ms
        self._tick = asyncio.Condition()
        self._background: set[asyncio.Task[None]] = set()
        self._actions = self._schedule()
        self.restarts = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self.server is not None:
            await self.server.start()
        if self.mqtt is not None:
            self.mqtt.start()
            if not await asyncio.to_thread(self.mqtt.wait_connected, 10.0):
                log.warning("simulator: MQTT broker not reachable yet; publishing when it is")
        # Devices show their state at the scenario's start until run() starts the clock,
        # so a client connected in between reads where the ground truth begins.
        await self._replay(self.scenario.start_ms)
        await self._metrics(self.scenario.start_ms)

    async def run(self) -> None:
        """Replay until the scenario ends; writes the ground truth (also when cancelled)."""
        self.clock = SimClock(self.scenario.start_ms, self.speed)
        try:
            last_metrics = -math.inf
            period_ms = self.scenario.metric_period * 1000
            while True:
                now = min(self.clock.now_ms(), self.end_ms)
                await self._replay(now)
                if now - last_metrics >= period_ms or now >= self.end_ms:
                    await self._metrics(now)
                    last_metrics = now
                self.reached_ms = now
                async with self._tick:
                    self._tick.notify_all()
                if now >= self.end_ms:
                    return
                await asyncio.sleep(self.tick_s)
        finally:
            self.write_ground_truth()

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.stop()
        if self.mqtt is not None:
            self.mqtt.stop()

    def write_ground_truth(self) -> None:
        if self.ground_truth_path is not None:
            write_ground_truth(
                self.ground_truth_path, self.scenario, self.timelines, self.reached_ms
            )

    async def wait_until(self, offset_s: float, within: float = 60.0) -> None:
        """Wait (wall time) until the simulation has passed ``offset_s`` after its start."""
        target = self.scenario.start_ms + round(offset_s * 1000)
        async with asyncio.timeout(within), self._tick:
            await self._tick.wait_for(lambda: self.reached_ms >= target)

    # -- replay -----------------------------------------------------------------------

    async def _replay(self, now: int) -> None:
        while self._actions and self._actions[0][0] <= now:
            at, action = self._actions.pop(0)
            await action(at)
        for run in self.runs.values():
            intervals = run.timeline.intervals
            while run.state_index < len(intervals) and intervals[run.state_index].start <= now:
                interval = intervals[run.state_index]
                run.state = interval.state
                run.history.append((interval.start, interval.state))
                await self._publish_state(run, interval.start)
                run.state_index += 1
            parts = run.timeline.parts
            last_part: int | None = None
            modulus = 1 << run.device.counter_bits
            while run.part_index < len(parts) and parts[run.part_index].ts <= now:
                part = parts[run.part_index]
                if part.reject:
                    run.reject = (run.reject + 1) % modulus
                    run.reject_made += 1
                else:
                    run.good = (run.good + 1) % modulus
                    run.good_made += 1
                last_part = part.ts
                run.part_index += 1
            if last_part is not None:
                await self._publish_counts(run, last_part)

    async def _publish_state(self, run: _DeviceRun, ts: int) -> None:
        assert run.state is not None  # noqa: S101 - set just before
        if run.device.type is DeviceType.MQTT:
            self._telemetry(run, ts)
        elif self.server is not None:
            await self.server.set_state(run.device, run.state, _dt(ts))

    async def _publish_counts(self, run: _DeviceRun, ts: int) -> None:
        if run.device.type is DeviceType.MQTT:
            self._telemetry(run, ts)
        elif self.server is not None:
            code = run.device.code
            await self.server.write(
                f"{code}.GoodPartCount", run.good, ua.VariantType.UInt32, _dt(ts)
            )
            await self.server.write(
                f"{code}.RejectPartCount", run.reject, ua.VariantType.UInt32, _dt(ts)
            )

    async def _metrics(self, now: int) -> None:
        for run in self.runs.values():
            device, state = run.device, run.state
            if state is None:
                continue
            running = state is StateClass.RUNNING
            wave = math.sin((now - self.scenario.start_ms) / 60_000)
            if device.type is DeviceType.MQTT:
                self._telemetry(run, now)
            elif device.type is DeviceType.CNC and self.server is not None:
                speed = device.spindle_rpm * run.timeline.speed_at(now) if running else 0.0
                code, at = device.code, _dt(now)
                double = ua.VariantType.Double
                await self.server.write(f"{code}.SpindleSpeed", speed, double, at)
                await self.server.write(
                    f"{code}.SpindleTemperature", (55.0 if running else 30.0) + 2 * wave, double, at
                )
                await self.server.write(f"{code}.CoolantTemperature", 22.0 + wave, double, at)

    def _telemetry(self, run: _DeviceRun, ts: int) -> None:
        if self.mqtt is None or run.state is None or ts < run.silent_until:
            return
        temperature = 40.0 + (10.0 if run.state is StateClass.RUNNING else 0.0)
        payload = mqtt_devices.telemetry(ts, run.state, run.good, run.reject, temperature)
        self.mqtt.publish(mqtt_devices.topic(run.device.line, run.device.code), payload)

    # -- faults and drops -------------------------------------------------------------

    def _schedule(self) -> list[tuple[int, Action]]:
        start = self.scenario.start_ms
        actions: list[tuple[int, Action]] = []
        for drop in self.scenario.network_drops:
            at = start + round(drop.at * 1000)
            until = at + round(drop.duration * 1000)
            if drop.target == "opcua":
                actions.append((at, self._server_down(until, renumber=False, network=True)))
            else:
                actions.append((at, self._silence(drop.target, until)))
        for fault in self.scenario.faults:
            actions.append((start + round(fault.at * 1000), self._fault(fault)))
        actions.sort(key=lambda item: item[0])
        return actions

    def _server_down(self, until: int, *, renumber: bool, network: bool = False) -> Action:
        """The OPC UA server goes away until ``until``: restarted, or (``network``)
        unreachable while its process runs on (it keeps its StartTime)."""

        async def act(at: int) -> None:
            if self.server is None:
                return
            server = self.server
            await server.stop()
            self.restarts += 1

            async def back() -> None:
                await asyncio.sleep(self.clock.wall_seconds_until(until))
                await server.start(renumber=renumber, same_process=network)

            task = asyncio.create_task(back())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        return act

    def _silence(self, code: str, until: int) -> Action:
        async def act(at: int) -> None:
            self.runs[code].silent_until = until

        return act

    def _fault(self, fault: Fault) -> Action:
        async def act(at: int) -> None:
            log.info("simulator: fault %s at %s", fault.kind.value, _dt(at).isoformat())
            if fault.kind is FaultKind.SERVER_RESTART:
                until = at + round(fault.down * 1000)
                await self._server_down(until, renumber=fault.renumber)(at)
            elif fault.kind is FaultKind.NODE_REMOVED and self.server is not None:
                await self.server.remove(str(fault.target))
            elif fault.kind is FaultKind.GARBAGE_PAYLOAD and self.mqtt is not None:
                run = self.runs[str(fault.target)]
                for index in range(fault.count):
                    payload = mqtt_devices.GARBAGE[index % len(mqtt_devices.GARBAGE)]
                    self.mqtt.publish(mqtt_devices.topic(run.device.line, run.device.code), payload)
                    self.mqtt.garbage_sent += 1
            elif fault.kind is FaultKind.COUNTER_RESET:
                run = self.runs[str(fault.target)]
                run.good = run.reject = 0
                await self._publish_counts(run, at)

        return act


async def run_simulator(
    scenario: Scenario,
    *,
    opcua_port: int | None = 4840,
    mqtt_url: str | None = None,
    ground_truth_path: Path | None = None,
    speed: float | None = None,
    host: str = "127.0.0.1",
    security: Security | None = None,
    started: asyncio.Event | None = None,
    linger_s: float = 0.0,
) -> Simulator:
    """Start the simulator, run the scenario to its end, stop; returns the finished run.

    ``started`` is set once the OPC UA server listens (for ``zhizao demo``, which starts
    the edge next). Cancel the task to end early: the ground truth is still written,
    up to the simulated time reached. ``linger_s`` keeps the servers up that many wall
    seconds after the scenario's end, frozen at its last values, so that a client's
    subscription still delivers the last parts of the day before the server goes away.
    """
    simulator = Simulator(
        scenario,
        opcua_port=opcua_port,
        mqtt_url=mqtt_url,
        ground_truth_path=ground_truth_path,
        speed=speed,
        host=host,
        security=security,
    )
    await simulator.start()
    if started is not None:
        started.set()
    try:
        await simulator.run()
        if linger_s > 0:
            await asyncio.sleep(linger_s)
    finally:
        await simulator.stop()
    return simulator
