"""Raw telemetry of a device or an edge: latest values, series, state timelines,
production counts, connectivity, edge status and sequence gaps (docs/api.md,
"Telemetry 遥测").

Raw process values never leave the enterprise scope (DESIGN §8): every route first
refuses callers without an enterprise role (403, before anything is looked up, so a
cluster operator or analyst learns nothing, not even whether a device exists), then
finds the object through the kernel's scope fragment at ``Access.RAW``: outside the
scope it is as missing as a device that does not exist (the same 404).

Times in requests are ISO 8601 with a UTC offset (``2026-03-02T08:00:00+08:00`` or
``...Z``); a time without one is refused (422 naming the field) rather than read in
some zone, so a URL means the same instant whoever sends it and whatever the ledger
says the enterprise's zone is. Times in answers are in the enterprise's zone, with
its offset.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, BeforeValidator, Field

from platform_api.deps import ConnDep, CurrentPrincipal, cached_answer, require_raw
from platform_api.problems import not_found, problem_responses
from platform_api.schemas import LocalTime
from zhizao import telemetry as tel
from zhizao.storage import telemetry as store
from zhizao.storage.connection import Conn
from zhizao.wire import Quality, StateClass

router = APIRouter(prefix="/api/v1", tags=["telemetry 遥测"])

_RAW_RESPONSES = problem_responses(401, 403, 404, 422)

CreditCode = Annotated[
    str, Path(pattern=r"^[0-9A-HJ-NPQRTUWXY]{18}$", description="统一社会信用代码 credit code")
]
DeviceCode = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", description="device code")
]
EdgeId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", description="edge gateway id")
]
MetricName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        description="metric name; a '/' in it is sent percent-encoded, as %2F",
    ),
]

# A '+' that was not encoded as %2B arrives as a space: "08:00:00 08:00".
_SPACE_FOR_PLUS = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
_INSTANT_RULE = "must be an ISO 8601 time with a UTC offset, e.g. 2026-03-02T08:00:00+08:00"


def _instant(value: object) -> object:
    if not isinstance(value, str):
        return value
    text = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(_INSTANT_RULE) from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{_INSTANT_RULE} (a time without an offset is ambiguous)")
    return parsed


Instant = Annotated[datetime, BeforeValidator(_instant)]

_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?$")


def _width(value: object) -> object:
    """A bucket width in seconds (``600``) as well as ISO 8601 (``PT10M``)."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        try:
            return timedelta(seconds=float(value))
        except OverflowError as exc:
            raise ValueError("is too long a bucket") from exc
    return value


_START = "range start, ISO 8601 with offset (inclusive)"
_END = "range end, ISO 8601 with offset (exclusive)"
Start = Annotated[Instant, Query(description=_START, examples=["2026-03-02T08:00:00+08:00"])]
End = Annotated[Instant, Query(description=_END, examples=["2026-03-02T20:00:00+08:00"])]
OptStart = Annotated[
    Instant | None,
    Query(description=f"{_START}; default: 30 days before end", examples=["2026-03-01T00:00:00Z"]),
]
OptEnd = Annotated[
    Instant | None, Query(description=f"{_END}; default: now", examples=["2026-03-31T00:00:00Z"])
]
Points = Annotated[
    int | None,
    Query(
        ge=1,
        le=tel.MAX_POINTS,
        description=f"at most this many buckets (default {tel.MAX_POINTS // 10}); not with bucket",
    ),
]
Bucket = Annotated[
    Annotated[timedelta, BeforeValidator(_width)] | None,
    Query(
        description="bucket width: seconds (60) or ISO 8601 (PT1M); at least 1 s; not with points",
        examples=["PT5M"],
    ),
]
RowLimit = Annotated[
    int, Query(ge=1, le=tel.MAX_ROWS, description="rows listed at most (truncated says if cut)")
]

_DEFAULT_WINDOW = timedelta(days=30)
_DEFAULT_ROWS = 1000


# --- schemas -------------------------------------------------------------------------


