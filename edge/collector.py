"""The lifecycle every collector follows: validate once, then run, then close.

A collector is built from its validated config section (a pydantic model; errors
name the file and key before anything connects), ``run()`` reads until cancelled,
reconnecting by itself, and ``close()`` releases connections. Collectors are
registered in an explicit map in :mod:`edge.collectors`, never loaded by string
path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge.sink import Sink


@dataclass
class SourceHealth:
    """What ``/health`` and the metrics say about one source."""

    name: str
    connected: bool = False
    points_read: int = 0
    errors: int = 0
    last_error: str | None = None


class Collector(Protocol):
    @property
    def health(self) -> SourceHealth: ...

    async def run(self, sink: Sink) -> None:
        """Read until cancelled; reconnect with backoff on failures."""
        ...

    async def close(self) -> None: ...
