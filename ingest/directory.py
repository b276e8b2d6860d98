"""Registry look-ups for authorisation, cached: edges, devices, metric names.

Metric names are cached per enterprise, and an enterprise may use at most
``max_metric_names`` distinct names (:func:`zhizao.storage.facts.enterprise_metric_ids`):
a name beyond that is refused, so neither the database nor these caches grow without
bound for an edge that puts a serial number or a timestamp into its names. Once an
enterprise is found full, its unknown names are refused without asking the database
for ``miss_retry_s`` (another worker may meanwhile have admitted a name it then knows).

Every point needs its edge's owner, its device's id and its metric's id; asking the
database per point would cost more than writing the point. The caches are filled
on first use. A miss (an edge or device not registered yet, or a device not on its
edge's list) is asked again at most every ``registry_miss_retry_s``, so a device added
to the ledger or to an edge's 服务设备 is picked up without a restart, while a flood of
unknown devices costs one query per interval. Known entries are re-read after
``registry_ttl_s`` in case an edge moved or stopped serving a device.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from zhizao.storage.connection import Conn
from zhizao.storage.facts import MetricAdmission, enterprise_metric_ids
from zhizao.storage.registry import device_refs, edge_owner, served_device_codes


@dataclass(frozen=True)
class EdgeRef:
    pk: int
    enterprise: str
    #: Codes of the devices the edge serves (the ledger's 服务设备); None when the
    #: ledger gives it no list, and then it may publish for any device of its enterprise.
    serves: frozenset[str] | None = None


T = TypeVar("T")


class ConnProvider(Protocol):
    """Runs a look-up on a live connection, retrying until the database answers."""

    async def run_lookup(self, stage: str, work: Callable[[Conn], Awaitable[T]]) -> T: ...


@dataclass
class _Devices:
    ids: dict[str, int] = field(default_factory=dict)
    loaded_at: float = float("-inf")


#: Default of ``IngestSettings.max_metric_names``.
DEFAULT_MAX_METRIC_NAMES = 2000


@dataclass(frozen=True)
class MetricLimit:
    """Why names of an enterprise were refused: it has ``used`` of ``limit`` names."""

    enterprise: str
    used: int
    limit: int

    def reason(self, name: str) -> str:
        return (
            f"metric name {name!r} refused: enterprise {self.enterprise} already has"
            f" {self.used} distinct metric names, the limit"
            f" (ZHIZAO_INGEST_MAX_METRIC_NAMES={self.limit})"
        )


class Directory:
    def __init__(
        self,
        db: ConnProvider,
        *,
        miss_retry_s: float = 5.0,
        ttl_s: float = 300.0,
        max_metric_names: int = DEFAULT_MAX_METRIC_NAMES,
    ) -> None:
        self._db = db
        self._miss_retry_s = miss_retry_s
        self._ttl_s = ttl_s
        self.max_metric_names = max_metric_names
        self._edges: dict[str, tuple[EdgeRef | None, float]] = {}
        self._devices: dict[str, _Devices] = {}
        #: Metric ids by name, per enterprise; read directly in the per-point loop.
        self._metrics: dict[str, dict[str, int]] = {}
        #: Enterprises found at their limit, and when.
        self._full: dict[str, tuple[MetricLimit, float]] = {}

    async def edge(self, edge_id: str) -> EdgeRef | None:
        now = time.monotonic()
        cached = self._edges.get(edge_id)
        if cached is not None:
            ref, at = cached
            age = now - at
            if age < (self._ttl_s if ref is not None else self._miss_retry_s):
                return ref
        return await self._load_edge(edge_id)

    async def refresh_edge(self, edge_id: str) -> EdgeRef | None:
        """Re-read after a device the edge does not serve, unless done < miss_retry_s ago."""
        cached = self._edges.get(edge_id)
        if cached is not None and time.monotonic() - cached[1] < self._miss_retry_s:
            return cached[0]
        return await self._load_edge(edge_id)

    async def _load_edge(self, edge_id: str) -> EdgeRef | None:
        async def fetch(conn: Conn) -> EdgeRef | None:
            owner = await edge_owner(conn, edge_id)
            if owner is None:
                return None
            serves = await served_device_codes(conn, owner[0])
            return EdgeRef(owner[0], owner[1], serves or None)

        ref = await self._db.run_lookup("lookup_edge", fetch)
        self._edges[edge_id] = (ref, time.monotonic())
        return ref

    async def devices(self, enterprise: str) -> dict[str, int]:
        """Device ids by code of an enterprise (possibly stale by up to the TTL)."""
        entry = self._devices.get(enterprise)
        if entry is None or time.monotonic() - entry.loaded_at >= self._ttl_s:
            entry = await self._load_devices(enterprise)
        return entry.ids

    async def refresh_devices(self, enterprise: str) -> dict[str, int]:
        """Re-read after a miss, unless that was done less than miss_retry_s ago."""
        entry = self._devices.get(enterprise)
        if entry is not None and time.monotonic() - entry.loaded_at < self._miss_retry_s:
            return entry.ids
        return (await self._load_devices(enterprise)).ids

    async def _load_devices(self, enterprise: str) -> _Devices:
        async def fetch(conn: Conn) -> dict[str, int]:
            refs = await device_refs(conn, enterprise)
            return {code: ref.id for code, ref in refs.items()}

        entry = _Devices(await self._db.run_lookup("lookup_devices", fetch), time.monotonic())
        self._devices[enterprise] = entry
        return entry

    def metrics(self, enterprise: str) -> dict[str, int]:
        """Metric ids by name that the enterprise may use (as far as known here)."""
        found = self._metrics.get(enterprise)
        if found is None:
            found = self._metrics[enterprise] = {}
        return found

    async def intern_metrics(self, enterprise: str, names: Iterable[str]) -> MetricLimit | None:
        """Make the enterprise's names known; the limit that refused some, if any.

        Names refused stay out of :meth:`metrics`.
        """
        cache = self.metrics(enterprise)
        wanted = [name for name in dict.fromkeys(names) if name not in cache]
        if not wanted:
            return None
        full = self._full.get(enterprise)
        if full is not None and time.monotonic() - full[1] < self._miss_retry_s:
            return full[0]
        limit = self.max_metric_names

        async def fetch(conn: Conn) -> MetricAdmission:
            return await enterprise_metric_ids(conn, enterprise, wanted, limit=limit)

        admission = await self._db.run_lookup("intern_metrics", fetch)
        cache.update(admission.ids)
        if not admission.refused:
            return None
        refusal = MetricLimit(enterprise, admission.used or limit, limit)
        self._full[enterprise] = (refusal, time.monotonic())
        return refusal