class MetricLatest(BaseModel):
    metric: str = Field(examples=["spindle_speed"])
    time: LocalTime = Field(examples=["2026-03-02T09:41:07.250+08:00"])
    value: float = Field(examples=[8200.0])
    quality: Quality = Field(examples=["good"])


class DeviceLatest(BaseModel):
    device: str = Field(examples=["M01"])
    name: str = Field(examples=["一号加工中心"])
    line: str | None = Field(examples=["L1"])
    metrics: list[MetricLatest] = Field(
        description="the newest point of each metric the device has, by name",
        examples=[[{"metric": "spindle_speed", "time": "2026-03-02T09:41:07.250+08:00",
                    "value": 8200.0, "quality": "good"}]],
    )  # fmt: skip


class DeviceMetrics(DeviceLatest):
    enterprise: str = Field(examples=["91330206MA2AGQ1E35"])
    time_zone: str = Field(examples=["Asia/Shanghai"])


class EnterpriseLatest(BaseModel):
    enterprise: str = Field(examples=["91330206MA2AGQ1E35"])
    time_zone: str = Field(examples=["Asia/Shanghai"])
    total: int = Field(description="devices matching (line)", examples=[42])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])
    items: list[DeviceLatest] = Field(
        examples=[[{"device": "M01", "name": "一号加工中心", "line": "L1", "metrics": []}]]
    )


class _Ranged(BaseModel):
    enterprise: str = Field(examples=["91330206MA2AGQ1E35"])
    device: str = Field(examples=["M01"])
    time_zone: str = Field(examples=["Asia/Shanghai"])
    start: LocalTime = Field(examples=["2026-03-02T08:00:00+08:00"])
    end: LocalTime = Field(examples=["2026-03-02T20:00:00+08:00"])


class SeriesBucket(BaseModel):
    start: LocalTime = Field(
        description="the bucket's aligned start", examples=["2026-03-02T08:00:00+08:00"]
    )
    min: float = Field(examples=[7950.0])
    max: float = Field(examples=[8240.0])
    avg: float = Field(examples=[8180.5])
    count: int = Field(description="points in the bucket (and the range)", examples=[300])


class MetricSeries(_Ranged):
    metric: str = Field(examples=["spindle_speed"])
    bucket_s: int = Field(description="bucket width in seconds", examples=[300])
    include_bad: bool = Field(examples=[False])
    buckets: list[SeriesBucket] = Field(
        description="buckets with at least one point, in time order (empty ones are absent)",
        examples=[[{"start": "2026-03-02T08:00:00+08:00", "min": 7950.0, "max": 8240.0,
                    "avg": 8180.5, "count": 300}]],
    )  # fmt: skip


class StateInterval(BaseModel):
    start: LocalTime = Field(examples=["2026-03-02T08:00:00+08:00"])
    end: LocalTime = Field(examples=["2026-03-02T08:42:10+08:00"])
    seconds: float = Field(examples=[2530.0])
    state: StateClass = Field(examples=["RUNNING"])
    state_label: str = Field(examples=["运行 Running"])
    source: store.StateSource = Field(
        description="state: reported by the device; connectivity: its edge lost it; edge: the"
        " edge died; none: before the first of these (OFFLINE, as the KPIs count it)",
        examples=["state"],
    )
    source_label: str = Field(examples=["设备上报 Reported by the device"])
    since: LocalTime | None = Field(
        description="when the transition happened (before start for the one in force at"
        " start; null for none)",
        examples=["2026-03-02T07:15:00+08:00"],
    )
    reason: str | None = Field(examples=["program O1234 started"])
    raw: str | None = Field(
        description="the source value the state was mapped from", examples=["Executing"]
    )


class StateTotal(BaseModel):
    state: StateClass = Field(examples=["RUNNING"])
    state_label: str = Field(examples=["运行 Running"])
    seconds: float = Field(examples=[36000.0])


