"""Ranges and buckets of telemetry queries, and the labels telemetry is shown with.

Pure functions over plain values; the SQL is in :mod:`zhizao.storage.telemetry`.

A series or a count is read in fixed-width buckets. The caller gives either a width
(at least 1 s, whole seconds) or a number of points; a number of points becomes the
smallest "round" width (1, 2, 5, 10, 15, 30 s; 1, 2, 5, 10, 15, 30 min; 1, 2, 3, 6,
12 h; then whole days) that gives at most that many buckets, so that a chart of a day
in 500 points gets 5-minute buckets rather than 172.8-second ones.

Buckets are aligned to the local midnight (in the enterprise's zone) of the day the
range starts on, so hourly buckets are the local hours and daily buckets the local
days that KPIs use. The first and last bucket may therefore reach outside the range;
only data inside the range is counted in them, and a bucket is named by its aligned
start. (Alignment uses the zone's offset at that midnight: in a zone with daylight
saving, buckets of a day or more after a change are an hour off its local midnights.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from zhizao.errors import InvalidValue
from zhizao.wire import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, Connectivity, StateClass

#: The most buckets one series or count request returns.
MAX_POINTS = 5000
#: The longest range one request reads (the retention of raw metric points).
MAX_RANGE = timedelta(days=400)
MIN_BUCKET_S = 1
#: Intervals, events or rows listed by one request at most (a flag says when cut).
MAX_ROWS = 10_000

EARLIEST = datetime.fromtimestamp(MIN_TIMESTAMP_MS / 1000, UTC)
LATEST = datetime.fromtimestamp(MAX_TIMESTAMP_MS / 1000, UTC)

_DAY_S = 86_400
_ROUND_WIDTHS_S = (
    1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800,
    3600, 7200, 10_800, 21_600, 43_200,
    _DAY_S,
)  # fmt: skip


def check_instant(field: str, value: datetime) -> datetime:
    """An aware instant within the wire contract's bounds (2000 to 2100)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValue(field, value.isoformat(), "must carry a UTC offset (+08:00 or Z)")
    if not EARLIEST <= value <= LATEST:
        raise InvalidValue(field, value.isoformat(), "must be between 2000 and 2100")
    return value


def check_range(start: datetime, end: datetime, *, prefix: str = "query") -> None:
    """start < end, at most :data:`MAX_RANGE` apart; errors name the field."""
    check_instant(f"{prefix}.start", start)
    check_instant(f"{prefix}.end", end)
    if start >= end:
        raise InvalidValue(f"{prefix}.start", start.isoformat(), "must be before end")
    if end - start > MAX_RANGE:
        raise InvalidValue(
            f"{prefix}.end", end.isoformat(), f"must be at most {MAX_RANGE.days} days after start"
        )


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """Buckets ``first + i * width_s`` for ``i`` in ``range(count)``; ``origin`` is
    what ``date_bin`` aligns to (the local midnight of the start's day)."""

    width_s: int
    origin: datetime
    first: datetime
    count: int


def local_midnight(instant: datetime, zone: ZoneInfo) -> datetime:
    local = instant.astimezone(zone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _plan(start: datetime, end: datetime, width_s: int, origin: datetime) -> BucketPlan:
    offset = math.floor((start - origin).total_seconds() / width_s)
    first = origin + timedelta(seconds=offset * width_s)
    count = math.ceil((end - first).total_seconds() / width_s)
    return BucketPlan(width_s=width_s, origin=origin, first=first, count=count)


def round_width(seconds: float) -> int:
    """The smallest round width of at least ``seconds`` (module doc)."""
    for width in _ROUND_WIDTHS_S:
        if width >= seconds:
            return width
    return math.ceil(seconds / _DAY_S) * _DAY_S


def plan_buckets(
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    *,
    points: int | None = None,
    bucket: timedelta | None = None,
) -> BucketPlan:
    """The buckets for a range, from a number of points or a width (not both).

    Neither: :data:`MAX_POINTS` ``// 10`` points. Raises InvalidValue naming
    ``query.points`` or ``query.bucket``.
    """
    check_range(start, end)
    origin = local_midnight(start, zone)
    if points is not None and bucket is not None:
        raise InvalidValue("query.bucket", str(bucket), "give points or bucket, not both")
    if bucket is not None:
        seconds = bucket.total_seconds()
        if seconds < MIN_BUCKET_S or seconds != int(seconds):
            rule = f"must be a whole number of seconds, at least {MIN_BUCKET_S}"
            raise InvalidValue("query.bucket", seconds, rule)
        plan = _plan(start, end, int(seconds), origin)
        if plan.count > MAX_POINTS:
            raise InvalidValue(
                "query.bucket",
                int(seconds),
                f"gives {plan.count} buckets over this range, more than {MAX_POINTS}:"
                " use a wider bucket or a shorter range",
            )
        return plan
    wanted = MAX_POINTS // 10 if points is None else points
    if not 1 <= wanted <= MAX_POINTS:
        raise InvalidValue("query.points", wanted, f"must be between 1 and {MAX_POINTS}")
    width = round_width((end - start).total_seconds() / wanted)
    plan = _plan(start, end, width, origin)
    while plan.count > wanted:  # alignment added a partial bucket at an edge
        width = round_width(width + 1)
        plan = _plan(start, end, width, origin)
    return plan


def state_label(state: StateClass) -> str:
    """``运行 Running``, ``故障停机 Unplanned stop``."""
    return f"{state.label_zh} {state.value.replace('_', ' ').capitalize()}"


STATE_SOURCE_LABELS: dict[str, str] = {
    "state": "设备上报 Reported by the device",
    "connectivity": "设备断开 Device lost by its edge",
    "edge": "网关离线 Edge gateway offline",
    "none": "尚无状态 No state known yet",
}


CONNECTIVITY_LABELS: dict[Connectivity, str] = {
    Connectivity.ONLINE: "在线 Online",
    Connectivity.OFFLINE: "离线 Offline",
}


def connectivity_label(online: bool) -> str:
    return CONNECTIVITY_LABELS[Connectivity.ONLINE if online else Connectivity.OFFLINE]


SEQUENCE_LABELS: dict[str, str] = {
    "gap": "缺失 Gap",
    "late": "迟到补齐 Late arrival",
    "replay": "重复 Replay",
}
