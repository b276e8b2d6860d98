"""Where collectors put what they read.

A collector hands normalised :class:`zhizao.wire.Point`\\ s to a :class:`Sink`. In the
running edge the sink is the disk spool; in unit tests it is :class:`MemorySink`.
Device connectivity (OPC UA session up/down, MQTT device silent) travels through
the same sink as ``kind=event, name=connectivity`` points, so ordering with data is
kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from zhizao.wire import CONNECTIVITY_EVENT, Point, PointKind


class Sink(Protocol):
    async def put(self, points: Sequence[Point]) -> None:
        """Accept points; returns when they are safe (for the spool: on disk)."""
        ...


class MemorySink:
    """A sink that keeps everything in memory, for tests."""

    def __init__(self) -> None:
        self.points: list[Point] = []
        self._arrived = asyncio.Condition()

    async def put(self, points: Sequence[Point]) -> None:
        async with self._arrived:
            self.points.extend(points)
            self._arrived.notify_all()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Point]:
        """Wait until at least ``count`` points arrived (at most ``within`` seconds);
        returns all points so far."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.points) >= count)
        return list(self.points)

    def connectivity(self, device: str) -> list[str]:
        return [
            str(p.value)
            for p in self.points
            if p.device == device and p.kind is PointKind.EVENT and p.name == CONNECTIVITY_EVENT
        ]