class StateTimeline(_Ranged):
    intervals: list[StateInterval] = Field(
        description="consecutive, clipped to the range; their seconds sum to end - start",
        examples=[[{"start": "2026-03-02T08:00:00+08:00", "end": "2026-03-02T08:42:10+08:00",
                    "seconds": 2530.0, "state": "RUNNING", "state_label": "运行 Running",
                    "source": "state", "source_label": "设备上报 Reported by the device",
                    "since": "2026-03-02T07:15:00+08:00", "reason": None, "raw": "Executing"}]],
    )  # fmt: skip
    totals: list[StateTotal] = Field(
        description="seconds per state over the whole range (also when truncated)",
        examples=[[{"state": "RUNNING", "state_label": "运行 Running", "seconds": 36000.0}]],
    )
    truncated: bool = Field(description="more intervals than limit", examples=[False])


class CountBucket(BaseModel):
    start: LocalTime = Field(examples=["2026-03-02T08:00:00+08:00"])
    good: int = Field(examples=[118])
    reject: int = Field(examples=[2])


class CountTotals(BaseModel):
    good: int = Field(examples=[1180])
    reject: int = Field(examples=[15])


class ProductionCounts(_Ranged):
    bucket_s: int = Field(examples=[3600])
    totals: CountTotals = Field(examples=[{"good": 1180, "reject": 15}])
    buckets: list[CountBucket] = Field(
        description="buckets with at least one count, in time order (empty ones are absent)",
        examples=[[{"start": "2026-03-02T08:00:00+08:00", "good": 118, "reject": 2}]],
    )


class ConnectivityEvent(BaseModel):
    time: LocalTime = Field(examples=["2026-03-02T10:12:30+08:00"])
    online: bool = Field(examples=[False])
    status_label: str = Field(examples=["离线 Offline"])
    reason: str | None = Field(examples=["OPC UA session lost: BadConnectionClosed"])
    edge_id: str | None = Field(examples=["edge-nb1"])


_EVENT_EXAMPLE = {"time": "2026-03-02T10:12:30+08:00", "online": False,
                  "status_label": "离线 Offline", "reason": "OPC UA session lost",
                  "edge_id": "edge-nb1"}  # fmt: skip


class ConnectivityHistory(_Ranged):
    current: ConnectivityEvent | None = Field(
        description="the device's latest event (its state now); null if it never had one",
        examples=[_EVENT_EXAMPLE],
    )
    at_start: ConnectivityEvent | None = Field(
        description="the event in force at start", examples=[_EVENT_EXAMPLE]
    )
    events: list[ConnectivityEvent] = Field(
        description="events of the range, in time order", examples=[[_EVENT_EXAMPLE]]
    )
    truncated: bool = Field(examples=[False])


class EdgeStatusRecord(BaseModel):
    time: LocalTime = Field(examples=["2026-03-02T07:58:00+08:00"])
    online: bool = Field(examples=[True])
    status_label: str = Field(examples=["在线 Online"])
    kind_label: str = Field(examples=["上线 Birth"])
    reason: str | None = Field(examples=["connected"])
    last_seq: int | None = Field(examples=[18341])
    software: str | None = Field(examples=["zhizao-edge 0.1.0"])


_STATUS_EXAMPLE = {"time": "2026-03-02T07:58:00+08:00", "online": True,
                   "status_label": "在线 Online", "kind_label": "上线 Birth", "reason": None,
                   "last_seq": 18341, "software": "zhizao-edge 0.1.0"}  # fmt: skip


class EdgeStatus(BaseModel):
    enterprise: str = Field(examples=["91330206MA2AGQ1E35"])
    edge_id: str = Field(examples=["edge-nb1"])
    name: str | None = Field(examples=["一号线网关"])
    time_zone: str = Field(examples=["Asia/Shanghai"])
    online: bool | None = Field(
        description="from the latest birth or death; null if the edge never reported",
        examples=[True],
    )
    status_label: str = Field(examples=["在线 Online"])
    since: LocalTime | None = Field(examples=["2026-03-02T07:58:00+08:00"])
    last_seen: LocalTime | None = Field(
        description="the later of the last status message and the last data message stored",
        examples=["2026-03-02T09:41:08+08:00"],
    )
    last_message_at: LocalTime | None = Field(examples=["2026-03-02T09:41:08+08:00"])
    software: str | None = Field(
        description="named by the edge's last birth (or Will) that named one",
        examples=["zhizao-edge 0.1.0"],
    )
    high_seq: int | None = Field(description="highest sequence number stored", examples=[18341])
    messages: int = Field(description="data messages stored", examples=[18342])
    start: LocalTime = Field(examples=["2026-02-01T00:00:00+08:00"])
    end: LocalTime = Field(examples=["2026-03-03T00:00:00+08:00"])
    history: list[EdgeStatusRecord] = Field(
        description="births and deaths of the range, in time order", examples=[[_STATUS_EXAMPLE]]
    )
    truncated: bool = Field(examples=[False])


