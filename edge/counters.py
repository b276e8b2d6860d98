"""Cumulative part counters to increments (DESIGN §5), as pure logic.

Machines report running totals; the wire contract carries non-negative increments,
so that a lost value costs nothing (the next total carries the difference) and a
replay adds nothing at ingest (idempotent keys). A counter holds values
``0 .. modulus - 1``: the modulus is ``2**bits``, or the declared ``rollover`` for
counters that wrap at a decimal limit (``rollover: 1000``: 999 → 0). Between two
totals:

- ``total >= last``: the increment is the difference;
- ``total < last``, and going round the counter's range from ``last`` to ``total``
  is a short way (at most ``wrap_window``): the counter **wrapped** at the modulus
  (999 → 0 is one part, 998 → 3 five);
- ``total < last`` otherwise: the counter was **reset** (operator, PLC restart) to
  zero and has counted ``total`` since;
- a value outside ``0 .. modulus - 1`` is **invalid**: nothing is counted and the
  baseline is kept.

Whatever the increment, two guards decide whether it is believable; if not, nothing
is counted, ``total`` becomes the new baseline and the step is returned as an
anomaly for a person to accept or drop (the collectors send it as a
``counter_anomaly`` event, never as a count):

- ``max_increment`` (when set): a **jump** (counter preset, device replaced);
- the **plausibility** limit, when the device's ideal cycle time is known: in the
  time between the two totals the device cannot have made more than
  ``elapsed / ideal_cycle_s * factor + 1`` parts (factor default 2; the one part is
  slack for a part finishing at the edge of the window). Elapsed time is taken from
  the totals' own timestamps (source time, as stored); if they go backwards the
  limit cannot be judged and only ``max_increment`` applies.

The first total after the collector starts is only a baseline: what the machine made
before is unknown. **After a reconnect the counter is re-baselined too**
(:meth:`CumulativeCounter.rebaseline`) unless its history is known to be continuous:
the first total of a new OPC UA session counts nothing when the server restarted (or
its start time is unknown), or when the counter has no cycle time for the guard to
judge the gap with; likewise the first total of an MQTT device that was offline.
A server or controller that restarted may come back with any value (a restored
snapshot, a preset, another counter behind the same node); counting the difference
would add hundreds of parts that were never made. The price is that parts made while
a re-baselined device was unreachable are not counted: missing a few parts is better
than inventing many (docs/edge.md).

The default wrap window is an eighth of the range: a 32-bit counter needs half a
billion parts between two reads before a wrap is mistaken for a reset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

from zhizao.wire import COUNTER_ANOMALY_EVENT, COUNTER_EVENT, Point, PointKind, counter_event_name

DEFAULT_PLAUSIBILITY_FACTOR = 2.0


class Step(StrEnum):
    BASELINE = "baseline"
    REBASELINE = "rebaseline"
    COUNT = "count"
    WRAP = "wrap"
    RESET = "reset"
    JUMP = "jump"  # beyond max_increment
    IMPLAUSIBLE = "implausible"  # beyond what the cycle time allows in the elapsed time
    INVALID = "invalid"

    @property
    def is_anomaly(self) -> bool:
        return self in (Step.JUMP, Step.IMPLAUSIBLE)


@dataclass(frozen=True, slots=True)
class CounterStep:
    """What one total became: the increment to send and, for anomalies and
    re-baselines, what a person needs to judge it."""

    increment: int
    step: Step
    #: the total before this one (None for the first)
    previous: int | None = None
    #: the increment the totals imply, also when it is not counted (anomalies)
    implied: int = 0
    #: ms between the previous total and this one, when both had a time
    elapsed_ms: int | None = None
    #: the most parts the guard allowed for this step, when a guard applied
    limit: int | None = None


@dataclass(slots=True)
class CumulativeCounter:
    """Turns the totals of one counter into increments."""

    bits: int = 32
    #: the counter wraps to 0 at this value instead of at 2**bits
    rollover: int | None = None
    max_increment: int | None = None
    #: the device's ideal cycle time: enables the plausibility guard
    ideal_cycle_s: float | None = None
    factor: float = DEFAULT_PLAUSIBILITY_FACTOR
    wrap_window: int | None = None
    last: int | None = None
    last_ts: int | None = None
    resets: int = field(default=0)
    wraps: int = field(default=0)
    jumps: int = field(default=0)
    anomalies: int = field(default=0)
    _rebaseline: bool = field(default=False)

    def __post_init__(self) -> None:
        if self.rollover is not None and self.rollover < 2:
            raise ValueError(f"rollover must be at least 2, not {self.rollover}")
        if self.ideal_cycle_s is not None and self.ideal_cycle_s <= 0:
            raise ValueError(f"ideal_cycle_s must be positive, not {self.ideal_cycle_s}")
        if self.factor <= 0:
            raise ValueError(f"the plausibility factor must be positive, not {self.factor}")

    @property
    def modulus(self) -> int:
        return self.rollover if self.rollover is not None else 1 << self.bits

    def _window(self) -> int:
        return self.wrap_window if self.wrap_window is not None else self.modulus // 8

    def rebaseline(self) -> None:
        """The next total is a baseline again (a new session, a device back online)."""
        if self.last is not None:
            self._rebaseline = True

    def plausible_limit(self, elapsed_ms: int | None) -> int | None:
        """The most parts the device can have made in ``elapsed_ms``, if judgeable."""
        if self.ideal_cycle_s is None or elapsed_ms is None or elapsed_ms < 0:
            return None
        return int(elapsed_ms * self.factor // (self.ideal_cycle_s * 1000)) + 1

    def update(self, total: int, ts: int | None = None) -> CounterStep:
        """The step from the last total to ``total`` read at ``ts`` (epoch ms)."""
        if total < 0 or total >= self.modulus:
            # Not a value this counter can hold: keep the baseline, count nothing.
            return CounterStep(0, Step.INVALID, self.last)
        last, last_ts = self.last, self.last_ts
        self.last, self.last_ts = total, ts
        if last is None:
            return CounterStep(0, Step.BASELINE)
        if self._rebaseline:
            self._rebaseline = False
            return CounterStep(0, Step.REBASELINE, last)
        elapsed = ts - last_ts if ts is not None and last_ts is not None else None
        if total >= last:
            increment, step = total - last, Step.COUNT
        else:
            around = self.modulus - last + total
            if around <= self._window():
                increment, step = around, Step.WRAP
            else:
                increment, step = total, Step.RESET
        if self.max_increment is not None and increment > self.max_increment:
            self.jumps += 1
            self.anomalies += 1
            return CounterStep(0, Step.JUMP, last, increment, elapsed, self.max_increment)
        limit = self.plausible_limit(elapsed)
        if limit is not None and increment > limit:
            self.anomalies += 1
            return CounterStep(0, Step.IMPLAUSIBLE, last, increment, elapsed, limit)
        if step is Step.WRAP:
            self.wraps += 1
        elif step is Step.RESET:
            self.resets += 1
        return CounterStep(increment, step, last, increment, elapsed, limit)


def check_counter_keys(
    kind: PointKind,
    bits: int,
    rollover: int | None,
    ideal_cycle_s: float | None,
    max_increment: int | None,
) -> None:
    """The counter keys of a mapping (OPC UA node or MQTT field) fit together."""
    given = [
        key
        for key, value in (
            ("rollover", rollover),
            ("ideal_cycle_s", ideal_cycle_s),
            ("max_increment", max_increment),
        )
        if value is not None
    ]
    if given and kind is not PointKind.COUNT:
        raise ValueError(f"{', '.join(given)} only make sense for kind: count")
    if rollover is not None and rollover > 1 << bits:
        raise ValueError(
            f"rollover {rollover} does not fit a {bits}-bit counter (at most {1 << bits});"
            " raise counter_bits"
        )


def _json(document: dict[str, object]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def rebaseline_event(
    device: str, counter: str, *, ts: int, step: CounterStep, total: int, reason: str
) -> Point:
    """The ``counter.<name>`` event that records a re-baseline (nothing was counted)."""
    return Point(
        device=device,
        ts=ts,
        kind=PointKind.EVENT,
        name=counter_event_name(COUNTER_EVENT, counter),
        value=_json(
            {
                "counter": counter,
                "event": "rebaseline",
                "old_total": step.previous,
                "new_total": total,
                "reason": reason,
            }
        ),
        reason=reason[:256],
    )


def anomaly_event(
    device: str, counter: str, *, ts: int, step: CounterStep, total: int, guard: CumulativeCounter
) -> Point:
    """The ``counter_anomaly.<name>`` event for an increment that was not counted."""
    rule = "max_increment" if step.step is Step.JUMP else "plausibility"
    document: dict[str, object] = {
        "counter": counter,
        "increment": step.implied,
        "rule": rule,
        "previous_total": step.previous,
        "total": total,
        "elapsed_ms": step.elapsed_ms,
        "limit": step.limit,
    }
    if rule == "plausibility":
        document["ideal_cycle_s"] = guard.ideal_cycle_s
        document["factor"] = guard.factor
    return Point(
        device=device,
        ts=ts,
        kind=PointKind.EVENT,
        name=counter_event_name(COUNTER_ANOMALY_EVENT, counter),
        value=_json(document),
        reason=f"{counter} +{step.implied} exceeds the {rule} limit of {step.limit}",
    )


def as_total(value: object) -> int | None:
    """A counter value as read from OPC UA or JSON as an int, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
