"""State from companion specifications, so installers write no node list.

OPC 40001-1 Machinery gives every machine two state machines under
``MachineryBuildingBlocks``: ``MachineryItemState`` (NotAvailable, OutOfService,
NotExecuting, Executing) and the optional ``MachineryOperationMode`` (None,
Maintenance, Setup, Processing). Their ``CurrentState`` (a LocalizedText) is read;
the pair maps to a state class:

================  ==========  ===========  =========  ============
item \\ mode       Processing  None         Setup      Maintenance
================  ==========  ===========  =========  ============
Executing         RUNNING     RUNNING      SETUP      PLANNED_STOP
NotExecuting      IDLE        IDLE         SETUP      PLANNED_STOP
OutOfService      UNPLANNED   UNPLANNED    UNPLANNED  PLANNED_STOP
NotAvailable      PLANNED     PLANNED      PLANNED    PLANNED_STOP
================  ==========  ===========  =========  ============

NotAvailable is "switched off or in energy-saving mode", which in a factory is no
shift or a planned stop; OutOfService outside maintenance is a fault.

OPC 40010-1 Robotics gives each MotionDeviceSystem ``SafetyStates/<name>/ParameterSet``
with ``OperationalMode`` (0 OTHER, 1 MANUAL_REDUCED_SPEED, 2 MANUAL_HIGH_SPEED,
3 AUTOMATIC, 4 AUTOMATIC_EXTERNAL), ``EmergencyStop`` and ``ProtectiveStop``. An
emergency or protective stop is UNPLANNED_STOP; manual modes are SETUP (teaching,
jogging); automatic modes are RUNNING; OTHER is IDLE. The safety state cannot tell a
planned stop from idle: the shift calendar does that (DESIGN §7).

Judging a batch (:func:`judge_batch`, pure: no server, no session). A machine changes
MachineryItemState and MachineryOperationMode together, but they arrive as separate
notifications, and a publish lists them grouped by item, not by time. Judging after
each one would emit states the machine never was in (SETUP → RUNNING passing through
IDLE); so the collector queues a batch's inputs as :class:`PresetReading` and they are
replayed here in source-time order, every input of one instant first, then one
judgement per machine. A machine is judged once all its expected inputs have been seen
(a half-known state is never emitted), and only a change of state is a point.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.opcua.config import (
    MACHINERY_NS,
    ROBOTICS_NS,
    UA_NS,
    Preset,
    PresetMapping,
)
from zhizao.wire import Point, PointKind, Quality, StateClass

DI_NS = "http://opcfoundation.org/UA/DI/"

#: a browse-path segment; namespace None means "any namespace" (a name the server chose)
Segment = tuple[str | None, str]


@dataclass(frozen=True, slots=True)
class PresetInput:
    key: str
    path: tuple[Segment, ...]  # relative to the preset's root
    optional: bool = False


MACHINERY_INPUTS = (
    PresetInput(
        "item_state",
        (
            (MACHINERY_NS, "MachineryBuildingBlocks"),
            (MACHINERY_NS, "MachineryItemState"),
            (UA_NS, "CurrentState"),
        ),
    ),
    PresetInput(
        "operation_mode",
        (
            (MACHINERY_NS, "MachineryBuildingBlocks"),
            (MACHINERY_NS, "MachineryOperationMode"),
            (UA_NS, "CurrentState"),
        ),
        optional=True,  # MachineryOperationMode is optional in OPC 40001-1
    ),
)


def robotics_inputs(safety_state: str) -> tuple[PresetInput, ...]:
    base: tuple[Segment, ...] = (
        (ROBOTICS_NS, "SafetyStates"),
        (None, safety_state),
        (DI_NS, "ParameterSet"),
    )
    return (
        PresetInput("operational_mode", (*base, (ROBOTICS_NS, "OperationalMode"))),
        PresetInput("emergency_stop", (*base, (ROBOTICS_NS, "EmergencyStop"))),
        PresetInput("protective_stop", (*base, (ROBOTICS_NS, "ProtectiveStop"))),
    )


def preset_inputs(preset: PresetMapping) -> tuple[PresetInput, ...]:
    if preset.preset is Preset.MACHINERY:
        return MACHINERY_INPUTS
    return robotics_inputs(preset.safety_state)


def _text(value: Any) -> str | None:
    """CurrentState is a LocalizedText; some servers publish a plain string."""
    if value is None:
        return None
    text = getattr(value, "Text", value)
    return None if text is None else str(text)


_MACHINERY: dict[tuple[str, str], StateClass] = {}
for _mode in ("Processing", "None", "Setup", "Maintenance"):
    _MACHINERY[("Executing", _mode)] = StateClass.RUNNING
    _MACHINERY[("NotExecuting", _mode)] = StateClass.IDLE
    _MACHINERY[("OutOfService", _mode)] = StateClass.UNPLANNED_STOP
    _MACHINERY[("NotAvailable", _mode)] = StateClass.PLANNED_STOP
for _item in ("Executing", "NotExecuting"):
    _MACHINERY[(_item, "Setup")] = StateClass.SETUP
for _item in ("Executing", "NotExecuting", "OutOfService", "NotAvailable"):
    _MACHINERY[(_item, "Maintenance")] = StateClass.PLANNED_STOP


def machinery_state(values: Mapping[str, Any]) -> tuple[StateClass | None, str]:
    item = _text(values.get("item_state"))
    mode = _text(values.get("operation_mode")) or "None"
    raw = f"{item}/{mode}"
    if item is None:
        return None, raw
    return _MACHINERY.get((item, mode)), raw


_ROBOT_MODES: dict[str, StateClass] = {
    "0": StateClass.IDLE,
    "OTHER": StateClass.IDLE,
    "1": StateClass.SETUP,
    "MANUAL_REDUCED_SPEED": StateClass.SETUP,
    "2": StateClass.SETUP,
    "MANUAL_HIGH_SPEED": StateClass.SETUP,
    "3": StateClass.RUNNING,
    "AUTOMATIC": StateClass.RUNNING,
    "4": StateClass.RUNNING,
    "AUTOMATIC_EXTERNAL": StateClass.RUNNING,
}


def _mode_key(value: Any) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", None)  # an IntEnum from a loaded data type
    if isinstance(name, str):
        return name
    return str(int(value)) if isinstance(value, int | float) else str(value)


def robotics_state(values: Mapping[str, Any]) -> tuple[StateClass | None, str]:
    if values.get("emergency_stop") is True:
        return StateClass.UNPLANNED_STOP, "EmergencyStop"
    if values.get("protective_stop") is True:
        return StateClass.UNPLANNED_STOP, "ProtectiveStop"
    mode = _mode_key(values.get("operational_mode"))
    if mode is None or "emergency_stop" not in values or "protective_stop" not in values:
        return None, f"OperationalMode={mode}"  # not all inputs seen yet
    return _ROBOT_MODES.get(mode), f"OperationalMode={mode}"


def preset_state(preset: Preset, values: Mapping[str, Any]) -> tuple[StateClass | None, str]:
    """The state class for the current input values, and the raw text it came from."""
    if preset is Preset.MACHINERY:
        return machinery_state(values)
    return robotics_state(values)


# -- judging a batch -------------------------------------------------------------------


@dataclass
class PresetState:
    """One preset machine in one session: the inputs it waits for, their latest values,
    and the last state sent."""

    mapping: PresetMapping
    #: keys of the inputs resolved on the server (an absent optional one is not waited for)
    expected: set[str] = field(default_factory=set)
    values: dict[str, Any] = field(default_factory=dict)
    last: StateClass | None = None


@dataclass(frozen=True, slots=True)
class PresetReading:
    """One notification of a preset's input, until the batch it came in is judged."""

    ts: int
    key: str
    raw: Any
    quality: Quality
    preset: PresetState
    #: where the input is in the config ("nodes.0.item_state"), for a problem
    label: str