class SequenceGap(BaseModel):
    first_seq: int = Field(examples=[18200])
    last_seq: int = Field(examples=[18204])
    missing: int = Field(examples=[5])
    detected_at: LocalTime = Field(examples=["2026-03-02T09:00:03+08:00"])


class SequenceEvent(BaseModel):
    kind: str = Field(description="gap, late or replay", examples=["gap"])
    kind_label: str = Field(examples=["缺失 Gap"])
    first_seq: int = Field(examples=[18200])
    last_seq: int = Field(examples=[18204])
    count: int = Field(examples=[5])
    detected_at: LocalTime = Field(examples=["2026-03-02T09:00:03+08:00"])


class SequenceGaps(BaseModel):
    enterprise: str = Field(examples=["91330206MA2AGQ1E35"])
    edge_id: str = Field(examples=["edge-nb1"])
    time_zone: str = Field(examples=["Asia/Shanghai"])
    high_seq: int | None = Field(examples=[18341])
    messages: int = Field(examples=[18342])
    missing: int = Field(description="sequence numbers never received, in all", examples=[5])
    open_gaps: list[SequenceGap] = Field(
        description="ranges still missing, oldest first",
        examples=[[{"first_seq": 18200, "last_seq": 18204, "missing": 5,
                    "detected_at": "2026-03-02T09:00:03+08:00"}]],
    )  # fmt: skip
    open_truncated: bool = Field(examples=[False])
    start: LocalTime = Field(examples=["2026-02-01T00:00:00+08:00"])
    end: LocalTime = Field(examples=["2026-03-03T00:00:00+08:00"])
    events: list[SequenceEvent] = Field(
        description="what ingest saw in the range (by detection time): gaps, late, replays",
        examples=[[{"kind": "late", "kind_label": "迟到补齐 Late arrival", "first_seq": 18202,
                    "last_seq": 18202, "count": 1, "detected_at": "2026-03-02T09:05:00+08:00"}]],
    )  # fmt: skip
    events_truncated: bool = Field(examples=[False])


# --- lookups -------------------------------------------------------------------------


async def _device(
    conn: Conn, principal: CurrentPrincipal, credit_code: str, code: str
) -> store.DeviceRef:
    require_raw(principal)
    device = await store.find_device(conn, principal.visibility, credit_code, code)
    if device is None:
        raise not_found("device", f"{credit_code}/{code}")
    return device


async def _edge(
    conn: Conn, principal: CurrentPrincipal, credit_code: str, edge_id: str
) -> store.EdgeRef:
    require_raw(principal)
    edge = await store.find_edge(conn, principal.visibility, credit_code, edge_id)
    if edge is None:
        raise not_found("edge gateway", f"{credit_code}/{edge_id}")
    return edge


def _zone(ref: store.EnterpriseRef) -> ZoneInfo:
    return ZoneInfo(ref.time_zone)


def _span(ref: store.EnterpriseRef, start: datetime, end: datetime) -> dict[str, Any]:
    """The fields every answer over a range starts with: whose it is, in which zone,
    and the range in that zone."""
    zone = _zone(ref)
    return {
        "enterprise": ref.credit_code,
        "time_zone": ref.time_zone,
        "start": _local(start, zone),
        "end": _local(end, zone),
    }


def _local(value: datetime, zone: ZoneInfo) -> datetime:
    return value.astimezone(zone)


