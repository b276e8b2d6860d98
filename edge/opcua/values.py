"""From one OPC UA DataValue to wire Points: pure functions, no server, no session.

The collector (:mod:`edge.opcua.collector`) hands every notification and every polled
value through here in three steps:

1. :func:`reading_of` keeps a value that can be used: the status code's severity is
   the quality (a bad status, or no value at all, is :class:`Rejected` with the status
   name), and the timestamp is the one the mapping chose (source, server or receipt,
   each falling back to the next).
2. By the mapping's kind, :func:`metric_point`, :func:`state_point` or
   :func:`count_points` makes the points. A metric is a float (a bool stays a bool);
   a state is looked up in the ``state_map`` (a LocalizedText by its text); a counter
   total goes through its :class:`edge.counters.CumulativeCounter`, the one piece of
   state here, owned by the collector and passed in.
3. What the collector does with a :class:`Rejected` (record it in ``node_errors``,
   count it in health, log it) is the collector's business, not this module's.

A metric value that is not a finite number raises, as ``float()`` and the wire
``Point`` do: ``TypeError`` for an array, a LocalizedText or a date; ``ValueError`` for
a string or byte string that is not a number, and for NaN and infinity (the Point
refuses them); ``OverflowError`` for an integer beyond double precision. The collector
catches exactly those (``ValueError``, ``TypeError``, ``ArithmeticError``) per value,
so one odd value is reported and the next one still flows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from edge.counters import (
    CounterStep,
    CumulativeCounter,
    Step,
    anomaly_event,
    as_total,
    rebaseline_event,
)
from edge.opcua.config import NodeMapping, TimestampChoice
from zhizao.wire import Point, PointKind, Quality


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a value was not forwarded, for ``node_errors`` and the log."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reading:
    """A DataValue worth converting: its raw value, quality and chosen timestamp."""

    raw: Any
    quality: Quality
    ts: int


@dataclass(frozen=True, slots=True)
class Counted:
    """What one counter total became: the step the counter took and the points to send."""

    total: int
    step: CounterStep
    points: tuple[Point, ...]


def quality_of(status: ua.StatusCode | None) -> Quality:
    """OPC UA status code → quality: the top two bits are the severity."""
    if status is None:
        return Quality.GOOD
    severity = int(status.value) >> 30
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.UNCERTAIN
    return Quality.BAD


def to_ms(moment: datetime | None) -> int | None:
    """A DataValue timestamp as epoch milliseconds."""
    if moment is None:
        return None
    if moment.tzinfo is None:  # asyncua hands out naive UTC on some paths
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def point_time(choice: TimestampChoice, value: ua.DataValue, receipt_ms: int) -> int:
    """The timestamp a mapping chose; a missing one falls back to the other, then receipt."""
    if choice is TimestampChoice.RECEIPT:
        return receipt_ms
    source = to_ms(value.SourceTimestamp)
    server = to_ms(value.ServerTimestamp)
    if choice is TimestampChoice.SERVER:
        return server or source or receipt_ms
    return source or server or receipt_ms


def reading_of(value: ua.DataValue, choice: TimestampChoice, receipt_ms: int) -> Reading | Rejected:
    """The usable part of a DataValue, or why it is not usable (the status code's name)."""
    quality = quality_of(value.StatusCode)
    raw = value.Value.Value if value.Value is not None else None
    if quality is Quality.BAD or raw is None:
        return Rejected(value.StatusCode.name if value.StatusCode is not None else "no value")
    return Reading(raw, quality, point_time(choice, value, receipt_ms))


def metric_point(mapping: NodeMapping, reading: Reading) -> Point:
    """A process value; raises for one that is not a finite number (module docstring)."""
    raw = reading.raw
    number = raw if isinstance(raw, bool) else float(raw)
    return Point(
        device=mapping.device,
        ts=reading.ts,
        kind=PointKind.METRIC,
        name=mapping.name,
        value=number,
        quality=reading.quality,
    )


def state_point(mapping: NodeMapping, reading: Reading) -> Point | Rejected:
    """A hand-mapped state: the raw value (a LocalizedText by its text) in the state_map."""
    raw = reading.raw
    state = mapping.state_for(getattr(raw, "Text", raw))
    if state is None:
        return Rejected(f"raw state {raw!r} is not in the state_map")
    return Point(
        device=mapping.device,
        ts=reading.ts,
        kind=PointKind.STATE,
        name=mapping.name,
        value=state.value,
        quality=reading.quality,
        raw=str(raw)[:256],
    )


def new_counter(mapping: NodeMapping, factor: float) -> CumulativeCounter:
    """The counter that turns a mapping's totals into increments (edge.counters)."""
    return CumulativeCounter(
        bits=mapping.counter_bits,
        rollover=mapping.rollover,
        max_increment=mapping.max_increment,
        ideal_cycle_s=mapping.ideal_cycle_s,
        factor=factor,
    )


def count_points(
    mapping: NodeMapping, counter: CumulativeCounter, reading: Reading, *, rebaseline_reason: str
) -> Counted | Rejected:
    """A counter total → an increment, a re-baseline event, an anomaly event, or nothing.

    ``counter`` takes the step (its baseline moves); ``rebaseline_reason`` is what the
    event says about why the counter was re-baselined.
    """
    raw = reading.raw
    total = as_total(raw)
    if total is None:
        return Rejected(f"counter value {raw!r} is not an integer")
    ts = reading.ts
    step = counter.update(total, ts)
    device, name = mapping.device, mapping.name
    if step.step is Step.INVALID:
        limit = (
            f"the rollover {mapping.rollover}"
            if mapping.rollover is not None
            else f"a {mapping.counter_bits}-bit counter"
        )
        return Rejected(f"counter total {total} does not fit {limit}; not counted")
    points: tuple[Point, ...] = ()
    if step.step is Step.REBASELINE:
        points = (
            rebaseline_event(device, name, ts=ts, step=step, total=total, reason=rebaseline_reason),
        )
    elif step.step.is_anomaly:
        points = (anomaly_event(device, name, ts=ts, step=step, total=total, guard=counter),)
    elif step.increment > 0:
        points = (
            Point(
                device=device,
                ts=ts,
                kind=PointKind.COUNT,
                name=name,
                value=step.increment,
                raw=str(total),
            ),
        )
    return Counted(total, step, points)
