"""Preset judging (edge.opcua.presets.judge_batch) without a server: time order within a
batch, one judgement per machine and instant, waiting for every input, changes only, and
states the table does not know."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from asyncua import ua

from edge.opcua.config import PresetMapping
from edge.opcua.presets import (
    PresetProblem,
    PresetReading,
    PresetState,
    judge_batch,
    preset_inputs,
)
from zhizao.wire import PointKind, Quality, StateClass

T0 = 1_772_438_400_000
MINUTE = 60_000


def machine(device: str = "CNC-1", *, with_mode: bool = True) -> PresetState:
    mapping = PresetMapping.model_validate(
        {"preset": "machinery", "device": device, "root": f"Machines/{device}"}
    )
    # What the collector sets after resolving: MachineryOperationMode is optional.
    expected = {"item_state", "operation_mode"} if with_mode else {"item_state"}
    return PresetState(mapping, expected=expected)


def robot(device: str = "RB-1") -> PresetState:
    mapping = PresetMapping.model_validate(
        {"preset": "robotics", "device": device, "root": f"Robots/{device}"}
    )
    return PresetState(mapping, expected={i.key for i in preset_inputs(mapping)})


def text(value: str) -> ua.LocalizedText:
    return ua.LocalizedText(value, "en")  # CurrentState is a LocalizedText


def reading(
    preset: PresetState, key: str, raw: Any, ts: int, quality: Quality = Quality.GOOD
) -> PresetReading:
    label = f"nodes.{preset.mapping.device}.{key}"
    return PresetReading(ts, key, raw, quality, preset, label)


def states(points: list[Any]) -> list[tuple[str, str, int]]:
    assert all(p.kind is PointKind.STATE and p.name == "state" for p in points)
    return [(p.device, p.value, p.ts) for p in points]


def test_one_publishs_inputs_are_replayed_in_time_order() -> None:
    cnc = machine()
    # A publish lists notifications grouped by item: all item states, then all modes.
    # The machine went RUNNING (0) → SETUP (5) → RUNNING (10); it was never IDLE.
    batch = [
        reading(cnc, "item_state", text("Executing"), T0),
        reading(cnc, "item_state", text("NotExecuting"), T0 + 5 * MINUTE),
        reading(cnc, "item_state", text("Executing"), T0 + 10 * MINUTE),
        reading(cnc, "operation_mode", text("Processing"), T0),
        reading(cnc, "operation_mode", text("Setup"), T0 + 5 * MINUTE),
        reading(cnc, "operation_mode", text("Processing"), T0 + 10 * MINUTE),
    ]
    points, problems = judge_batch(batch)
    assert problems == []
    assert states(points) == [
        ("CNC-1", "RUNNING", T0),
        ("CNC-1", "SETUP", T0 + 5 * MINUTE),
        ("CNC-1", "RUNNING", T0 + 10 * MINUTE),
    ]
    assert [p.raw for p in points] == [
        "Executing/Processing",
        "NotExecuting/Setup",
        "Executing/Processing",
    ]


def test_two_machines_interleaved_at_one_instant_each_get_one_true_state() -> None:
    a, b = machine("CNC-A"), machine("CNC-B")
    judge_batch(
        [
            reading(a, "item_state", text("NotExecuting"), T0),
            reading(a, "operation_mode", text("Setup"), T0),
            reading(b, "item_state", text("NotExecuting"), T0),
            reading(b, "operation_mode", text("Setup"), T0),
        ]
    )
    # Both end their setup at one instant; B's inputs arrive around A's. Judging B
    # between its two inputs would emit IDLE at the instant it began RUNNING.
    later = T0 + 5 * MINUTE
    points, _ = judge_batch(
        [
            reading(b, "operation_mode", text("Processing"), later),
            reading(a, "item_state", text("Executing"), later),
            reading(a, "operation_mode", text("Processing"), later),
            reading(b, "item_state", text("Executing"), later),
        ]
    )
    assert states(points) == [("CNC-B", "RUNNING", later), ("CNC-A", "RUNNING", later)]


def test_a_machine_waits_for_every_expected_input_and_only_changes_are_points() -> None:
    cnc = machine()
    assert judge_batch([reading(cnc, "item_state", text("Executing"), T0)]) == ([], [])
    points, _ = judge_batch([reading(cnc, "operation_mode", text("Processing"), T0 + 1)])
    assert states(points) == [("CNC-1", "RUNNING", T0 + 1)]
    # Another value that means the same state is no new point, in this batch or the next.
    same, _ = judge_batch([reading(cnc, "operation_mode", text("None"), T0 + 2)])
    assert same == []
    assert cnc.last is StateClass.RUNNING


def test_without_an_operation_mode_on_the_server_the_item_state_alone_decides() -> None:
    cnc = machine(with_mode=False)
    points, _ = judge_batch(
        [
            reading(cnc, "item_state", text("NotExecuting"), T0),
            reading(cnc, "item_state", text("OutOfService"), T0 + MINUTE),
        ]
    )
    assert states(points) == [("CNC-1", "IDLE", T0), ("CNC-1", "UNPLANNED_STOP", T0 + MINUTE)]
    assert [p.raw for p in points] == ["NotExecuting/None", "OutOfService/None"]


def test_a_state_the_table_does_not_know_is_a_problem_on_the_completing_input() -> None:
    cnc = machine()
    points, problems = judge_batch(
        [
            reading(cnc, "item_state", text("Executing"), T0),
            reading(cnc, "operation_mode", text("Calibrating"), T0),
        ]
    )
    assert points == []
    assert problems == [
        PresetProblem(
            "nodes.CNC-1.operation_mode",
            "CNC-1",
            "machinery state Executing/Calibrating not understood",
        )
    ]
    # The next known state still flows.
    points, problems = judge_batch([reading(cnc, "operation_mode", text("Setup"), T0 + 1)])
    assert (states(points), problems) == ([("CNC-1", "SETUP", T0 + 1)], [])


def test_a_plain_string_current_state_is_read_like_localized_text() -> None:
    cnc = machine(with_mode=False)
    points, _ = judge_batch([reading(cnc, "item_state", "Executing", T0)])
    assert states(points) == [("CNC-1", "RUNNING", T0)]


def test_the_point_carries_the_quality_of_the_input_that_completed_the_instant() -> None:
    cnc = machine()
    points, _ = judge_batch(
        [
            reading(cnc, "item_state", text("Executing"), T0),
            reading(cnc, "operation_mode", text("Processing"), T0, Quality.UNCERTAIN),
        ]
    )
    assert [p.quality for p in points] == [Quality.UNCERTAIN]


@pytest.mark.parametrize(
    ("item", "mode", "state"),
    [
        (item, mode, state)
        for item, row in {
            "Executing": ("RUNNING", "RUNNING", "SETUP", "PLANNED_STOP"),
            "NotExecuting": ("IDLE", "IDLE", "SETUP", "PLANNED_STOP"),
            "OutOfService": ("UNPLANNED_STOP",) * 3 + ("PLANNED_STOP",),
            "NotAvailable": ("PLANNED_STOP",) * 4,
        }.items()
        for mode, state in zip(("Processing", "None", "Setup", "Maintenance"), row, strict=True)
    ],
)
def test_the_machinery_table_of_the_module_docstring(item: str, mode: str, state: str) -> None:
    cnc = machine()
    points, _ = judge_batch(
        [
            reading(cnc, "item_state", text(item), T0),
            reading(cnc, "operation_mode", text(mode), T0),
        ]
    )
    assert states(points) == [("CNC-1", state, T0)]


class OperationalMode(enum.IntEnum):
    """What a loaded OPC 40010 data type hands out instead of a bare integer."""

    OTHER = 0
    MANUAL_REDUCED_SPEED = 1
    MANUAL_HIGH_SPEED = 2
    AUTOMATIC = 3
    AUTOMATIC_EXTERNAL = 4


def test_a_robots_stops_override_its_mode_and_its_mode_may_be_a_number_or_an_enum() -> None:
    rb = robot()

    def at(minute: int, **values: Any) -> list[PresetReading]:
        return [reading(rb, key, raw, T0 + minute * MINUTE) for key, raw in values.items()]

    batch = [
        *at(0, operational_mode=3, emergency_stop=False, protective_stop=False),
        *at(1, emergency_stop=True),
        *at(2, emergency_stop=False),
        *at(3, protective_stop=True),
        *at(4, protective_stop=False, operational_mode=OperationalMode.MANUAL_REDUCED_SPEED),
        *at(5, operational_mode=OperationalMode.OTHER),
        *at(6, operational_mode=4.0),
    ]
    points, problems = judge_batch(batch)
    assert problems == []
    assert [(p.value, (p.ts - T0) // MINUTE, p.raw) for p in points] == [
        ("RUNNING", 0, "OperationalMode=3"),
        ("UNPLANNED_STOP", 1, "EmergencyStop"),
        ("RUNNING", 2, "OperationalMode=3"),
        ("UNPLANNED_STOP", 3, "ProtectiveStop"),
        ("SETUP", 4, "OperationalMode=MANUAL_REDUCED_SPEED"),
        ("IDLE", 5, "OperationalMode=OTHER"),
        ("RUNNING", 6, "OperationalMode=4"),
    ]


def test_an_unknown_robot_mode_is_a_problem() -> None:
    rb = robot()
    points, problems = judge_batch(
        [
            reading(rb, "operational_mode", 9, T0),
            reading(rb, "emergency_stop", False, T0),
            reading(rb, "protective_stop", False, T0),
        ]
    )
    assert points == []
    assert [(p.label, p.message) for p in problems] == [
        ("nodes.RB-1.protective_stop", "robotics state OperationalMode=9 not understood")
    ]
