"""The uplink wire contract between edge and platform (DESIGN §5, docs/wire-contract.md).

Topics::

    zhizao/v1/{enterprise}/edge/{edge_id}/data     QoS 1, an UplinkBatch
    zhizao/v1/{enterprise}/edge/{edge_id}/status   QoS 1, retained, an EdgeStatus
                                                   (birth on connect, death as the Will)

A batch carries points for one or more devices of one edge, with a per-edge
sequence number that only grows (also across edge restarts) so that ingest can
detect gaps and replays. Decoding is tolerant per point: a batch whose envelope is
sound but some of whose points are not yields the good points and a list of
rejected ones with their index and reason, so one bad point never costs the others.
The fast path validates the whole batch in one pass (pydantic-core parses the
JSON); only a batch that fails it is taken apart point by point.

The contract is closed over what storage can hold, so that no valid message can be
refused by the database (which would cost the message, or worse, stall the stream):
text carries no control characters (names none at all, free text only tab, line feed
and carriage return) and no lone surrogates; sequence numbers fit PostgreSQL's
``bigint``; metric numbers fit double precision; JSON nests at most
:data:`MAX_JSON_DEPTH` levels (a batch needs four).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import from_json

from zhizao.errors import ContractError, TopicError

CONTRACT_VERSION = 1
TOPIC_ROOT = "zhizao/v1"
#: 2000-01-01T00:00:00Z in ms: anything earlier is a clock that was never set.
MIN_TIMESTAMP_MS = 946_684_800_000
#: 2100-01-01T00:00:00Z in ms: the schema's hard upper bound; ingest applies a
#: tighter bound relative to its own clock.
MAX_TIMESTAMP_MS = 4_102_444_800_000
MAX_POINTS_PER_BATCH = 10_000
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
#: The largest sequence number storage holds (PostgreSQL ``bigint``).
MAX_SEQ = 2**63 - 1
#: The largest magnitude of a metric value: what double precision holds.
MAX_METRIC_MAGNITUDE = sys.float_info.max
#: JSON nesting beyond this is refused as a whole: a batch needs four levels (envelope,
#: points, point, and a value at most), and a deeper document costs recursion to read.
MAX_JSON_DEPTH = 32

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
#: Names (point names): no control character (Unicode Cc: C0, DEL, C1).
_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: Free text (raw, reason, event values, software): tab, line feed and carriage return
#: are kept, as alarm texts and error messages hold them; other control characters not.
_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
_CONTROL_PATTERNS = frozenset((_NAME_PATTERN, _TEXT_PATTERN))
#: Characters a reason quotes escaped: control characters and lone surrogates, which
#: a terminal would act on or PostgreSQL cannot store.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: For :func:`json_nests_deeper`: JSON strings (whose brackets do not nest), and a
#: translation keeping only brackets, as ( and ).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class Quality(StrEnum):
    """OPC UA status code class of a value."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class PointKind(StrEnum):
    METRIC = "metric"  # a process value: spindle speed, temperature
    STATE = "state"  # a state change: value is a StateClass
    COUNT = "count"  # a production count increment: name is good or reject
    EVENT = "event"  # connectivity (name "connectivity") or another device event


class StateClass(StrEnum):
    """The canonical state classes of DESIGN §7, with the labels reports show."""

    RUNNING = "RUNNING"
    IDLE = "IDLE"
    SETUP = "SETUP"
    UNPLANNED_STOP = "UNPLANNED_STOP"
    PLANNED_STOP = "PLANNED_STOP"
    OFFLINE = "OFFLINE"

    @property
    def label_zh(self) -> str:
        return STATE_LABELS[self]


STATE_LABELS: dict[StateClass, str] = {
    StateClass.RUNNING: "运行",
    StateClass.IDLE: "待机",
    StateClass.SETUP: "换型调整",
    StateClass.UNPLANNED_STOP: "故障停机",
    StateClass.PLANNED_STOP: "计划停机",
    StateClass.OFFLINE: "离线",
}


class CountName(StrEnum):
    GOOD = "good"
    REJECT = "reject"


