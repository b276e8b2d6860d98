"""From OPC UA DataValues to wire Points: quality, timestamps, states, counters (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua

from edge.opcua.collector import OpcUaCollector
from edge.opcua.nodes import Target, build_targets
from edge.opcua.values import quality_of
from tests.fix_opcua import source_config
from zhizao.wire import PointKind, Quality

SOURCE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SERVER = datetime(2026, 3, 2, 8, 0, 1, tzinfo=UTC)
RECEIPT_MS = 1_772_438_400_000


def value(raw: Any, status: int = 0, *, source: datetime | None = SOURCE) -> ua.DataValue:
    return ua.DataValue(
        ua.Variant(raw),
        StatusCode=ua.StatusCode(status),
        SourceTimestamp=cast(ua.DateTime, source),
        ServerTimestamp=cast(ua.DateTime, SERVER),
    )


def collector(node: dict[str, Any], **fields: Any) -> tuple[OpcUaCollector, Target]:
    config = source_config("opc.tcp://127.0.0.1:4840", [node], **fields)
    return OpcUaCollector(config, clock=lambda: RECEIPT_MS), build_targets(config)[0]


METRIC = {"device": "CNC-1", "kind": "metric", "name": "speed", "node": "nsu=u;s=speed"}


def test_status_code_severity_is_the_quality() -> None:
    assert quality_of(ua.StatusCode(ua.StatusCodes.Good)) is Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)) is Quality.UNCERTAIN
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadSensorFailure)) is Quality.BAD


def test_uncertain_values_flow_marked_and_bad_ones_are_reported() -> None:
    reader, target = collector(METRIC)
    (point,) = reader._convert(target, value(12.5, ua.StatusCodes.UncertainLastUsableValue))
    assert (point.value, point.quality) == (12.5, Quality.UNCERTAIN)
    assert reader._convert(target, value(None, ua.StatusCodes.BadSensorFailure)) == []
    assert "BadSensorFailure" in reader.node_errors["nodes.0"]
    reader._convert(target, value(13.0))
    assert "nodes.0" not in reader.node_errors  # recovered


def test_timestamp_choices() -> None:
    for choice, expected in (
        ("source", int(SOURCE.timestamp() * 1000)),
        ("server", int(SERVER.timestamp() * 1000)),
        ("receipt", RECEIPT_MS),
    ):
        reader, target = collector(METRIC, timestamp=choice)
        (point,) = reader._convert(target, value(1.0))
        assert point.ts == expected, choice
    reader, target = collector(METRIC)
    (point,) = reader._convert(target, value(1.0, source=None))
    assert point.ts == int(SERVER.timestamp() * 1000)  # no source time: the server's


def test_hand_mapped_state_and_unknown_raw_values() -> None:
    node = {
        "device": "P-1",
        "kind": "state",
        "name": "state",
        "node": "nsu=u;s=status",
        "state_map": {0: "PLANNED_STOP", 1: "RUNNING", 4: "UNPLANNED_STOP"},
    }
    reader, target = collector(node)
    (point,) = reader._convert(target, value(1))
    assert (point.kind, point.value, point.raw) == (PointKind.STATE, "RUNNING", "1")
    assert reader._convert(target, value(9)) == []
    assert "9" in reader.node_errors["nodes.0"]


def test_counter_totals_become_increments() -> None:
    node = {
        "device": "P-1",
        "kind": "count",
        "name": "good",
        "node": "nsu=u;s=count",
        "counter_bits": 16,
    }
    reader, target = collector(node)
    assert reader._convert(target, value(65_530)) == []  # the baseline
    (point,) = reader._convert(target, value(3))  # wrapped
    assert (point.kind, point.name, point.value) == (PointKind.COUNT, "good", 9)
    assert reader._convert(target, value("many")) == []
    assert "not an integer" in reader.node_errors["nodes.0"]


def test_preset_inputs_of_one_publish_are_judged_in_time_order() -> None:
    config = source_config(
        "opc.tcp://127.0.0.1:4840",
        [{"preset": "machinery", "device": "CNC-1", "root": "Machines/CNC-1"}],
    )
    reader = OpcUaCollector(config)
    item, mode = build_targets(config)
    for target in (item, mode):
        target.node_id = ua.NodeId(ua.String(target.label), ua.Int16(2))
    reader._expect_preset_inputs([item, mode])

    def at(minute: int) -> datetime:
        return SOURCE.replace(minute=minute)

    # A publish lists notifications grouped by item: all item states, then all modes.
    # The machine went RUNNING (00) → SETUP (05) → RUNNING (10); it was never IDLE.
    for target, raw, minute in (
        (item, "Executing", 0),
        (item, "NotExecuting", 5),
        (item, "Executing", 10),
        (mode, "Processing", 0),
        (mode, "Setup", 5),
        (mode, "Processing", 10),
    ):
        reader._convert(target, value(ua.LocalizedText(raw, "en"), source=at(minute)))
    points = reader._flush_presets()
    assert [(p.value, p.ts) for p in points] == [
        ("RUNNING", int(at(0).timestamp() * 1000)),
        ("SETUP", int(at(5).timestamp() * 1000)),
        ("RUNNING", int(at(10).timestamp() * 1000)),
    ]


def test_two_machines_changing_at_one_instant_each_get_one_true_state() -> None:
    config = source_config(
        "opc.tcp://127.0.0.1:4840",
        [
            {"preset": "machinery", "device": "CNC-A", "root": "Machines/CNC-A"},
            {"preset": "machinery", "device": "CNC-B", "root": "Machines/CNC-B"},
        ],
    )
    reader = OpcUaCollector(config)
    targets = build_targets(config)
    for target in targets:
        target.node_id = ua.NodeId(ua.String(target.label), ua.Int16(2))
    reader._expect_preset_inputs(targets)
    a_item, a_mode, b_item, b_mode = targets
    before, after = SOURCE, SOURCE.replace(minute=5)
    for target, raw in ((a_item, "NotExecuting"), (a_mode, "Setup"),
                        (b_item, "NotExecuting"), (b_mode, "Setup")):  # fmt: skip
        reader._convert(target, value(ua.LocalizedText(raw, "en"), source=before))
    reader._flush_presets()
    # Both end their setup at one instant. A publish lists notifications by item in the
    # order they were first triggered: B's mode, then A's inputs, then B's item state.
    # Judging B between its two inputs would emit IDLE at the instant it began RUNNING,
    # and storage keeps the first of two states at one timestamp.
    for target, raw in ((b_mode, "Processing"), (a_item, "Executing"),
                        (a_mode, "Processing"), (b_item, "Executing")):  # fmt: skip
        reader._convert(target, value(ua.LocalizedText(raw, "en"), source=after))
    ms = int(after.timestamp() * 1000)
    assert sorted((p.device, p.value, p.ts) for p in reader._flush_presets()) == [
        ("CNC-A", "RUNNING", ms),
        ("CNC-B", "RUNNING", ms),
    ]
