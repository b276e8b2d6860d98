"""Cumulative part counters to increments (DESIGN §5), as pure logic.

Machines report running totals; the wire contract carries non-negative increments,
so that a lost value costs nothing (the next total carries the difference) and a
replay adds nothing at ingest (idempotent keys). Between two totals:

- ``total >= last``: the increment is the difference;
- ``total < last``, and going round the counter's range from ``last`` to ``total``
  is a short way (at most ``wrap_window``): the counter **wrapped** at ``2**bits``;
- ``total < last`` otherwise: the counter was **reset** (operator, PLC restart) to
  zero and has counted ``total`` since;
- ``total - last > max_increment`` (when set): a **jump** (counter preset, device
  replaced); nothing is counted and ``total`` becomes the new baseline, because
  inventing thousands of parts is worse than missing a few.

The first total after the collector starts is only a baseline: what the machine made
before is unknown. A reconnect keeps the baseline, so parts made while the server was
unreachable are counted when it answers again (at the time of that value).

The default wrap window is an eighth of the range: a 32-bit counter needs half a
billion parts between two reads before a wrap is mistaken for a reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Step(StrEnum):
    BASELINE = "baseline"
    COUNT = "count"
    WRAP = "wrap"
    RESET = "reset"
    JUMP = "jump"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class CounterStep:
    increment: int
    step: Step


@dataclass(slots=True)
class CumulativeCounter:
    """Turns the totals of one counter into increments."""

    bits: int = 32
    max_increment: int | None = None
    wrap_window: int | None = None
    last: int | None = None
    resets: int = field(default=0)
    wraps: int = field(default=0)
    jumps: int = field(default=0)

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    def _window(self) -> int:
        return self.wrap_window if self.wrap_window is not None else self.modulus // 8

    def update(self, total: int) -> CounterStep:
        if total < 0 or total >= self.modulus:
            # Not a value this counter can hold: keep the baseline, count nothing.
            return CounterStep(0, Step.INVALID)
        last, self.last = self.last, total
        if last is None:
            return CounterStep(0, Step.BASELINE)
        if total >= last:
            increment = total - last
            if self.max_increment is not None and increment > self.max_increment:
                self.jumps += 1
                return CounterStep(0, Step.JUMP)
            return CounterStep(increment, Step.COUNT)
        around = self.modulus - last + total
        if around <= self._window():
            self.wraps += 1
            return CounterStep(around, Step.WRAP)
        self.resets += 1
        return CounterStep(total, Step.RESET)


def as_total(value: object) -> int | None:
    """A counter value as read from OPC UA or JSON as an int, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
