"""State intervals split into buckets: the pure core of the rollup jobs.

A device's state is a step function of time: each state change holds until the next
one. Before the first known change, and wherever the collector said it lost the
device, the state is OFFLINE: no data is never assumed to be running (DESIGN §7).
:func:`split` sweeps that step function over [start, end), cuts it at the bucket
edges it is given (UTC hours for the rollup tables; local days or shifts for tests and
ad-hoc figures) and at the edges of scheduled time, and adds up, per bucket, the
components every KPI is a ratio of (:class:`Bucket`).

Times are integer epoch milliseconds so that splitting a period and adding the parts
back gives exactly the whole (the property tests check this).

Micro-stops: an IDLE or UNPLANNED_STOP episode (consecutive changes to the same state
merged) shorter than the threshold is a micro-stop, classified by the length of the
whole episode, not of the piece inside a bucket. An episode still open at the horizon
is judged by its length so far; the rollup job recomputes the buckets it touches
until it is longer than the threshold or closed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from zhizao.calendar import Schedule
from zhizao.wire import StateClass

HOUR_MS = 3_600_000
DEFAULT_MICRO_STOP_MS = 120_000

_STOPS = (StateClass.IDLE, StateClass.UNPLANNED_STOP)


@dataclass(frozen=True, slots=True)
class StatePoint:
    ts_ms: int
    state: StateClass


@dataclass(frozen=True, slots=True)
class CountPoint:
    ts_ms: int
    good: int = 0
    reject: int = 0


@dataclass(frozen=True, slots=True)
class Episode:
    start_ms: int
    end_ms: int
    state: StateClass

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(slots=True)
class Bucket:
    """Components of one device in one bucket, in milliseconds and pieces.

    ``*_ms`` are wall-clock time per state; ``sched_*_ms`` the part of it inside
    scheduled time; ``overtime_running_ms`` is running outside scheduled time.
    """

    running_ms: int = 0
    idle_ms: int = 0
    setup_ms: int = 0
    unplanned_stop_ms: int = 0
    planned_stop_ms: int = 0
    offline_ms: int = 0
    scheduled_ms: int = 0
    sched_running_ms: int = 0
    sched_idle_ms: int = 0
    sched_setup_ms: int = 0
    sched_unplanned_stop_ms: int = 0
    sched_planned_stop_ms: int = 0
    sched_offline_ms: int = 0
    overtime_running_ms: int = 0
    micro_idle_ms: int = 0
    micro_unplanned_ms: int = 0
    good: int = 0
    reject: int = 0

    def __add__(self, other: Bucket) -> Bucket:
        return Bucket(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Bucket)))

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(Bucket))


_WALL = {
    StateClass.RUNNING: "running_ms",
    StateClass.IDLE: "idle_ms",
    StateClass.SETUP: "setup_ms",
    StateClass.UNPLANNED_STOP: "unplanned_stop_ms",
    StateClass.PLANNED_STOP: "planned_stop_ms",
    StateClass.OFFLINE: "offline_ms",
}
_SCHED = {state: "sched_" + name for state, name in _WALL.items()}


def episodes(
    transitions: Iterable[StatePoint], start_ms: int, end_ms: int, horizon_ms: int
) -> list[Episode]:
    """The step function over [start, end) as episodes, each with its full extent.

    ``transitions`` must include the last change at or before ``start`` (else the
    state before the first change is OFFLINE) and, when known, the first change after
    ``end``, so that episodes crossing the edges have their true length. The last
    known state holds until ``horizon`` (the rollup watermark), OFFLINE after it.
    """
    # Two changes at one instant: the later in the caller's order wins (sorting is
    # stable), so a caller can rank a connectivity loss above a state.
    at: dict[int, StateClass] = {}
    for point in sorted(transitions, key=lambda p: p.ts_ms):
        at[point.ts_ms] = point.state
    merged: list[StatePoint] = []
    for ts in sorted(at):
        if not merged or merged[-1].state is not at[ts]:
            merged.append(StatePoint(ts, at[ts]))
    out: list[Episode] = []
    # Before the first change nothing is known: OFFLINE, with unknown (long) start.
    first_ts = merged[0].ts_ms if merged else horizon_ms
    if start_ms < first_ts:
        out.append(Episode(min(start_ms, first_ts), first_ts, StateClass.OFFLINE))
    for i, point in enumerate(merged):
        nxt = merged[i + 1].ts_ms if i + 1 < len(merged) else max(horizon_ms, point.ts_ms)
        if nxt > start_ms and point.ts_ms < end_ms and nxt > point.ts_ms:
            out.append(Episode(point.ts_ms, nxt, point.state))
    last = max(horizon_ms, merged[-1].ts_ms) if merged else horizon_ms
    if last < end_ms:
        if out and out[-1].state is StateClass.OFFLINE and out[-1].end_ms == last:
            out[-1] = Episode(out[-1].start_ms, end_ms, StateClass.OFFLINE)
        else:
            out.append(Episode(max(last, start_ms), end_ms, StateClass.OFFLINE))
    return out


def hour_edges(start_ms: int, end_ms: int) -> list[int]:
    """Starts of the UTC hours overlapping [start, end)."""
    first = start_ms - start_ms % HOUR_MS
    return list(range(first, end_ms, HOUR_MS))


@dataclass(slots=True)
class _Sweep:
    schedule: Schedule
    edges: Sequence[int]
    end_ms: int
    buckets: dict[int, Bucket] = field(default_factory=dict)

    def bucket(self, edge: int) -> Bucket:
        found = self.buckets.get(edge)
        if found is None:
            found = self.buckets[edge] = Bucket()
        return found

    def add(self, a: int, b: int, state: StateClass, micro: bool) -> None:
        """Add [a, b) in ``state`` to the buckets it crosses."""
        i = bisect.bisect_right(self.edges, a) - 1
        while a < b:
            edge = self.edges[i]
            limit = self.edges[i + 1] if i + 1 < len(self.edges) else self.end_ms
            piece_end = min(b, limit)
            dur = piece_end - a
            sched = self.schedule.overlap(a, piece_end)
            bucket = self.bucket(edge)
            setattr(bucket, _WALL[state], getattr(bucket, _WALL[state]) + dur)
            setattr(bucket, _SCHED[state], getattr(bucket, _SCHED[state]) + sched)
            if state is StateClass.RUNNING:
                bucket.overtime_running_ms += dur - sched
            elif micro:
                if state is StateClass.IDLE:
                    bucket.micro_idle_ms += sched
                else:
                    bucket.micro_unplanned_ms += sched
            a = piece_end
            i += 1


def split(
    transitions: Iterable[StatePoint],
    counts: Iterable[CountPoint],
    schedule: Schedule,
    start_ms: int,
    end_ms: int,
    *,
    edges: Sequence[int] | None = None,
    horizon_ms: int | None = None,
    micro_stop_ms: int = DEFAULT_MICRO_STOP_MS,
) -> dict[int, Bucket]:
    """Components of [start, end) per bucket, keyed by the bucket's start edge.

    ``edges`` are sorted bucket starts, the first at or before ``start`` (default:
    UTC hours); a bucket ends at the next edge or at ``end``. ``horizon`` is how far
    the data is known (default ``end``). Every bucket overlapping [start, end) is
    returned, also those with nothing but OFFLINE time.
    """
    if end_ms <= start_ms:
        return {}
    cuts = list(edges) if edges is not None else hour_edges(start_ms, end_ms)
    if not cuts or cuts[0] > start_ms:
        raise ValueError("the first bucket edge must be at or before the start")
    horizon = end_ms if horizon_ms is None else horizon_ms
    sweep = _Sweep(schedule, cuts, end_ms)
    for edge in cuts:
        if edge < end_ms:
            bucket = sweep.bucket(edge)
            lo = max(edge, start_ms)
            nxt = bisect.bisect_right(cuts, edge)
            hi = min(cuts[nxt] if nxt < len(cuts) else end_ms, end_ms)
            bucket.scheduled_ms += schedule.overlap(lo, hi)
    for ep in episodes(transitions, start_ms, end_ms, horizon):
        a, b = max(ep.start_ms, start_ms), min(ep.end_ms, end_ms)
        if a >= b:
            continue
        micro = ep.state in _STOPS and ep.duration_ms < micro_stop_ms
        sweep.add(a, b, ep.state, micro)
    for count in counts:
        if start_ms <= count.ts_ms < end_ms:
            i = bisect.bisect_right(cuts, count.ts_ms) - 1
            bucket = sweep.bucket(cuts[i])
            bucket.good += count.good
            bucket.reject += count.reject
    # Edges before ``start`` whose bucket lies wholly before it carry nothing.
    return {
        edge: bucket
        for edge, bucket in sweep.buckets.items()
        if _overlaps(cuts, edge, start_ms, end_ms)
    }


def _overlaps(cuts: Sequence[int], edge: int, start_ms: int, end_ms: int) -> bool:
    nxt = bisect.bisect_right(cuts, edge)
    hi = cuts[nxt] if nxt < len(cuts) else end_ms
    return hi > start_ms and edge < end_ms


def total(buckets: Iterable[Bucket]) -> Bucket:
    out = Bucket()
    for bucket in buckets:
        out = out + bucket
    return out


@dataclass(frozen=True, slots=True)
class Interval:
    """A state held over [start, end): how a simulator's ground truth is written down."""

    start_ms: int
    end_ms: int
    state: StateClass


def transitions_from_intervals(intervals: Iterable[Interval]) -> list[StatePoint]:
    """State changes equivalent to the intervals; a hole between them is OFFLINE.

    Lets a test compare the platform's figures with ground-truth intervals by running
    the same :func:`split` over both.
    """
    points: list[StatePoint] = []
    last_end: int | None = None
    for interval in sorted(intervals, key=lambda i: i.start_ms):
        if last_end is not None and interval.start_ms > last_end:
            points.append(StatePoint(last_end, StateClass.OFFLINE))
        points.append(StatePoint(interval.start_ms, interval.state))
        last_end = interval.end_ms if last_end is None else max(last_end, interval.end_ms)
    if last_end is not None:
        points.append(StatePoint(last_end, StateClass.OFFLINE))
    return points
