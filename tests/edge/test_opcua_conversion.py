"""edge.opcua.values without a server: every variant type a server may send, and its edges.

Each value goes through asyncua's binary encoding and back first, so the test sees what
a DataValue from the wire holds (a Float arrives widened, a NaN stays NaN, an array is a
list), not what Python was asked to build.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from edge.counters import COUNTER_EVENT, Step
from edge.opcua.config import NodeMapping, TimestampChoice
from edge.opcua.values import (
    Counted,
    Reading,
    Rejected,
    count_points,
    metric_point,
    new_counter,
    point_time,
    quality_of,
    reading_of,
    state_point,
    to_ms,
)
from zhizao.wire import COUNTER_ANOMALY_EVENT, PointKind, Quality, counter_event_name

VT = ua.VariantType
SOURCE = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SERVER = datetime(2026, 3, 2, 8, 0, 1, tzinfo=UTC)
SOURCE_MS = int(SOURCE.timestamp() * 1000)
SERVER_MS = int(SERVER.timestamp() * 1000)
RECEIPT_MS = SOURCE_MS + 3_600_000  # an hour later: apart from both
#: what the collector catches per value (edge/opcua/collector.py _take and _poll)
NOT_UNDERSTOOD = (ValueError, TypeError, ArithmeticError)

METRIC = NodeMapping.model_validate(
    {"device": "CNC-1", "kind": "metric", "name": "speed", "node": "nsu=u;s=speed"}
)
STATE = NodeMapping.model_validate(
    {
        "device": "P-1",
        "kind": "state",
        "name": "state",
        "node": "nsu=u;s=status",
        # "true" as text: a Python dict (and so a loaded YAML map) holds True and 1 as one key
        "state_map": {
            0: "PLANNED_STOP",
            1: "RUNNING",
            "true": "RUNNING",
            "Fault": "UNPLANNED_STOP",
        },
    }
)


def wire(
    raw: Any,
    variant: ua.VariantType,
    status: int = ua.StatusCodes.Good,
    *,
    source: datetime | None = SOURCE,
    server: datetime | None = SERVER,
) -> ua.DataValue:
    """A DataValue as decoded from the binary encoding a server sends."""
    value = ua.DataValue(
        ua.Variant(raw, variant),
        StatusCode=ua.StatusCode(status),
        SourceTimestamp=cast(ua.DateTime, source),
        ServerTimestamp=cast(ua.DateTime, server),
    )
    decoded: ua.DataValue = struct_from_binary(ua.DataValue, Buffer(struct_to_binary(value)))
    return decoded


def read(raw: Any, variant: ua.VariantType, status: int = ua.StatusCodes.Good) -> Reading:
    reading = reading_of(wire(raw, variant, status), TimestampChoice.SOURCE, RECEIPT_MS)
    assert isinstance(reading, Reading), reading
    return reading


def counter_mapping(**fields: Any) -> NodeMapping:
    document = {"device": "P-1", "kind": "count", "name": "good", "node": "nsu=u;s=count"}
    return NodeMapping.model_validate(document | fields)


# -- status and time ------------------------------------------------------------------


def test_status_severity_is_the_quality_and_a_bad_or_empty_value_is_rejected_by_name() -> None:
    assert quality_of(None) is Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.GoodClamped)) is Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainSensorNotAccurate)) is Quality.UNCERTAIN
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadCommunicationError)) is Quality.BAD

    uncertain = read(1.5, VT.Double, ua.StatusCodes.UncertainLastUsableValue)
    assert (uncertain.raw, uncertain.quality) == (1.5, Quality.UNCERTAIN)
    bad = reading_of(
        wire(1.5, VT.Double, ua.StatusCodes.BadSensorFailure), TimestampChoice.SOURCE, 0
    )
    assert bad == Rejected("BadSensorFailure")  # a bad status drops the value it carries
    empty = reading_of(wire(None, VT.Null), TimestampChoice.SOURCE, 0)
    assert empty == Rejected("Good")  # good status, no value: named by its status
    no_status = ua.DataValue(ua.Variant(None), StatusCode=None)
    assert reading_of(no_status, TimestampChoice.SOURCE, 0) == Rejected("no value")


def test_the_chosen_timestamp_falls_back_to_the_other_then_to_receipt() -> None:
    both = wire(1.0, VT.Double)
    assert point_time(TimestampChoice.SOURCE, both, RECEIPT_MS) == SOURCE_MS
    assert point_time(TimestampChoice.SERVER, both, RECEIPT_MS) == SERVER_MS
    assert point_time(TimestampChoice.RECEIPT, both, RECEIPT_MS) == RECEIPT_MS
    no_source = wire(1.0, VT.Double, source=None)
    assert point_time(TimestampChoice.SOURCE, no_source, RECEIPT_MS) == SERVER_MS
    no_server = wire(1.0, VT.Double, server=None)
    assert point_time(TimestampChoice.SERVER, no_server, RECEIPT_MS) == SOURCE_MS
    neither = wire(1.0, VT.Double, source=None, server=None)
    assert point_time(TimestampChoice.SOURCE, neither, RECEIPT_MS) == RECEIPT_MS
    assert point_time(TimestampChoice.SERVER, neither, RECEIPT_MS) == RECEIPT_MS
    assert to_ms(None) is None


def test_a_naive_timestamp_is_utc_not_the_edge_pcs_local_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # asyncua hands out naive datetimes on some paths; a factory PC runs on China time.
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        assert to_ms(SOURCE.replace(tzinfo=None)) == SOURCE_MS
    finally:
        monkeypatch.undo()
        time.tzset()


# -- metrics --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "variant", "expected"),
    [
        (True, VT.Boolean, True),  # stays a bool, not 1.0
        (-128, VT.SByte, -128.0),
        (255, VT.Byte, 255.0),
        (-32_768, VT.Int16, -32_768.0),
        (65_535, VT.UInt16, 65_535.0),
        (-(2**31), VT.Int32, float(-(2**31))),
        (2**32 - 1, VT.UInt32, float(2**32 - 1)),
        (-(2**63), VT.Int64, float(-(2**63))),
        (2**64 - 1, VT.UInt64, float(2**64 - 1)),  # beyond 2**53: the nearest double
        (0.1, VT.Float, 0.10000000149011612),  # a Float arrives widened, not rounded back
        (-1e300, VT.Double, -1e300),
        ("12.5", VT.String, 12.5),  # a numeric string is read as its number
        (b"42", VT.ByteString, 42.0),  # so is a byte string of digits
    ],
)
def test_numeric_variants_become_metric_values(
    raw: Any, variant: ua.VariantType, expected: Any
) -> None:
    point = metric_point(METRIC, read(raw, variant))
    assert (point.kind, point.name, point.device, point.ts) == (
        PointKind.METRIC,
        "speed",
        "CNC-1",
        SOURCE_MS,
    )
    assert point.value == expected
    assert type(point.value) is type(expected)


@pytest.mark.parametrize(
    ("raw", "variant", "error"),
    [
        (math.nan, VT.Double, ValueError),  # the wire Point refuses NaN ...
        (math.inf, VT.Float, ValueError),  # ... and infinity
        (-math.inf, VT.Double, ValueError),
        ("fast", VT.String, ValueError),
        (b"\x00\x01", VT.ByteString, ValueError),
        (b"", VT.ByteString, ValueError),
        (ua.LocalizedText("1200", "en"), VT.LocalizedText, TypeError),
        ([1.0, 2.0], VT.Double, TypeError),  # arrays are not supported: one value per node
        (datetime(2026, 1, 1, tzinfo=UTC), VT.DateTime, TypeError),
        (uuid.UUID(int=7), VT.Guid, TypeError),
        (ua.QualifiedName("x", 1), VT.QualifiedName, TypeError),
        (ua.NodeId(5, 2), VT.NodeId, TypeError),
    ],
)
def test_values_that_are_not_finite_numbers_raise_what_the_collector_catches(
    raw: Any, variant: ua.VariantType, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        metric_point(METRIC, read(raw, variant))
    assert isinstance(caught.value, NOT_UNDERSTOOD)


def test_an_integer_beyond_double_precision_raises_an_overflow_the_collector_catches() -> None:
    # Not from the wire (UInt64 fits a double); from a server-side extension object.
    with pytest.raises(OverflowError) as caught:
        metric_point(METRIC, Reading(10**400, Quality.GOOD, SOURCE_MS))
    assert isinstance(caught.value, NOT_UNDERSTOOD)


def test_an_uncertain_metric_keeps_its_quality() -> None:
    point = metric_point(METRIC, read(7.0, VT.Double, ua.StatusCodes.UncertainSubNormal))
    assert (point.value, point.quality) == (7.0, Quality.UNCERTAIN)


# -- hand-mapped states ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "variant", "state", "stored_raw"),
    [
        (1, VT.Int32, "RUNNING", "1"),
        (0, VT.Byte, "PLANNED_STOP", "0"),
        (1.0, VT.Double, "RUNNING", "1.0"),  # 1.0 is looked up as 1
        (True, VT.Boolean, "RUNNING", "True"),  # a bool as true/false, as YAML writes it
        ("Fault", VT.String, "UNPLANNED_STOP", "Fault"),
        # A LocalizedText is looked up by its text; raw keeps what the server sent.
        (
            ua.LocalizedText("Fault", "en"),
            VT.LocalizedText,
            "UNPLANNED_STOP",
            "LocalizedText(Locale='en', Text='Fault')",
        ),
    ],
)
def test_states_are_looked_up_in_the_state_map(
    raw: Any, variant: ua.VariantType, state: str, stored_raw: str
) -> None:
    point = state_point(STATE, read(raw, variant))
    assert not isinstance(point, Rejected)
    assert (point.kind, point.value, point.raw, point.ts) == (
        PointKind.STATE,
        state,
        stored_raw,
        SOURCE_MS,
    )


@pytest.mark.parametrize(
    ("raw", "variant"),
    [
        (9, VT.Int32),
        (1.5, VT.Double),
        (False, VT.Boolean),
        (b"1", VT.ByteString),  # a byte string is not its digits here: b'1' is not 1
        (ua.LocalizedText("Läuft", "de"), VT.LocalizedText),
        ([1, 0], VT.Int32),
    ],
)
def test_a_raw_state_not_in_the_map_is_rejected_naming_it(
    raw: Any, variant: ua.VariantType
) -> None:
    rejected = state_point(STATE, read(raw, variant))
    assert isinstance(rejected, Rejected)
    assert rejected.reason == f"raw state {read(raw, variant).raw!r} is not in the state_map"


def test_state_default_catches_what_the_map_does_not_name() -> None:
    mapping = NodeMapping.model_validate(
        {
            "device": "P-1",
            "kind": "state",
            "name": "state",
            "node": "nsu=u;s=status",
            "state_map": {1: "RUNNING"},
            "state_default": "IDLE",
        }
    )
    point = state_point(mapping, read(77, VT.UInt16))
    assert not isinstance(point, Rejected)
    assert (point.value, point.raw) == ("IDLE", "77")


def test_a_long_raw_state_is_cut_to_256_characters() -> None:
    mapping = NodeMapping.model_validate(STATE.model_dump() | {"state_default": "IDLE"})
    point = state_point(mapping, read("x" * 1000, VT.String))
    assert not isinstance(point, Rejected)
    assert point.raw == "x" * 256


# -- counters -------------------------------------------------------------------------


def counted(
    mapping: NodeMapping, counter: Any, raw: Any, variant: ua.VariantType
) -> Counted | Rejected:
    return count_points(mapping, counter, read(raw, variant), rebaseline_reason="test reconnect")


@pytest.mark.parametrize(
    ("raw", "variant"),
    [
        (7, VT.UInt16),
        (7, VT.Int64),
        (7, VT.UInt64),
        (7.0, VT.Double),  # an integral float is a total
        (7.0, VT.Float),
    ],
)
def test_integer_totals_of_any_width_count(raw: Any, variant: ua.VariantType) -> None:
    mapping = counter_mapping()
    counter = new_counter(mapping, 2.0)
    first = counted(mapping, counter, 4, VT.UInt32)
    assert isinstance(first, Counted)
    assert (first.step.step, first.points) == (Step.BASELINE, ())  # nothing counted yet
    then = counted(mapping, counter, raw, variant)
    assert isinstance(then, Counted)
    (point,) = then.points
    assert (point.kind, point.name, point.value, point.raw) == (PointKind.COUNT, "good", 3, "7")


@pytest.mark.parametrize(
    ("raw", "variant"),
    [
        (7.5, VT.Double),
        (math.nan, VT.Double),
        (True, VT.Boolean),  # a bool is not a total, although Python says True == 1
        ("7", VT.String),
        (b"7", VT.ByteString),
        (ua.LocalizedText("7", "en"), VT.LocalizedText),
        ([7, 8], VT.UInt32),
    ],
)
def test_a_total_that_is_not_an_integer_is_rejected_and_leaves_the_counter_alone(
    raw: Any, variant: ua.VariantType
) -> None:
    mapping = counter_mapping()
    counter = new_counter(mapping, 2.0)
    counted(mapping, counter, 10, VT.UInt32)
    rejected = counted(mapping, counter, raw, variant)
    assert isinstance(rejected, Rejected)
    assert "is not an integer" in rejected.reason
    after = counted(mapping, counter, 12, VT.UInt32)
    assert isinstance(after, Counted)
    assert [p.value for p in after.points] == [2]  # from 10: the bad value left no mark


def test_totals_out_of_the_counters_range_are_rejected_naming_the_limit() -> None:
    sixteen = counter_mapping(counter_bits=16)
    counter = new_counter(sixteen, 2.0)
    too_big = counted(sixteen, counter, 70_000, VT.UInt32)
    assert too_big == Rejected("counter total 70000 does not fit a 16-bit counter; not counted")
    negative = counted(sixteen, counter, -1, VT.Int16)
    assert negative == Rejected("counter total -1 does not fit a 16-bit counter; not counted")
    thousand = counter_mapping(rollover=1000)
    over = counted(thousand, new_counter(thousand, 2.0), 1000, VT.UInt16)
    assert over == Rejected("counter total 1000 does not fit the rollover 1000; not counted")
    wide = counter_mapping()  # 32 bits by default
    beyond = counted(wide, new_counter(wide, 2.0), 2**32, VT.UInt64)
    assert isinstance(beyond, Rejected)
    assert "a 32-bit counter" in beyond.reason


def test_a_wrap_counts_across_zero() -> None:
    mapping = counter_mapping(counter_bits=16)
    counter = new_counter(mapping, 2.0)
    counted(mapping, counter, 65_530, VT.UInt16)
    wrapped = counted(mapping, counter, 3, VT.UInt16)
    assert isinstance(wrapped, Counted)
    assert wrapped.step.step is Step.WRAP
    assert [p.value for p in wrapped.points] == [9]


def test_a_rebaseline_is_an_event_with_the_reason_and_an_anomaly_is_an_event_not_a_count() -> None:
    mapping = counter_mapping(max_increment=100)
    counter = new_counter(mapping, 2.0)
    counted(mapping, counter, 50, VT.UInt32)
    counter.rebaseline()
    again = counted(mapping, counter, 900, VT.UInt32)
    assert isinstance(again, Counted)
    assert again.step.step is Step.REBASELINE
    (event,) = again.points
    assert (event.kind, event.name) == (PointKind.EVENT, counter_event_name(COUNTER_EVENT, "good"))
    assert "test reconnect" in str(event.value)
    jump = counted(mapping, counter, 1500, VT.UInt32)
    assert isinstance(jump, Counted)
    assert jump.step.step is Step.JUMP
    (anomaly,) = jump.points
    assert (anomaly.kind, anomaly.name) == (
        PointKind.EVENT,
        counter_event_name(COUNTER_ANOMALY_EVENT, "good"),
    )
    assert "+600" in str(anomaly.reason)
    same = counted(mapping, counter, 1500, VT.UInt32)
    assert isinstance(same, Counted)
    assert same.points == ()  # an unchanged total sends nothing
