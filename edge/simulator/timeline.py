"""What every device does, computed once from the scenario (pure, no clock, no I/O).

The timeline is the ground truth: exact state intervals and the time of every part,
in simulated epoch milliseconds. The runtime only replays it against the simulated
clock, so what the KPI engine is checked against does not depend on how busy the
machine running the simulator was.

Rules, in order of precedence for each instant of a device's life:

1. an episode with a ``state`` (breakdown, setup, planned stop, idle) — the last one
   listed wins where episodes overlap;
2. a micro stop (IDLE, reason ``micro stop``) where the device would otherwise run;
3. RUNNING inside a shift (all the time when the scenario has no shifts), PLANNED_STOP
   (reason ``no shift``) outside.

While RUNNING, parts come every ``ideal_cycle_s / speed`` seconds (speed from the last
covering speed episode, 1 otherwise); a part interrupted by a stop is finished after
it. Every ``reject_every``-th part is a reject. Robots produce no parts (their
OPC 40010 safety state carries no counter). Network drops do not change what a
machine does, only what the collector sees.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.simulator.scenario import Device, DeviceType, Scenario
from zhizao.wire import CountName, StateClass


@dataclass(frozen=True, slots=True)
class StateInterval:
    device: str
    start: int  # epoch ms, inclusive
    end: int  # epoch ms, exclusive
    state: StateClass
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Part:
    device: str
    ts: int
    reject: bool


@dataclass
class DeviceTimeline:
    device: Device
    intervals: list[StateInterval] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    speeds: list[tuple[int, int, float]] = field(default_factory=list)

    def state_at(self, ts: int) -> StateInterval:
        for interval in self.intervals:
            if interval.start <= ts < interval.end:
                return interval
        return self.intervals[-1]

    def speed_at(self, ts: int) -> float:
        for start, end, factor in self.speeds:
            if start <= ts < end:
                return factor
        return 1.0


def _ms(scenario: Scenario, seconds: float) -> int:
    return scenario.start_ms + round(seconds * 1000)


def _covering(spans: Iterable[tuple[int, int, Any]], ts: int) -> Any:
    found = None
    for start, end, value in spans:
        if start <= ts < end:
            found = value
    return found


def build_device(scenario: Scenario, device: Device) -> DeviceTimeline:
    begin, finish = scenario.start_ms, _ms(scenario, scenario.duration)
    shifts = [(_ms(scenario, s.start), _ms(scenario, s.end), True) for s in scenario.shifts]
    states = [
        (_ms(scenario, e.at), _ms(scenario, e.at + e.duration), (e.state, e.reason))
        for e in device.episodes
        if e.state is not None
    ]
    speeds = [
        (_ms(scenario, e.at), _ms(scenario, e.at + e.duration), e.speed)
        for e in device.episodes
        if e.speed is not None
    ]
    micro: list[tuple[int, int, bool]] = []
    if device.micro_stops is not None:
        every, length = device.micro_stops.every, device.micro_stops.duration
        at = every
        while at < scenario.duration:
            micro.append(
                (_ms(scenario, at), _ms(scenario, min(at + length, scenario.duration)), True)
            )
            at += every
    cuts = {begin, finish}
    for spans in (shifts, states, speeds, micro):
        for start, end, _ in spans:
            cuts.update(t for t in (start, end) if begin <= t <= finish)
    points = sorted(cuts)

    timeline = DeviceTimeline(device)
    timeline.speeds = [(s, e, float(f)) for s, e, f in speeds if f is not None]
    intervals: list[StateInterval] = []
    for start, end in itertools.pairwise(points):
        episode = _covering(states, start)
        if episode is not None:
            state, reason = episode
        elif not shifts or _covering(shifts, start):
            state, reason = StateClass.RUNNING, None
            if _covering(micro, start):
                state, reason = StateClass.IDLE, "micro stop"
        else:
            state, reason = StateClass.PLANNED_STOP, "no shift"
        if intervals and intervals[-1].state is state and intervals[-1].reason == reason:
            intervals[-1] = StateInterval(device.code, intervals[-1].start, end, state, reason)
        else:
            intervals.append(StateInterval(device.code, start, end, state, reason))
    timeline.intervals = intervals
    if device.type is not DeviceType.ROBOT:
        timeline.parts = list(_parts(timeline, points))
    return timeline


def _parts(timeline: DeviceTimeline, points: list[int]) -> Iterator[Part]:
    device = timeline.device
    cycle_ms = device.ideal_cycle_s * 1000
    progress = 0.0  # fraction of the current part already done
    made = 0
    for start, end in itertools.pairwise(points):
        if timeline.state_at(start).state is not StateClass.RUNNING:
            continue
        rate = timeline.speed_at(start) / cycle_ms  # parts per ms
        at = start + (1.0 - progress) / rate
        while at <= end:
            made += 1
            reject = device.reject_every is not None and made % device.reject_every == 0
            yield Part(device.code, min(math.ceil(at), end), reject)
            at += 1.0 / rate
        progress = 1.0 - (at - end) * rate


def build_timeline(scenario: Scenario) -> dict[str, DeviceTimeline]:
    return {device.code: build_device(scenario, device) for device in scenario.devices}


# -- ground truth --------------------------------------------------------------------


def ground_truth(
    scenario: Scenario, timelines: dict[str, DeviceTimeline], until: int
) -> Iterator[dict[str, Any]]:
    """The ground-truth records up to simulated time ``until`` (see README)."""
    end = min(until, _ms(scenario, scenario.duration))
    yield {
        "type": "scenario",
        "name": scenario.name,
        "start": scenario.start_ms,
        "end": end,
    }
    for code, timeline in timelines.items():
        seconds: dict[str, float] = {}
        for interval in timeline.intervals:
            if interval.start >= end:
                break
            clipped = min(interval.end, end)
            key = interval.state.value
            seconds[key] = seconds.get(key, 0.0) + (clipped - interval.start) / 1000
            yield {
                "type": "state",
                "device": code,
                "start": interval.start,
                "end": clipped,
                "state": interval.state.value,
                "reason": interval.reason,
            }
        counts = {CountName.GOOD.value: 0, CountName.REJECT.value: 0}
        for part in timeline.parts:
            if part.ts > end:
                break
            name = CountName.REJECT.value if part.reject else CountName.GOOD.value
            counts[name] += 1
            yield {"type": "part", "device": code, "ts": part.ts, "name": name}
        yield {
            "type": "summary",
            "device": code,
            "good": counts["good"],
            "reject": counts["reject"],
            "seconds": seconds,
            "ideal_cycle_s": timeline.device.ideal_cycle_s,
        }
    for fault in scenario.faults:
        at = _ms(scenario, fault.at)
        if at < end:
            record: dict[str, Any] = {"type": "fault", "kind": fault.kind.value, "at": at}
            if fault.target is not None:
                record["target"] = fault.target
            if fault.down:
                record["until"] = min(_ms(scenario, fault.at + fault.down), end)
            yield record
    for drop in scenario.network_drops:
        start = _ms(scenario, drop.at)
        if start < end:
            yield {
                "type": "drop",
                "target": drop.target,
                "start": start,
                "end": min(_ms(scenario, drop.at + drop.duration), end),
            }


def write_ground_truth(
    path: Path, scenario: Scenario, timelines: dict[str, DeviceTimeline], until: int
) -> None:
    lines = (
        json.dumps(record, ensure_ascii=False)
        for record in ground_truth(scenario, timelines, until)
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_ground_truth(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
