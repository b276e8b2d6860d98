"""The uplink wire contract: round trips, the published JSON Schema, tolerant decoding."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhizao.errors import ContractError, TopicError
from zhizao.wire import (
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    DecodedBatch,
    EdgeStatus,
    Point,
    PointKind,
    StateClass,
    UplinkBatch,
    data_topic,
    decode_batch,
    decode_status,
    encode_batch,
    encode_status,
    json_schemas,
    parse_topic,
    status_topic,
)

SCHEMA_DIR = Path(__file__).parents[2] / "docs" / "schema"
ENTERPRISE = "91350100M000100Y43"
T0 = 1_767_225_600_000

codes = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
timestamps = st.integers(min_value=MIN_TIMESTAMP_MS, max_value=MAX_TIMESTAMP_MS)
qualities = st.sampled_from(["good", "uncertain", "bad"])
#: Text the contract accepts: no control characters (nor lone surrogates).
texts = st.characters(exclude_categories=("Cc", "Cs"))
metric_points = st.builds(
    Point,
    device=codes,
    ts=timestamps,
    kind=st.just(PointKind.METRIC),
    name=st.text(texts, min_size=1, max_size=30),
    value=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53)),
    quality=qualities,
)
state_points = st.builds(
    Point,
    device=codes,
    ts=timestamps,
    kind=st.just(PointKind.STATE),
    name=st.just("state"),
    value=st.sampled_from([s.value for s in StateClass]),
    raw=st.none() | st.text(texts, max_size=20),
    reason=st.none() | st.text(texts, max_size=20),
)
count_points = st.builds(
    Point,
    device=codes,
    ts=timestamps,
    kind=st.just(PointKind.COUNT),
    name=st.sampled_from(["good", "reject"]),
    value=st.integers(0, 10_000),
)
event_points = st.builds(
    Point,
    device=codes,
    ts=timestamps,
    kind=st.just(PointKind.EVENT),
    name=st.just("connectivity"),
    value=st.sampled_from(["online", "offline"]),
    reason=st.none() | st.text(texts, max_size=20),
)
batches = st.builds(
    UplinkBatch,
    enterprise=st.just(ENTERPRISE),
    edge=codes,
    seq=st.integers(0, 2**63 - 1),
    sent_at=timestamps,
    points=st.lists(
        st.one_of(metric_points, state_points, count_points, event_points), min_size=1, max_size=20
    ),
)


@given(batches)
def test_batch_round_trip(batch: UplinkBatch) -> None:
    decoded = decode_batch(encode_batch(batch))
    assert decoded.rejected == ()
    assert decoded.batch == batch


@given(batches)
def test_encoded_batches_follow_the_published_schema(batch: UplinkBatch) -> None:
    schema = json.loads((SCHEMA_DIR / "uplink-batch.schema.json").read_text())
    jsonschema.validate(json.loads(encode_batch(batch)), schema)


def test_published_schemas_are_current() -> None:
    for name, schema in json_schemas().items():
        on_disk = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
        assert on_disk == schema, (
            f"docs/schema/{name}.schema.json is stale: run `zhizao contract schema`"
        )


def test_examples_in_docs_follow_the_schema() -> None:
    for name in ("uplink-batch", "edge-status"):
        schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
        example = json.loads((SCHEMA_DIR / f"{name}.example.json").read_text())
        jsonschema.validate(example, schema)
    decode_batch((SCHEMA_DIR / "uplink-batch.example.json").read_bytes())
    decode_status((SCHEMA_DIR / "edge-status.example.json").read_bytes())


def _envelope(points: list[object]) -> bytes:
    return json.dumps(
        {"v": 1, "enterprise": ENTERPRISE, "edge": "e1", "seq": 7, "sent_at": T0, "points": points},
        allow_nan=True,
    ).encode()


GOOD = {"device": "cnc-01", "ts": T0, "kind": "metric", "name": "spindle_speed", "value": 1200.0}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({**GOOD, "value": math.nan}, "finite"),
        ({**GOOD, "value": math.inf}, "finite"),
        ({**GOOD, "ts": 1_000}, "points.1.ts"),
        ({**GOOD, "kind": "count", "name": "good", "value": -1}, "non-negative integer"),
        ({**GOOD, "kind": "count", "name": "total", "value": 1}, "'good' or 'reject'"),
        ({**GOOD, "kind": "state", "value": "RUNNIN"}, "state value must be one of"),
        ({**GOOD, "device": "bad device/"}, "points.1.device"),
        ({**GOOD, "extra": 1}, "points.1.extra"),
    ],
)
def test_one_bad_point_costs_only_itself(bad: dict[str, object], reason: str) -> None:
    decoded = decode_batch(_envelope([GOOD, bad, {**GOOD, "ts": T0 + 1}]))
    assert [p.ts for p in decoded.batch.points] == [T0, T0 + 1]
    assert len(decoded.rejected) == 1
    assert decoded.rejected[0].index == 1
    assert reason in decoded.rejected[0].reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"v": 2, "points": []}).encode(), "contract version 2"),
        (_envelope([]), "points"),
        (_envelope([{**GOOD, "value": "x"}]), "no valid point"),
        (
            json.dumps(
                {
                    "v": 1,
                    "enterprise": ENTERPRISE,
                    "edge": "e1",
                    "seq": -1,
                    "sent_at": T0,
                    "points": [GOOD],
                }
            ).encode(),
            "seq",
        ),
        (b"{" + b" " * (5 * 1024 * 1024) + b"}", "byte limit"),
    ],
)
def test_bad_envelopes_raise_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode_batch(payload)


def test_status_round_trip_and_topics() -> None:
    status = EdgeStatus(
        enterprise=ENTERPRISE,
        edge="edge-1",
        status="offline",
        ts=T0,
        reason="connection lost",
        last_seq=42,
    )
    assert decode_status(encode_status(status)) == status
    topic = parse_topic(status_topic(ENTERPRISE, "edge-1"))
    assert (topic.enterprise, topic.edge, topic.channel) == (ENTERPRISE, "edge-1", "status")
    assert parse_topic(data_topic(ENTERPRISE, "edge-1")).channel == "data"


@pytest.mark.parametrize(
    "topic",
    [
        "zhizao/v2/x/edge/e/data",
        "zhizao/v1/x/edge/e",
        "zhizao/v1/x/gw/e/data",
        "zhizao/v1/x/edge/e/cmd",
        "zhizao/v1/+/edge/e/data",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({**GOOD, "name": "speed\x00"}, "points.1.name: must not contain control characters"),
        ({**GOOD, "name": "speed\x1b[2J"}, "points.1.name: must not contain control characters"),
        ({**GOOD, "kind": "state", "name": "state", "value": "IDLE", "raw": "a\x00"},
         "points.1.raw: must not contain control characters other than tab"),
        ({**GOOD, "kind": "event", "name": "alarm", "value": "E\x07"},
         "points.1.value: must not contain control characters other than tab"),
        ({**GOOD, "value": 10**400}, "points.1.value: a metric value must be within double"),
        ({**GOOD, "value": -(10**309)}, "points.1.value: a metric value must be within double"),
        ({**GOOD, "note\x00": 1}, "points.1.note\\x00: Extra inputs are not permitted"),
    ],
)
def test_what_storage_cannot_hold_costs_only_its_point(bad: dict[str, object], reason: str) -> None:
    decoded = decode_batch(_envelope([GOOD, bad]))
    assert [p.ts for p in decoded.batch.points] == [T0]
    assert decoded.rejected[0].reason.startswith(reason), decoded.rejected[0].reason


def test_text_keeps_tabs_and_line_breaks_and_any_script() -> None:
    point = {**GOOD, "kind": "state", "name": "状态", "value": "IDLE",
             "reason": "line 1\nline 2\tcol\r", "raw": "Ausführung"}
    assert decode_batch(_envelope([point])).batch.points[0].reason == "line 1\nline 2\tcol\r"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (json.dumps({"v": 1, "enterprise": ENTERPRISE, "edge": "e1", "seq": 2**63,
                     "sent_at": T0, "points": [GOOD]}).encode(),
         "seq: Input should be less than or equal to 9223372036854775807"),
        (json.dumps({"v": 1, "enterprise": ENTERPRISE[:17] + "\x00", "edge": "e1", "seq": 1,
                     "sent_at": T0, "points": [GOOD]}).encode(), "enterprise: String should match"),
        (b"[" * 100_000 + b"]" * 100_000, "payload: JSON nests deeper than 32 levels"),
        (_envelope([GOOD, {**GOOD, "value": json.loads("[" * 40 + "]" * 40)}]),
         "payload: JSON nests deeper than 32 levels"),
    ],
)
def test_envelopes_storage_cannot_hold_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as refused:
        decode_batch(payload)
    assert str(refused.value).startswith(reason), str(refused.value)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"last_seq": 2**63}, "last_seq: Input should be less than or equal to"),
        ({"reason": "boot\x00"}, "reason: must not contain control characters"),
        ({"software": "zhizao\x1b"}, "software: must not contain control characters"),
    ],
)
def test_statuses_storage_cannot_hold_are_refused(fields: dict[str, object], reason: str) -> None:
    status = {"v": 1, "enterprise": ENTERPRISE, "edge": "e1", "status": "online", "ts": T0}
    with pytest.raises(ContractError, match=f"^{reason}"):
        decode_status(json.dumps(status | fields).encode())
    deep = json.dumps(status | {"reason": "X"}).encode().replace(b'"X"', b"[" * 10_000)
    with pytest.raises(ContractError, match="JSON nests too deeply"):
        decode_status(deep)


def test_the_published_schema_refuses_control_characters_and_huge_numbers() -> None:
    schema = json.loads((SCHEMA_DIR / "uplink-batch.schema.json").read_text())
    for bad in ({**GOOD, "name": "a\x00"}, {**GOOD, "kind": "event", "value": "a\x00"}):
        document = json.loads(_envelope([bad]))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, schema)
    document = json.loads(_envelope([GOOD])) | {"seq": 2**63}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def _with_little_stack(work: Callable[[], object], frames_left: int = 40) -> object:
    """Run ``work`` this many frames below the recursion limit, as deep in a call stack
    as a worker's conversion might be."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back

    def down(n: int) -> object:
        return work() if n <= 0 else down(n - 1)

    return down(sys.getrecursionlimit() - depth - frames_left)


_DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "payload",
    [
        _DEEP,
        b"[" * 100_000,  # truncated: never closed
        # A lone surrogate sends the slow path to Python's parser, which recurses.
        _envelope([{**GOOD, "name": "\ud800"}, {**GOOD, "value": "X"}])
        .replace(b'"X"', _DEEP),
    ],
)
def test_deep_nesting_is_measured_before_any_parser_recurses(payload: bytes) -> None:
    # Python's json parser would recurse 100,000 levels here and raise RecursionError
    # (or, with a gc callback running meanwhile, abort the process).
    def decode() -> object:
        with pytest.raises(ContractError, match="JSON nests deeper than 32 levels"):
            decode_batch(payload)
        return None

    _with_little_stack(decode)


def test_a_counter_anomaly_nested_deep_costs_only_its_point() -> None:
    anomaly = {**GOOD, "kind": "event", "name": "counter_anomaly.good",
               "value": "[" * 100_000 + "]" * 100_000}

    def decode() -> object:
        return decode_batch(_envelope([GOOD, anomaly]))

    decoded = _with_little_stack(decode)
    assert isinstance(decoded, DecodedBatch)
    assert [r.index for r in decoded.rejected] == [1]
    assert "counter anomaly's value must be a JSON object" in decoded.rejected[0].reason