class Connectivity(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


CONNECTIVITY_EVENT = "connectivity"
#: A counter re-baselined by the edge (``counter.good``, ``counter.reject``): value is a
#: JSON object text, e.g. ``{"counter": "good", "event": "rebaseline", ...}``.
COUNTER_EVENT = "counter"
#: An increment the edge did not count (``counter_anomaly.good``/``.reject``): value is a
#: JSON object text with at least ``counter`` and ``increment`` (docs/wire-contract.md).
COUNTER_ANOMALY_EVENT = "counter_anomaly"


def counter_event_name(event: str, counter: str) -> str:
    """``counter_anomaly.good``: one name per counter, so that the good and the reject
    event of one instant do not share a storage key (device, name, time)."""
    return f"{event}.{counter}"


Timestamp = Annotated[int, Field(ge=MIN_TIMESTAMP_MS, le=MAX_TIMESTAMP_MS, strict=True)]
DeviceCode = Annotated[str, Field(pattern=_SEGMENT_RE.pattern)]
#: A unified social credit code: 18 digits and capital letters (GB 32100).
EnterpriseCode = Annotated[str, Field(min_length=18, max_length=18, pattern=r"^[0-9A-Z]{18}$")]
PointName = Annotated[str, Field(min_length=1, max_length=128, pattern=_NAME_PATTERN)]
Text = Annotated[str, Field(pattern=_TEXT_PATTERN)]
ShortText = Annotated[str, Field(max_length=256, pattern=_TEXT_PATTERN)]
Seq = Annotated[int, Field(ge=0, le=MAX_SEQ, strict=True)]


class Point(BaseModel):
    """One observation of one device.

    ``value`` is a finite number for metric, a non-negative integer increment for
    count, a StateClass name for state and ``online``/``offline`` for a
    connectivity event (:func:`kind_problem`, checked when a batch is built or
    decoded). ``raw`` carries the source value a state was mapped from.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    device: DeviceCode
    ts: Timestamp
    kind: PointKind
    name: PointName
    value: float | int | Text | bool
    quality: Quality = Quality.GOOD
    raw: ShortText | None = None
    reason: ShortText | None = None


_COUNT_NAMES = frozenset(CountName.__members__.values())
_STATE_VALUES = frozenset(StateClass.__members__.values())


def _metric_problem(point: Point) -> str | None:
    if isinstance(point.value, str):
        return "a metric value must be a number or a boolean"
    if isinstance(point.value, float) and not math.isfinite(point.value):
        return "a metric value must be finite (no NaN or infinity)"
    if isinstance(point.value, int) and not (
        -MAX_METRIC_MAGNITUDE <= point.value <= MAX_METRIC_MAGNITUDE
    ):
        return "a metric value must be within double precision range (±1.8e308)"
    return None


def _count_problem(point: Point) -> str | None:
    if point.name not in _COUNT_NAMES:
        return "a count name must be 'good' or 'reject'"
    value = point.value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "a count value must be a non-negative integer increment"
    return None


def _state_problem(point: Point) -> str | None:
    if point.value not in _STATE_VALUES:
        return f"a state value must be one of {', '.join(StateClass)}"
    return None


def counter_anomaly_problem(name: str, value: object) -> str | None:
    """Why a ``counter_anomaly.*`` event cannot be judged later, or None.

    The platform accepts an anomaly by adding its increment to production, so the
    increment must be readable when it arrives, not when someone looks at it.
    """
    counter = name.removeprefix(f"{COUNTER_ANOMALY_EVENT}.")
    if counter not in _COUNT_NAMES:
        return f"a counter anomaly is named {COUNTER_ANOMALY_EVENT}.good or .reject"
    try:
        document = read_json(value) if isinstance(value, str) else None
    except ContractError:
        document = None
    if not isinstance(document, dict):
        return "a counter anomaly's value must be a JSON object as text"
    increment = document.get("increment")
    if isinstance(increment, bool) or not isinstance(increment, int) or increment < 0:
        return "a counter anomaly needs a non-negative integer increment"
    if document.get("counter") != counter:
        return f"a counter anomaly's counter must be {counter!r}, as in its name"
    return None


def _event_problem(point: Point) -> str | None:
    if point.name == CONNECTIVITY_EVENT and point.value not in ("online", "offline"):
        return "a connectivity event value must be 'online' or 'offline'"
    if point.name.startswith(f"{COUNTER_ANOMALY_EVENT}."):
        return counter_anomaly_problem(point.name, point.value)
    return None


_PROBLEMS = {
    PointKind.METRIC: _metric_problem,
    PointKind.COUNT: _count_problem,
    PointKind.STATE: _state_problem,
    PointKind.EVENT: _event_problem,
}


def kind_problem(point: Point) -> str | None:
    """Why a point's value does not fit its kind, or None.

    Checked once per batch in :class:`UplinkBatch`'s validator rather than per point:
    a per-point Python validator costs a third of the decode time of a batch, and
    ingest decodes hundreds of thousands of points a second.
    """
    return _PROBLEMS[point.kind](point)


class UplinkBatch(BaseModel):
    """A batch of points from one edge, published on ``.../edge/{edge_id}/data``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    enterprise: EnterpriseCode
    edge: DeviceCode
    seq: Seq
    sent_at: Timestamp
    points: Annotated[list[Point], Field(min_length=1, max_length=MAX_POINTS_PER_BATCH)]

    @model_validator(mode="after")
    def _values_fit_kinds(self) -> UplinkBatch:
        for index, point in enumerate(self.points):
            problem = kind_problem(point)
            if problem is not None:
                raise ValueError(f"points.{index}: {problem}")
        return self


class EdgeStatus(BaseModel):
    """Birth (retained, on connect) or death (the MQTT Will) of an edge.

    A Will is fixed when the edge connects, so its ``ts`` is the connect time;
    ingest records a death at the time it receives it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    enterprise: EnterpriseCode
    edge: DeviceCode
    status: Connectivity
    ts: Timestamp
    reason: ShortText | None = None
    last_seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None
    software: Annotated[str, Field(max_length=64, pattern=_TEXT_PATTERN)] | None = None


@dataclass(frozen=True, slots=True)
class RejectedPoint:
    index: int
    reason: str
    raw: Any


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    batch: UplinkBatch
    rejected: tuple[RejectedPoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Topic:
    enterprise: str
    edge: str
    channel: Literal["data", "status"]


def data_topic(enterprise: str, edge: str) -> str:
    return f"{TOPIC_ROOT}/{enterprise}/edge/{edge}/data"


def status_topic(enterprise: str, edge: str) -> str:
    return f"{TOPIC_ROOT}/{enterprise}/edge/{edge}/status"


def subscription_filter(channel: Literal["data", "status", "+"] = "+") -> str:
    return f"{TOPIC_ROOT}/+/edge/+/{channel}"


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if (
        len(parts) != 6
        or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT
        or parts[3] != "edge"
        or parts[5] not in ("data", "status")
    ):
        raise TopicError(f"not a zhizao uplink topic: {topic!r}", path="topic")
    if not _SEGMENT_RE.fullmatch(parts[2]) or not _SEGMENT_RE.fullmatch(parts[4]):
        raise TopicError(f"bad enterprise or edge segment in {topic!r}", path="topic")
    channel: Literal["data", "status"] = "data" if parts[5] == "data" else "status"
    return Topic(enterprise=parts[2], edge=parts[4], channel=channel)


def encode_batch(batch: UplinkBatch) -> bytes:
    return batch.model_dump_json(exclude_none=True).encode()


def encode_status(status: EdgeStatus) -> bytes:
    return status.model_dump_json(exclude_none=True).encode()


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (``\\x00``,
    ``\\ud800``): for reasons that quote what a sender sent, and for text columns,
    which PostgreSQL refuses with a NUL or a surrogate in them."""
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _control_pattern(error: Any) -> str | None:
    """The control-character pattern an error is about, if it is one of ours."""
    if error["type"] != "string_pattern_mismatch":
        return None
    pattern = (error.get("ctx") or {}).get("pattern")
    return pattern if pattern in _CONTROL_PATTERNS else None


def _message(error: Any) -> str:
    pattern = _control_pattern(error)
    if pattern == _NAME_PATTERN:
        return "must not contain control characters"
    if pattern == _TEXT_PATTERN:
        return "must not contain control characters other than tab, line feed, carriage return"
    ctx = error.get("ctx") or {}
    if error["type"] == "json_invalid" and "recursion limit" in str(ctx.get("error", "")):
        return f"JSON nests too deeply ({ctx['error']})"
    return str(error["msg"])


def _describe(error: ValidationError, prefix: str = "") -> str:
    errors = error.errors(include_url=False)
    # A control character in a value (a union: number, text or boolean) fails every
    # member; the text member's complaint is the one that says what is wrong.
    first = next((e for e in errors if _control_pattern(e)), errors[0])
    path = tuple(first["loc"])
    more = error.error_count() - 1
    if _control_pattern(first) and path and path[-1] == "constrained-str":
        path = path[:-1]
        more = sum(1 for e in errors if tuple(e["loc"])[: len(path)] != path)
    loc = ".".join(printable(str(part)) for part in (*([prefix] if prefix else []), *path))
    tail = f" (and {more} more)" if more else ""
    return f"{loc or 'payload'}: {_message(first)}{tail}"


def json_nests_deeper(text: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests deeper than ``limit``, found without parsing it.

    Python's json parser recurses once per level. 100,000 levels down it meets the
    recursion limit, and the RecursionError it raises there is best effort: with code
    running in between (a gc callback, say) the interpreter may abort the whole process
    ("Cannot recover from stack overflow"), which the fuzz suite met. So the depth is
    measured first, on the text: strings removed, brackets kept, and the innermost pairs
    taken away one level per pass (C speed, at most ``limit`` passes). Brackets that
    never pair (truncated JSON) count too, since a parser descends into each of them.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    skeleton = _JSON_STRING.sub(b"", raw).translate(_AS_PARENS, _NOT_BRACKETS)
    for _ in range(limit):
        if b"()" not in skeleton:
            break
        skeleton = skeleton.replace(b"()", b"")
    return b"()" in skeleton or skeleton.count(b"(") > limit


def _nests_deeper(document: Any, limit: int) -> bool:
    """Whether a parsed JSON document nests deeper than ``limit`` (without recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def read_json(text: bytes | str) -> Any:
    """JSON text as Python values; ContractError if it is not JSON or nests deeper than
    :data:`MAX_JSON_DEPTH` levels.

    pydantic-core's parser (the fast path's) goes first: it never recurses in Python
    and stops at 200 levels. It refuses lone surrogates, which the contract refuses per
    field (so that such a point costs only itself): for those, Python's parser, after
    :func:`json_nests_deeper` has measured the depth it would recurse to.
    """
    too_deep = ContractError(f"payload: JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        document = from_json(text)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise too_deep from None
        if json_nests_deeper(text):
            raise too_deep from None
        try:
            document = json.loads(text)
        except ValueError as again:
            raise ContractError(f"payload is not a JSON object: {again}") from again
    if _nests_deeper(document, MAX_JSON_DEPTH):
        raise too_deep
    return document


_ENVELOPE = TypeAdapter(dict[str, Any])


def decode_batch(payload: bytes) -> DecodedBatch:
    """Decode a data message; raise ContractError if the envelope itself is bad."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(
            f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES} byte limit"
        )
    try:
        return DecodedBatch(UplinkBatch.model_validate_json(payload))
    except ValidationError as whole:
        failure = whole
    # Slow path: find out whether the envelope or only some points are wrong.
    try:
        document = _ENVELOPE.validate_python(read_json(payload))
    except ValidationError as exc:
        raise ContractError(f"payload is not a JSON object: {exc}") from failure
    version = document.get("v")
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"contract version {version!r} is not supported (expected {CONTRACT_VERSION})",
            path="v",
        )
    raw_points = document.get("points")
    if not isinstance(raw_points, list):
        raise ContractError("points must be a list", path="points")
    good: list[Point] = []
    rejected: list[RejectedPoint] = []
    for index, raw in enumerate(raw_points):
        try:
            point = Point.model_validate(raw)
        except ValidationError as exc:
            rejected.append(RejectedPoint(index, _describe(exc, f"points.{index}"), raw))
            continue
        problem = kind_problem(point)
        if problem is None:
            good.append(point)
        else:
            rejected.append(RejectedPoint(index, f"points.{index}.value: {problem}", raw))
    if not good:
        if rejected:
            raise ContractError(f"no valid point; first: {rejected[0].reason}", path="points")
        raise ContractError(_describe(failure))
    try:
        batch = UplinkBatch.model_validate({**document, "points": good})
    except ValidationError as exc:
        raise ContractError(_describe(exc)) from exc
    return DecodedBatch(batch, tuple(rejected))


def decode_status(payload: bytes) -> EdgeStatus:
    try:
        return EdgeStatus.model_validate_json(payload)
    except ValidationError as exc:
        raise ContractError(_describe(exc)) from exc


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the contract, as published in docs/schema/."""
    return {
        "uplink-batch": UplinkBatch.model_json_schema(),
        "edge-status": EdgeStatus.model_json_schema(),
    }
