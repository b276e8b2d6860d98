"""Where a figure comes from: this instance's own data, or the daily reports of a
federated cluster instance, and as of when (docs/federation.md); pure functions.

On the provincial instance a figure of a region may sum enterprises measured here
(``local``) and enterprises known only from the signed reports of cluster instances.
Every figure carries its :class:`Source` list, one per origin, so a reader can tell
which part of a rate rests on which instance's reports and how fresh they are:

* ``local``: as of the moment the figures were read (the local rollups are live);
* an instance: as of the newest of its reports counted (when the province received
  it) and the newest day those reports cover.

An enterprise in the local registry is always counted from local data, even when an
instance also reports it (the local registry wins; the report is kept, not counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo

LOCAL = "local"

#: What a federated enterprise cannot show: its devices never leave its cluster.
NO_DEVICES_NOTE = (
    "联邦上报只含企业日汇总，不含设备明细 federated reports hold an enterprise's daily"
    " aggregates only, no device"
)


@dataclass(frozen=True, slots=True)
class Origin:
    """What the figures of one federated enterprise over a period rest on."""

    instance: str
    received_at: datetime  # the newest report counted, when the province received it
    newest_day: date  # the newest day reported within the period
    days: int  # days of the period with a report


@dataclass(frozen=True, slots=True)
class Source:
    """One origin of a figure: ``local`` or an instance, with how many of the figure's
    enterprises it gives and as of when."""

    instance: str
    as_of: datetime
    enterprises: int
    newest_day: date | None = None  # federated: the newest day its reports cover
    days: int | None = None  # federated: the most days of the period one enterprise has

    @property
    def federated(self) -> bool:
        return self.instance != LOCAL


@dataclass(frozen=True, slots=True)
class Origins:
    """The federated enterprises of a query's period, and the time of its local read:
    every other enterprise is local."""

    local_as_of: datetime
    federated: Mapping[str, Origin] = field(default_factory=dict)

    def of(self, credit_code: str) -> Source:
        """The source of one enterprise's figure."""
        return self.sources([credit_code])[0]

    def sources(self, members: Iterable[str]) -> tuple[Source, ...]:
        """``local`` first (when any member is local), then each instance by id."""
        local = 0
        by_instance: dict[str, list[Origin]] = {}
        for credit_code in members:
            origin = self.federated.get(credit_code)
            if origin is None:
                local += 1
            else:
                by_instance.setdefault(origin.instance, []).append(origin)
        out = [Source(LOCAL, self.local_as_of, local)] if local else []
        for instance in sorted(by_instance):
            got = by_instance[instance]
            out.append(
                Source(instance, max(o.received_at for o in got), len(got),
                       max(o.newest_day for o in got), max(o.days for o in got))
            )  # fmt: skip
        return tuple(out)


def merge(sources: Iterable[Source]) -> tuple[Source, ...]:
    """The sources of several figures as one list (a report's cover): enterprise counts
    are the most any one figure has, times the newest."""
    by: dict[str, Source] = {}
    for s in sources:
        had = by.get(s.instance)
        if had is None:
            by[s.instance] = s
            continue
        by[s.instance] = Source(
            s.instance, max(had.as_of, s.as_of), max(had.enterprises, s.enterprises),
            _newest(had.newest_day, s.newest_day), _most(had.days, s.days),
        )  # fmt: skip
    return tuple(sorted(by.values(), key=lambda s: (s.federated, s.instance)))


def _newest(a: date | None, b: date | None) -> date | None:
    return b if a is None else a if b is None else max(a, b)


def _most(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def describe(sources: Iterable[Source], zone: tzinfo | None = None) -> str:
    """One line for a table cell or a CSV cell: ``local (2); CL-NB (1, 接收于 received
    2026-03-03T01:00:00+08:00, 数据至 data to 2026-03-02)``; times in ``zone`` (their own
    without one)."""
    parts = []
    for s in sources:
        if not s.federated:
            parts.append(f"{LOCAL} ({s.enterprises})")
            continue
        received = _in(s.as_of, zone).isoformat(timespec="seconds")
        day = "" if s.newest_day is None else f", 数据至 data to {s.newest_day}"
        parts.append(f"{s.instance} ({s.enterprises}, 接收于 received {received}{day})")
    return "; ".join(parts)


def plain(source: Source, zone: tzinfo | None = None) -> dict[str, object]:
    """A source as JSON-ready data, times ISO 8601 with their offset in ``zone`` (their
    own without one)."""
    return {
        "instance": source.instance,
        "as_of": _in(source.as_of, zone).isoformat(),
        "enterprises": source.enterprises,
        "newest_day": None if source.newest_day is None else source.newest_day.isoformat(),
        "days": source.days,
    }


def _in(instant: datetime, zone: tzinfo | None) -> datetime:
    return instant if zone is None else instant.astimezone(zone)
