"""Exponential backoff with jitter: the one helper every reconnect and restart uses.

The delay doubles (or grows by ``factor``) from ``initial`` up to ``maximum`` and is
multiplied by a random factor in ``jitter``, so that several workers (or a fleet of
edges) do not retry a recovering server in step. ``reset`` starts over after a success;
``attempt`` counts the failures since then (for log levels and health documents).

:meth:`Backoff.wait` sleeps the next delay but returns at once when ``stop`` is set, so
a service that is told to stop during a long pause does not sit out the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

#: The backoff's own generator: the process-wide one belongs to whoever seeds it (a
#: test framework replaying examples, say), and a reconnect must not disturb it.
_JITTER = random.Random()  # noqa: S311 - jitter, not cryptography


@dataclass
class Backoff:
    initial: float
    maximum: float
    factor: float = 2.0
    #: Each delay is multiplied by a uniform draw from this range.
    jitter: tuple[float, float] = (0.5, 1.0)
    attempt: int = field(default=0)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1:
            raise ValueError(
                f"backoff needs 0 < initial <= maximum and factor >= 1, got initial="
                f"{self.initial}, maximum={self.maximum}, factor={self.factor}"
            )

    def next_delay(self) -> float:
        """The pause before the next attempt; counts one more failure."""
        delay = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        low, high = self.jitter
        return float(delay * _JITTER.uniform(low, high))

    def reset(self) -> None:
        self.attempt = 0

    async def wait(self, stop: asyncio.Event | None = None) -> float:
        """Sleep the next delay, or until ``stop`` is set; returns the delay chosen."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        return delay
