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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.opcua.config import (
    MACHINERY_NS,
    ROBOTICS_NS,
    UA_NS,
    Preset,
    PresetMapping,
)
from zhizao.wire import StateClass

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