@dataclass(frozen=True, slots=True)
class PresetProblem:
    """A state the table does not know, reported on the input that completed it."""

    label: str
    device: str
    message: str


def judge_batch(readings: Iterable[PresetReading]) -> tuple[list[Point], list[PresetProblem]]:
    """The state changes a batch of inputs means, in time order (module docstring).

    Updates each reading's :class:`PresetState` (its values and last state).
    """
    points: list[Point] = []
    problems: list[PresetProblem] = []
    # sorted() is stable: inputs of one instant keep their arrival order.
    for ts, instant in itertools.groupby(sorted(readings, key=lambda r: r.ts), key=lambda r: r.ts):
        # Every input of the instant first, then one judgement per machine: a
        # publish groups notifications by item, so one machine's inputs of one
        # instant need not be adjacent (another machine's can come between), and
        # judging between them would emit a state it never was in, at the same
        # timestamp as the true one (which storage then drops as a duplicate).
        last: dict[int, PresetReading] = {}
        for reading in instant:
            reading.preset.values[reading.key] = reading.raw
            last[id(reading.preset)] = reading
        for reading in last.values():
            point = _judge(reading, ts, problems)
            if point is not None:
                points.append(point)
    return points, problems


def _judge(reading: PresetReading, ts: int, problems: list[PresetProblem]) -> Point | None:
    preset = reading.preset
    if not preset.expected <= preset.values.keys():
        return None  # wait for every input, or a half-known state would be emitted
    state, text = preset_state(preset.mapping.preset, preset.values)
    if state is None:
        problems.append(
            PresetProblem(
                reading.label,
                preset.mapping.device,
                f"{preset.mapping.preset.value} state {text} not understood",
            )
        )
        return None
    if state is preset.last:
        return None
    preset.last = state
    return Point(
        device=preset.mapping.device,
        ts=ts,
        kind=PointKind.STATE,
        name=preset.mapping.name,
        value=state.value,
        quality=reading.quality,
        raw=text[:256],
    )
