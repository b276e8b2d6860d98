"""What every source is to the runtime: a ``Collector`` and its ``SourceHealth``.

The seam between one ``sources:`` entry and the rest of the edge, as
:mod:`edge.sink` is the seam on the other side: a source's collector reads points,
the sink takes them. The implementations are :mod:`edge.opcua.collector` and
:mod:`edge.mqtt.collector`; :mod:`edge.source_types` maps a ``type`` to one.

A collector follows one lifecycle: validate once, then run, then close. It is built
from its validated config section (a pydantic model; errors name the file and key
before anything connects), ``run()`` reads until cancelled, reconnecting by itself,
and ``close()`` releases connections. Collectors are registered in an explicit map,
never loaded by string path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    #: topic filter → the broker's reason, for subscriptions it refused (ACL)
    subscriptions_refused: dict[str, str] = field(default_factory=dict)
    #: (device, counter) -> increments not counted (edge.counters anomalies)
    counter_anomalies: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (device, counter) -> re-baselines after a reconnect or a device restart
    counter_rebaselines: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, table: dict[tuple[str, str], int], device: str, counter: str) -> None:
        key = (device, counter)
        table[key] = table.get(key, 0) + 1


class Collector(Protocol):
    @property
    def health(self) -> SourceHealth: ...

    async def run(self, sink: Sink) -> None:
        """Read until cancelled; reconnect with backoff on failures."""
        ...

    async def close(self) -> None: ...