def _maybe_local(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    return None if value is None else value.astimezone(zone)


def _latest(values: list[store.LatestValue], zone: ZoneInfo) -> list[MetricLatest]:
    return [
        MetricLatest(metric=v.metric, time=_local(v.time, zone), value=v.value, quality=v.quality)
        for v in values
    ]


async def _window(
    conn: Conn, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    if end is None:
        end = await store.db_now(conn)
    if start is None:
        start = end - _DEFAULT_WINDOW
    tel.check_range(start, end)
    return start, end


# --- routes --------------------------------------------------------------------------


@router.get(
    "/enterprises/{credit_code}/devices/{code}/metrics",
    response_model=DeviceMetrics,
    summary="设备指标与最新值 A device's metrics and their latest values",
    responses=_RAW_RESPONSES,
)
async def device_metrics(
    *, credit_code: CreditCode, code: DeviceCode, principal: CurrentPrincipal, conn: ConnDep
) -> DeviceMetrics:
    device = await _device(conn, principal, credit_code, code)
    zone = _zone(device.enterprise)
    latest = await store.latest_values(conn, principal.visibility, [device.id])
    return DeviceMetrics(
        enterprise=device.enterprise.credit_code,
        time_zone=device.enterprise.time_zone,
        device=device.code,
        name=device.name,
        line=device.line_code,
        metrics=_latest(latest.get(device.id, []), zone),
    )


@router.get(
    "/enterprises/{credit_code}/latest",
    response_model=EnterpriseLatest,
    summary="企业全部设备最新值 Latest values of an enterprise's devices",
    responses=_RAW_RESPONSES,
)
async def enterprise_latest(
    *,
    credit_code: CreditCode,
    principal: CurrentPrincipal,
    conn: ConnDep,
    line: Annotated[
        str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", description="line code")
    ] = None,
    metric: Annotated[
        list[str] | None,
        Query(max_length=100, description="only these metrics (repeat the parameter)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="devices per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> EnterpriseLatest:
    require_raw(principal)
    vis = principal.visibility
    enterprise = await store.find_enterprise(conn, vis, credit_code)
    if enterprise is None:
        raise not_found("enterprise", credit_code)
    zone = _zone(enterprise)
    page = await store.enterprise_devices(
        conn, vis, enterprise, line=line, limit=limit, offset=offset
    )
    latest = await store.latest_values(conn, vis, [d.id for d in page.devices], metric)
    return EnterpriseLatest(
        enterprise=enterprise.credit_code,
        time_zone=enterprise.time_zone,
        total=page.total,
        limit=limit,
        offset=offset,
        items=[
            DeviceLatest(device=d.code, name=d.name, line=d.line_code,
                         metrics=_latest(latest.get(d.id, []), zone))
            for d in page.devices
        ],
    )  # fmt: skip


@router.get(
    # ``:path``: a metric name may hold '/' (``spindle/temp``), sent as %2F or as is;
    # the path is matched decoded, so a plain segment would never reach the route.
    "/enterprises/{credit_code}/devices/{code}/metrics/{metric:path}/series",
    response_model=MetricSeries,
    summary="指标时序(降采样) A metric's series, downsampled",
    responses=_RAW_RESPONSES,
)
@cached_answer
async def metric_series(
    *,
    credit_code: CreditCode,
    code: DeviceCode,
    metric: MetricName,
    principal: CurrentPrincipal,
    conn: ConnDep,
    start: Start,
    end: End,
    points: Points = None,
    bucket: Bucket = None,
    include_bad: Annotated[
        bool, Query(description="also points of bad quality (left out by default)")
    ] = False,
) -> MetricSeries:
    device = await _device(conn, principal, credit_code, code)
    zone = _zone(device.enterprise)
    plan = tel.plan_buckets(start, end, zone, points=points, bucket=bucket)
    buckets = await store.metric_series(
        conn, principal.visibility, device, metric,
        start=start, end=end, plan=plan, include_bad=include_bad,
    )  # fmt: skip
    return MetricSeries(
        **_span(device.enterprise, start, end),
        device=device.code,
        metric=metric,
        bucket_s=plan.width_s,
        include_bad=include_bad,
        buckets=[
            SeriesBucket(start=_local(b.start, zone), min=b.min, max=b.max, avg=b.avg,
                         count=b.count)
            for b in buckets
        ],
    )  # fmt: skip


@router.get(
    "/enterprises/{credit_code}/devices/{code}/states",
    response_model=StateTimeline,
    summary="设备状态时间线 A device's state timeline",
    responses=_RAW_RESPONSES,
)
@cached_answer
async def device_states(
    *,
    credit_code: CreditCode,
    code: DeviceCode,
    principal: CurrentPrincipal,
    conn: ConnDep,
    start: Start,
    end: End,
    limit: RowLimit = _DEFAULT_ROWS,
) -> StateTimeline:
    device = await _device(conn, principal, credit_code, code)
    zone = _zone(device.enterprise)
    tel.check_range(start, end)
    timeline = await store.state_timeline(
        conn, principal.visibility, device, start=start, end=end, limit=limit
    )
    totals = [(state, timeline.totals[state]) for state in StateClass if state in timeline.totals]
    return StateTimeline(
        **_span(device.enterprise, timeline.start, timeline.end),
        device=device.code,
        intervals=[
            StateInterval(
                start=_local(i.start, zone), end=_local(i.end, zone), seconds=i.seconds,
                state=i.state, state_label=tel.state_label(i.state), source=i.source,
                source_label=tel.STATE_SOURCE_LABELS[i.source],
                since=_maybe_local(i.since, zone), reason=i.reason, raw=i.raw,
            )
            for i in timeline.intervals
        ],
        totals=[
            StateTotal(state=state, state_label=tel.state_label(state), seconds=seconds)
            for state, seconds in totals
        ],
        truncated=timeline.truncated,
    )  # fmt: skip


@router.get(
    "/enterprises/{credit_code}/devices/{code}/counts",
    response_model=ProductionCounts,
    summary="产量(良品/不良品)分桶 Production counts per bucket",
    responses=_RAW_RESPONSES,
)
@cached_answer
async def device_counts(
    *,
    credit_code: CreditCode,
    code: DeviceCode,
    principal: CurrentPrincipal,
    conn: ConnDep,
    start: Start,
    end: End,
    points: Points = None,
    bucket: Bucket = None,
) -> ProductionCounts:
    device = await _device(conn, principal, credit_code, code)
    zone = _zone(device.enterprise)
    plan = tel.plan_buckets(start, end, zone, points=points, bucket=bucket)
    buckets = await store.production_counts(
        conn, principal.visibility, device, start=start, end=end, plan=plan
    )
    return ProductionCounts(
        **_span(device.enterprise, start, end),
        device=device.code,
        bucket_s=plan.width_s,
        totals=CountTotals(good=sum(b.good for b in buckets),
                           reject=sum(b.reject for b in buckets)),
        buckets=[CountBucket(start=_local(b.start, zone), good=b.good, reject=b.reject)
                 for b in buckets],
    )  # fmt: skip


def _connectivity(
    event: store.ConnectivityEvent | None, zone: ZoneInfo
) -> ConnectivityEvent | None:
    if event is None:
        return None
    return ConnectivityEvent(
        time=_local(event.time, zone), online=event.online,
        status_label=tel.connectivity_label(event.online), reason=event.reason,
        edge_id=event.edge_id,
    )  # fmt: skip


@router.get(
    "/enterprises/{credit_code}/devices/{code}/connectivity",
    response_model=ConnectivityHistory,
    summary="设备联网历史 A device's connectivity history",
    responses=_RAW_RESPONSES,
)
@cached_answer
async def device_connectivity(
    *,
    credit_code: CreditCode,
    code: DeviceCode,
    principal: CurrentPrincipal,
    conn: ConnDep,
    start: Start,
    end: End,
    limit: RowLimit = _DEFAULT_ROWS,
) -> ConnectivityHistory:
    device = await _device(conn, principal, credit_code, code)
    zone = _zone(device.enterprise)
    tel.check_range(start, end)
    history = await store.connectivity_history(
        conn, principal.visibility, device, start=start, end=end, limit=limit
    )
    events = [e for e in (_connectivity(e, zone) for e in history.events) if e is not None]
    return ConnectivityHistory(
        **_span(device.enterprise, start, end),
        device=device.code,
        current=_connectivity(history.current, zone),
        at_start=_connectivity(history.at_start, zone),
        events=events,
        truncated=history.truncated,
    )


def _status_record(record: store.EdgeStatusRecord, zone: ZoneInfo) -> EdgeStatusRecord:
    return EdgeStatusRecord(
        time=_local(record.time, zone), online=record.online,
        status_label=tel.connectivity_label(record.online),
        kind_label="上线 Birth" if record.online else "下线 Death",
        reason=record.reason, last_seq=record.last_seq, software=record.software,
    )  # fmt: skip


@router.get(
    "/enterprises/{credit_code}/edges/{edge_id}/status",
    response_model=EdgeStatus,
    summary="边缘网关状态 An edge gateway's status and birth/death history",
    responses=_RAW_RESPONSES,
)
async def edge_status(
    *,
    credit_code: CreditCode,
    edge_id: EdgeId,
    principal: CurrentPrincipal,
    conn: ConnDep,
    start: OptStart = None,
    end: OptEnd = None,
    limit: RowLimit = _DEFAULT_ROWS,
) -> EdgeStatus:
    edge = await _edge(conn, principal, credit_code, edge_id)
    zone = _zone(edge.enterprise)
    start, end = await _window(conn, start, end)
    report = await store.edge_status(
        conn, principal.visibility, edge, start=start, end=end, limit=limit
    )
    current = report.current
    return EdgeStatus(
        **_span(edge.enterprise, start, end),
        edge_id=edge.edge_id,
        name=edge.name,
        online=None if current is None else current.online,
        status_label=(
            "无数据 Never reported" if current is None else tel.connectivity_label(current.online)
        ),
        since=None if current is None else _local(current.time, zone),
        last_seen=_maybe_local(report.last_seen, zone),
        last_message_at=_maybe_local(report.last_message_at, zone),
        software=report.software,
        high_seq=report.high_seq,
        messages=report.messages,
        history=[_status_record(r, zone) for r in report.history],
        truncated=report.truncated,
    )


@router.get(
    "/enterprises/{credit_code}/edges/{edge_id}/gaps",
    response_model=SequenceGaps,
    summary="边缘网关序号缺口 An edge gateway's sequence gaps",
    responses=_RAW_RESPONSES,
)
async def edge_gaps(
    *,
    credit_code: CreditCode,
    edge_id: EdgeId,
    principal: CurrentPrincipal,
    conn: ConnDep,
    start: OptStart = None,
    end: OptEnd = None,
    limit: RowLimit = _DEFAULT_ROWS,
) -> SequenceGaps:
    edge = await _edge(conn, principal, credit_code, edge_id)
    zone = _zone(edge.enterprise)
    start, end = await _window(conn, start, end)
    report = await store.sequence_gaps(
        conn, principal.visibility, edge, start=start, end=end, limit=limit
    )
    return SequenceGaps(
        **_span(edge.enterprise, start, end),
        edge_id=edge.edge_id,
        high_seq=report.high_seq,
        messages=report.messages,
        missing=report.open_missing,
        open_gaps=[
            SequenceGap(first_seq=g.first_seq, last_seq=g.last_seq, missing=g.size,
                        detected_at=_local(g.detected_at, zone))
            for g in report.open_gaps
        ],
        open_truncated=report.open_truncated,
        events=[
            SequenceEvent(kind=e.kind, kind_label=tel.SEQUENCE_LABELS.get(e.kind, e.kind),
                          first_seq=e.first_seq, last_seq=e.last_seq, count=e.size,
                          detected_at=_local(e.detected_at, zone))
            for e in report.events
        ],
        events_truncated=report.events_truncated,
    )  # fmt: skip
