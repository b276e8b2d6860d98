"""KPIs 指标: OEE with A, P, Q and the loss breakdown, 设备联网率 and 数控化率.

Every figure comes from the kernel's KPI functions (:mod:`zhizao.storage.kpi`), the
same the CLI prints, so the API and ``zhizao kpi`` agree to the last digit.

Access (DESIGN §8). KPIs are SUMMARY figures: every role sees them for the
enterprises in its scope. The caller's :meth:`~zhizao.access.Visibility.enterprise_filter`
goes into every query as the kernel's ``within`` restriction, so the database sums
only those enterprises: a cluster operator asking for the province by city gets its
cluster's figures under the province's and cities' codes, never the province's true
figure (responses say so: ``restricted``). A scope the caller cannot reach (a line of
another enterprise, a cluster or region without one of its enterprises) is a 404
identical to a missing one (:func:`zhizao.storage.kpi.in_reach`); grouped figures and
the evidence list hold nothing outside the scope.

Times. Days are the enterprises' local days (the rollups are per local day); start and
end instants are shown with their offset in the scope's zone (the enterprise's, or the
zone the enterprises share, else Asia/Shanghai: :func:`zhizao.storage.kpi.display_zone`).
An instant given without an offset is refused, not guessed.

Sources (docs/federation.md). On the provincial instance a figure may count
enterprises known only from cluster instances' signed daily reports; every figure
says where it comes from in ``sources``: ``local`` (this instance's data, as of the
answer) and each reporting instance with ``as_of`` (when its newest report counted was
received) and ``newest_day``. Device-level answers cannot hold such enterprises
(devices never leave their cluster): they list them under ``federated`` with a note
instead of showing nothing silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from platform_api.deps import ConnDep, CurrentPrincipal, Principal, cached_answer
from platform_api.problems import field_error, not_found, problem_responses
from platform_api.schemas import Limit, LocalTime, Offset, Page, local
from zhizao import codes
from zhizao.errors import InvalidValue
from zhizao.networking import (
    DEFAULT_CURRENT_WINDOW_H,
    Evidence,
    GroupBy,
    Kind,
    Method,
    RateFigure,
    Scope,
    group_keys,
)
from zhizao.oee import FLAG_LABELS, LOSS_LABELS, Flag, Oee
from zhizao.provenance import LOCAL, NO_DEVICES_NOTE, Source
from zhizao.registry import is_code
from zhizao.storage import kpi
from zhizao.storage.connection import Conn
from zhizao.storage.kpi import EnterpriseOee, Every, Level, OeeReport, OeeScope, Within

router = APIRouter(prefix="/api/v1/kpi", tags=["kpi 指标"])

#: The longest period one request may cover (days); longer ones are refused.
MAX_DAYS = 400
#: An interval not on whole hours is computed from the raw facts: kept short.
MAX_FACT_DAYS = 7
#: The longest window of the current networking rate, hours.
MAX_WINDOW_H = 24 * 31

_ERRORS = problem_responses(401, 404, 422)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


# --- labels -------------------------------------------------------------------------

_FLAG_EN: dict[Flag, str] = {
    Flag.PERFORMANCE_OVER_100: "performance above 100% (ideal cycle time too long, or counts)",
    Flag.COVERAGE_GAP: "offline time inside planned busy time (coverage gap)",
    Flag.MISSING_IDEAL_CYCLE_TIME: "a running device has no ideal cycle time",
    Flag.NO_PLANNED_TIME: "no planned busy time",
}

CALLER_SCOPE = "caller_scope"
NO_DEVICES = "no_devices"
_RATE_FLAGS: dict[str, str] = {
    CALLER_SCOPE: "只计入您权限范围内的企业 counts only the enterprises in your scope",
    NO_DEVICES: "无在役生产设备，无法给出比率 no production device in service: no rate",
}
_RESTRICTED = (
    "仅含您权限范围内的企业，不是该范围全部企业的数字"
    " figures of the enterprises in your scope only, not of every enterprise there"
)

_METHOD_EN = {
    Method.RATIO_OF_SUMS: "ratio of sums",
    Method.MEAN_OF_ENTERPRISE_RATES: "mean of enterprise rates",
}
_SCOPE_EN = {
    Scope.ALL: "all enterprises",
    Scope.ABOVE_DESIGNATED_SIZE: "above designated size",
    Scope.KEY_ENTERPRISE: "key enterprises",
}
_KIND_EN = {
    Kind.NETWORKING: "equipment networking rate",
    Kind.NC: "NC rate",
    Kind.NC_KEY_PROCESS: "key-process NC rate",
}
_REASON_EN = {
    "good_points": "good data that day",
    "online_reported": "reported online by its edge that day",
    "silent": "no good data and no online report that day",
    "not_production_equipment": "not production equipment: not in the denominator",
    "not_yet_commissioned": "not yet commissioned: not in the denominator",
    "decommissioned": "decommissioned: not in the denominator",
}
_STATUS_LABELS = {
    "counted": "计入 counted",
    "not_counted": "未计入 not counted",
    "excluded": "不计入分母 excluded",
}
_LEVEL_LABELS = {
    "device": "设备 device",
    "line": "产线 line",
    "enterprise": "企业 enterprise",
    "cluster": "产业集群 cluster",
    "province": "省 province",
    "city": "市 city",
    "county": "县(区) county",
}


# --- parameters -----------------------------------------------------------------------


class ScopeLevel(StrEnum):
    DEVICE = "device"
    LINE = "line"
    ENTERPRISE = "enterprise"
    CLUSTER = "cluster"
    REGION = "region"  # any of the three below, by its code
    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    SHIFT = "shift"
    CUSTOM = "custom"


LevelQ = Annotated[
    ScopeLevel, Query(description="device, line, enterprise, cluster, province, city, county")
]
CodeQ = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,
        description="device or line code, credit code, cluster code or region code",
    ),
]
EnterpriseQ = Annotated[
    str | None,
    Query(max_length=18, description="credit code of a device's or a line's enterprise"),
]
DateQ = Annotated[
    date | None,
    Query(alias="date", description="a local day (default: today in the scope's zone)"),
]
StartQ = Annotated[
    str | None,
    Query(
        max_length=40,
        description="custom period: a first day (2026-03-01) or an instant with offset"
        " (2026-03-02T08:00+08:00)",
    ),
]
EndQ = Annotated[
    str | None,
    Query(
        max_length=40,
        description="custom period: the last day (inclusive) or the end instant (exclusive)",
    ),
]
ShiftQ = Annotated[
    str | None, Query(max_length=100, description="period=shift: a shift name of the calendar")
]
GroupByQ = Annotated[
    GroupBy, Query(description="province, city, county, cluster, industry, enterprise")
]
RateScopeQ = Annotated[
    Scope, Query(description="all, above_designated_size (规上), key_enterprise (重点)")
]
RegionQ = Annotated[
    str | None, Query(max_length=6, description="only the enterprises of this region (GB/T 2260)")
]
ClusterQ = Annotated[
    str | None, Query(max_length=64, description="only this cluster's enterprises")
]
EveryQ = Annotated[Every, Query(description="one figure per day, week (Mon-Sun) or month")]


@contextmanager
def _query_errors() -> Iterator[None]:
    """A kernel rule broken by a query parameter: the field is that parameter."""
    try:
        yield
    except InvalidValue as exc:
        raise field_error(f"query.{exc.field}", exc.value, exc.rule) from exc


def _credit(value: str, field: str) -> str:
    try:
        return codes.validate_credit_code(value)
    except InvalidValue as exc:
        raise field_error(field, value, exc.rule) from exc


def _region(value: str, field: str) -> str:
    try:
        codes.region_level(value)
    except InvalidValue as exc:
        raise field_error(field, value, exc.rule) from exc
    return value.strip()


def _cluster(value: str, field: str) -> str:
    if not is_code(value):
        raise field_error(field, value, "must be a cluster code (letters, digits, '_', '.', '-')")
    return value


def oee_scope(level: ScopeLevel, code: str, enterprise: str | None) -> OeeScope:
    """The kernel's scope for the query parameters; errors name the parameter."""
    if level in (ScopeLevel.DEVICE, ScopeLevel.LINE):
        if enterprise is None:
            raise field_error(
                "query.enterprise", None, f"a {level} scope needs its enterprise (credit code)"
            )
        if not is_code(code):
            raise field_error("query.code", code, f"must be a {level} code")
        return OeeScope(Level(level.value), code, _credit(enterprise, "query.enterprise"))
    if enterprise is not None:
        raise field_error("query.enterprise", enterprise, "is given only for a device or a line")
    if level is ScopeLevel.ENTERPRISE:
        return OeeScope(Level.ENTERPRISE, _credit(code, "query.code"))
    if level is ScopeLevel.CLUSTER:
        return OeeScope(Level.CLUSTER, _cluster(code, "query.code"))
    region = _region(code, "query.code")
    actual = codes.region_level(region)
    if level is not ScopeLevel.REGION and actual.value != level.value:
        raise field_error("query.code", code, f"is a {actual} code, not a {level} code")
    return OeeScope(Level.REGION, region)


def _scope_key(scope: OeeScope) -> tuple[str, str]:
    if scope.level in (Level.DEVICE, Level.LINE):
        return str(scope.level), f"{scope.enterprise}/{scope.code}"
    if scope.level is Level.REGION:
        return "region", scope.code
    return str(scope.level), scope.code


async def reach(conn: Conn, principal: Principal, scope: OeeScope) -> None:
    """404, the same as for a missing object, unless the caller reaches ``scope``."""
    if not await kpi.in_reach(conn, scope, principal.visibility):
        raise not_found(*_scope_key(scope))


def visible(principal: Principal) -> Within | None:
    """The caller's SUMMARY scope as the kernel's restriction; None for an admin, who
    sees every enterprise (the kernel's unrestricted queries skip the filter joins,
    which cost a networking rate over a province 40 ms)."""
    if principal.is_admin:
        return None
    return principal.visibility.enterprise_filter("e")


async def area(
    conn: Conn, principal: Principal, region: str | None, cluster: str | None
) -> Within | None:
    """The caller's scope, narrowed to a region and/or a cluster it reaches."""
    if region is not None:
        region = _region(region, "query.region")
        await reach(conn, principal, OeeScope(Level.REGION, region))
    if cluster is not None:
        cluster = _cluster(cluster, "query.cluster")
        await reach(conn, principal, OeeScope(Level.CLUSTER, cluster))
    narrowed = kpi.area_filter(region, cluster)
    base = visible(principal)
    return narrowed if base is None else kpi.restrict(base, narrowed)


# --- periods --------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A resolved period: local days (first..last, inclusive) or instants [start, end)."""

    period: Period
    start: datetime
    end: datetime
    first: date | None = None
    last: date | None = None
    shift: str | None = None
    shift_day: date | None = None


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def day_span(period: Period, first: date, last: date, zone: ZoneInfo) -> Span:
    return Span(
        period, _midnight(first, zone), _midnight(last + timedelta(days=1), zone), first, last
    )


def _date_or_instant(value: str, field: str) -> date | datetime:
    text = value.strip()
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise field_error(field, value, "must be a date such as 2026-03-02") from exc
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as exc:
        raise field_error(
            field, value, "must be a date (2026-03-02) or an ISO 8601 instant with offset"
        ) from exc
    if instant.tzinfo is None:
        raise field_error(field, value, "needs a UTC offset, e.g. 2026-03-02T08:00+08:00")
    return instant


def custom_span(start: str | None, end: str | None, zone: ZoneInfo, *, instants: bool) -> Span:
    """A custom range: two days (inclusive), or two instants when ``instants`` allows."""
    if start is None:
        raise field_error("query.start", None, "period=custom needs start and end")
    if end is None:
        raise field_error("query.end", None, "period=custom needs start and end")
    s = _date_or_instant(start, "query.start")
    e = _date_or_instant(end, "query.end")
    if isinstance(s, datetime) and isinstance(e, datetime):
        if not instants:
            raise field_error(
                "query.start", start, "these figures are per local day: give days (2026-03-01)"
            )
        if e <= s:
            raise field_error("query.end", end, "must be after start")
        if e - s > timedelta(days=MAX_DAYS):
            raise field_error("query.end", end, f"the period may cover at most {MAX_DAYS} days")
        if not kpi.hour_aligned(s, e) and e - s > timedelta(days=MAX_FACT_DAYS):
            raise field_error(
                "query.end", end,
                f"an interval not on whole hours is computed from raw facts: at most"
                f" {MAX_FACT_DAYS} days (or start and end on whole hours)",
            )  # fmt: skip
        return Span(Period.CUSTOM, s, e)
    if isinstance(s, datetime) or isinstance(e, datetime):
        raise field_error(
            "query.end", end, "must be the same kind as start (two days or two instants)"
        )
    if e < s:
        raise field_error("query.end", end, "must not be before start")
    if (e - s).days + 1 > MAX_DAYS:
        raise field_error("query.end", end, f"the period may cover at most {MAX_DAYS} days")
    return day_span(Period.CUSTOM, s, e, zone)


def days_span(
    period: Period, on: date | None, start: str | None, end: str | None, zone: ZoneInfo
) -> tuple[Span, date, date]:
    """day, week or month around ``on`` (default today in ``zone``), or custom days:
    the span and its first and last day."""
    if period is Period.CUSTOM:
        span = custom_span(start, end, zone, instants=False)
    elif start is not None or end is not None:
        field, value = ("query.start", start) if start is not None else ("query.end", end)
        raise field_error(field, value, "is given only with period=custom")
    elif period is Period.SHIFT:
        raise field_error("query.period", "shift", "must be day, week, month or custom here")
    else:
        anchor = on or _wall_clock().astimezone(zone).date()
        span = day_span(period, *kpi.period_days(period.value, anchor), zone)
    if span.first is None or span.last is None:  # custom_span gave days: instants refused
        raise field_error("query.start", start, "must be a day such as 2026-03-01")
    return span, span.first, span.last


# --- response shapes ------------------------------------------------------------------


class FlagPublic(BaseModel):
    flag: str = Field(examples=["coverage_gap"])
    label: str = Field(
        examples=["计划时间内有离线时段(数据覆盖缺口) offline time inside planned busy time"]
    )


class LossPublic(BaseModel):
    loss: str = Field(examples=["breakdowns"])
    label: str = Field(examples=["故障停机损失 breakdowns"])
    label_zh: str = Field(examples=["故障停机损失"])
    label_en: str = Field(examples=["breakdowns"])
    seconds: float = Field(examples=[2820.0])
    share_of_pbt: float | None = Field(examples=[0.1119])


class SourcePublic(BaseModel):
    """Where (part of) a figure comes from."""

    instance: str = Field(
        description='"local" (this instance\'s own data) or the reporting cluster instance',
        examples=["CL-NB-MOLD"],
    )
    label: str = Field(examples=["联邦上报 federated reports of CL-NB-MOLD"])
    as_of: LocalTime = Field(
        description="local: when the figure was read; an instance: when the province received"
        " the newest of its reports counted",
        examples=["2026-03-03T01:00:12+08:00"],
    )
    enterprises: int = Field(description="enterprises of the figure from it", examples=[2])
    newest_day: date | None = Field(
        default=None, description="an instance: the newest local day its reports cover",
        examples=["2026-03-02"],
    )  # fmt: skip
    days: int | None = Field(
        default=None, description="an instance: days of the period reported (most of any"
        " one enterprise)", examples=[31],
    )  # fmt: skip


def sources_public(sources: Sequence[Source], zone: ZoneInfo) -> list[SourcePublic]:
    return [
        SourcePublic(
            instance=s.instance,
            label="本实例数据 this instance's own data" if s.instance == LOCAL
            else f"联邦上报 federated reports of {s.instance}",
            as_of=s.as_of.astimezone(zone), enterprises=s.enterprises, newest_day=s.newest_day,
            days=s.days,
        )
        for s in sources
    ]  # fmt: skip


class FederatedEnterprisePublic(BaseModel):
    """An enterprise known from federated reports only: in the figures, with no device."""

    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    enterprise_name: str | None = Field(default=None, examples=["宁波甲模具有限公司"])
    instance: str = Field(examples=["CL-NB-MOLD"])
    note: str = Field(examples=[NO_DEVICES_NOTE])


def federated_public(
    found: dict[str, str], names: dict[str, str]
) -> list[FederatedEnterprisePublic]:
    return [
        FederatedEnterprisePublic(enterprise=cc, enterprise_name=names.get(cc), instance=inst,
                                  note=NO_DEVICES_NOTE)
        for cc, inst in sorted(found.items())
    ]  # fmt: skip


class OeeResult(BaseModel):
    """ISO 22400-2 figures of summed components (ratios are never averaged)."""

    availability: float | None = Field(description="A = APT / PBT", examples=[0.8881])
    performance: float | None = Field(
        description="P = ideal cycle time × produced / APT", examples=[0.8611]
    )
    quality: float | None = Field(description="Q = good / produced", examples=[0.978])
    oee: float | None = Field(description="OEE = ideal time of good units / PBT", examples=[0.7479])
    quality_weighted: float | None = Field(
        description="ideal time of good / ideal time of produced (makes A × P × Q exact)",
        examples=[0.978],
    )
    scheduled_s: float = Field(description="计划时间 scheduled time", examples=[25200.0])
    planned_stop_s: float = Field(description="计划停机 planned stop in schedule", examples=[0.0])
    overtime_running_s: float = Field(
        description="计划外运行 running outside scheduled time", examples=[0.0]
    )
    planned_busy_s: float = Field(description="PBT 计划开动时间", examples=[25200.0])
    actual_production_s: float = Field(description="APT 实际开动时间", examples=[22380.0])
    offline_s: float = Field(description="离线 offline inside schedule", examples=[0.0])
    unrated_running_s: float = Field(
        description="APT of devices without an ideal cycle time", examples=[0.0]
    )
    produced: int = Field(examples=[19271])
    good: int = Field(examples=[18848])
    reject: int = Field(examples=[423])
    losses: list[LossPublic] = Field(description="损失分解: adds up to planned_busy_s")
    flags: list[FlagPublic] = Field(description="标注, never hidden")


def oee_result(result: Oee) -> OeeResult:
    c = result.components
    pbt = c.pbt_s
    losses = [
        LossPublic(
            loss=name.removesuffix("_s"), label=f"{zh} {en}", label_zh=zh, label_en=en,
            seconds=float(getattr(result.losses, name)),
            share_of_pbt=float(getattr(result.losses, name)) / pbt if pbt > 0 else None,
        )
        for name, (zh, en) in LOSS_LABELS.items()
    ]  # fmt: skip
    return OeeResult(
        availability=result.availability, performance=result.performance,
        quality=result.quality, oee=result.oee, quality_weighted=result.quality_weighted,
        scheduled_s=c.scheduled_s, planned_stop_s=c.planned_stop_s,
        overtime_running_s=c.overtime_running_s, planned_busy_s=pbt,
        actual_production_s=c.apt_s, offline_s=c.offline_s,
        unrated_running_s=c.unrated_running_s, produced=c.produced, good=c.good,
        reject=c.reject, losses=losses,
        flags=[FlagPublic(flag=f.value, label=f"{FLAG_LABELS[f]} {_FLAG_EN[f]}")
               for f in result.flags],
    )  # fmt: skip


class ScopePublic(BaseModel):
    level: str = Field(examples=["line"])
    level_label: str = Field(examples=["产线 line"])
    code: str = Field(examples=["L1"])
    enterprise: str | None = Field(default=None, examples=["91330203MA2NB0001X"])


def scope_public(scope: OeeScope) -> ScopePublic:
    level = (
        codes.region_level(scope.code).value if scope.level is Level.REGION else str(scope.level)
    )
    return ScopePublic(
        level=level, level_label=_LEVEL_LABELS[level], code=scope.code,
        enterprise=scope.enterprise,
    )  # fmt: skip


class DeviceOeePublic(BaseModel):
    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    device: str = Field(examples=["M01"])
    name: str = Field(examples=["加工中心 1"])
    result: OeeResult


class FederatedOeePublic(FederatedEnterprisePublic):
    """A federated enterprise's OEE (of the line, for a line scope), from its reports."""

    newest_day: date = Field(examples=["2026-03-02"])
    received_at: LocalTime = Field(examples=["2026-03-03T01:00:12+08:00"])
    result: OeeResult


def federated_oee_public(rows: Sequence[EnterpriseOee], zone: ZoneInfo) -> list[FederatedOeePublic]:
    return [
        FederatedOeePublic(
            enterprise=f.enterprise, enterprise_name=f.name, instance=f.origin.instance,
            note=NO_DEVICES_NOTE, newest_day=f.origin.newest_day,
            received_at=f.origin.received_at.astimezone(zone), result=oee_result(f.oee),
        )
        for f in rows
    ]  # fmt: skip


class PeriodPublic(BaseModel):
    period: str = Field(examples=["day"])
    first_day: date | None = Field(
        default=None, description="first local day (day periods)", examples=["2026-03-02"]
    )
    last_day: date | None = Field(
        default=None, description="last local day, inclusive", examples=["2026-03-02"]
    )
    shift: str | None = Field(default=None, examples=["白班"])
    shift_day: date | None = Field(
        default=None, description="the local day the shift starts on", examples=["2026-03-02"]
    )
    start: LocalTime = Field(examples=["2026-03-02T00:00:00+08:00"])
    end: LocalTime = Field(description="exclusive", examples=["2026-03-03T00:00:00+08:00"])
    time_zone: str = Field(examples=["Asia/Shanghai"])


def period_public(span: Span, zone: ZoneInfo) -> PeriodPublic:
    return PeriodPublic(
        period=span.period.value, first_day=span.first, last_day=span.last, shift=span.shift,
        shift_day=span.shift_day, start=span.start.astimezone(zone),
        end=span.end.astimezone(zone), time_zone=zone.key,
    )  # fmt: skip


class OeeReportPublic(BaseModel):
    scope: ScopePublic
    period: PeriodPublic
    source: str = Field(
        description="rollup_device_day, rollup_device_hour or facts (unaligned intervals)",
        examples=["rollup_device_day"],
    )
    restricted: bool = Field(
        description="the figures count only the enterprises in the caller's scope",
        examples=[False],
    )
    restricted_label: str | None = Field(default=None, examples=[_RESTRICTED])
    result: OeeResult
    devices: list[DeviceOeePublic] = Field(description="按设备 per production device")
    federated: list[FederatedOeePublic] = Field(
        default_factory=list,
        description="企业 known from federated reports only: in result, with no device",
    )
    sources: list[SourcePublic] = Field(description="数据来源 where the figures come from")


def _restricted(principal: Principal, scope: OeeScope) -> bool:
    """Whether figures of ``scope`` may leave out enterprises the caller cannot see (a
    device, line or enterprise in reach is always whole)."""
    return not principal.is_admin and scope.level in (Level.CLUSTER, Level.REGION)


def report_public(
    report: OeeReport, span: Span, zone: ZoneInfo, principal: Principal
) -> OeeReportPublic:
    restricted = _restricted(principal, report.scope)
    return OeeReportPublic(
        scope=scope_public(report.scope), period=period_public(span, zone), source=report.source,
        restricted=restricted, restricted_label=_RESTRICTED if restricted else None,
        result=oee_result(report.result),
        devices=[
            DeviceOeePublic(enterprise=d.enterprise, device=d.device, name=d.name,
                            result=oee_result(d.oee))
            for d in report.devices
        ],
        federated=federated_oee_public(report.federated, zone),
        sources=sources_public(report.sources, zone),
    )  # fmt: skip


# --- OEE routes -----------------------------------------------------------------------


@router.get("/oee", response_model=OeeReportPublic, summary="OEE 设备综合效率 OEE of a scope",
            responses=_ERRORS)  # fmt: skip
@cached_answer
async def get_oee(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    level: LevelQ,
    code: CodeQ,
    enterprise: EnterpriseQ = None,
    period: Annotated[Period, Query(description="day, week, month, shift or custom")] = Period.DAY,
    on: DateQ = None,
    shift: ShiftQ = None,
    start: StartQ = None,
    end: EndQ = None,
) -> OeeReportPublic:
    """A, P, Q, OEE, time components, the loss breakdown and flags, and the same per
    production device. Periods: the day, ISO week or month around ``date``; a shift of
    the calendar on ``date``; or ``custom`` from ``start`` to ``end`` (two days,
    inclusive, or two instants with offsets, end exclusive)."""
    scope = oee_scope(level, code, enterprise)
    await reach(conn, principal, scope)
    within = visible(principal)
    zone = await kpi.display_zone(conn, scope, within=within)
    if period is not Period.SHIFT and shift is not None:
        raise field_error("query.shift", shift, "is given only with period=shift")
    if period is Period.SHIFT and (start is not None or end is not None):
        field, value = ("query.start", start) if start is not None else ("query.end", end)
        raise field_error(field, value, "is given only with period=custom")
    with _query_errors():
        if period is Period.SHIFT:
            span = await _shift_span(conn, scope, on, shift, zone)
        elif period is Period.CUSTOM:
            span = custom_span(start, end, zone, instants=True)
        else:
            span, _, _ = days_span(period, on, start, end, zone)
        if span.first is not None and span.last is not None:
            report = await kpi.oee_for_days(conn, scope, span.first, span.last, within=within)
        else:
            report = await kpi.oee_for_interval(conn, scope, span.start, span.end, within=within)
    return report_public(report, span, zone, principal)


async def _shift_span(
    conn: Conn, scope: OeeScope, on: date | None, shift: str | None, zone: ZoneInfo
) -> Span:
    if shift is None:
        raise field_error("query.shift", None, "period=shift needs the shift's name")
    day = on or _wall_clock().astimezone(zone).date()
    windows = await kpi.scope_shift_windows(conn, scope, day)
    for name, s, e in windows:
        if name == shift:
            return Span(Period.SHIFT, s, e, shift=name, shift_day=day)
    known = ", ".join(name for name, _, _ in windows) or "none (no calendar, or a day off)"
    raise field_error(
        "query.shift", shift, f"has no shift of that name on {day.isoformat()}; shifts: {known}"
    )


class OeePoint(BaseModel):
    period: PeriodPublic
    result: OeeResult
    sources: list[SourcePublic]


class OeeSeriesPublic(BaseModel):
    scope: ScopePublic
    every: Every = Field(examples=["day"])
    period: PeriodPublic
    restricted: bool = Field(examples=[False])
    restricted_label: str | None = Field(default=None, examples=[_RESTRICTED])
    points: list[OeePoint] = Field(description="one per day, week or month, clipped to the range")


@router.get("/oee/series", response_model=OeeSeriesPublic,
            summary="OEE 历史序列 OEE per day, week or month", responses=_ERRORS)  # fmt: skip
@cached_answer
async def get_oee_series(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    level: LevelQ,
    code: CodeQ,
    enterprise: EnterpriseQ = None,
    every: EveryQ = Every.DAY,
    period: Annotated[Period, Query(description="week, month or custom (days)")] = Period.MONTH,
    on: DateQ = None,
    start: StartQ = None,
    end: EndQ = None,
) -> OeeSeriesPublic:
    """One OEE figure per day, week or month over the week or month around ``date``, or
    from ``start`` to ``end`` (days). Each point equals GET /kpi/oee for its days; a
    week or month cut by the range covers the range's days only (see its period)."""
    scope = oee_scope(level, code, enterprise)
    await reach(conn, principal, scope)
    within = visible(principal)
    zone = await kpi.display_zone(conn, scope, within=within)
    span, first, last = days_span(period, on, start, end, zone)
    with _query_errors():
        reports = await kpi.oee_series(conn, scope, first, last, every, within=within)
    restricted = _restricted(principal, scope)
    return OeeSeriesPublic(
        scope=scope_public(scope), every=every, period=period_public(span, zone),
        restricted=restricted, restricted_label=_RESTRICTED if restricted else None,
        points=[
            OeePoint(
                period=period_public(day_span(Period(every.value), _d(r.start), _d(r.end), zone),
                                     zone),
                result=oee_result(r.result),
                sources=sources_public(r.sources, zone),
            )
            for r in reports
        ],
    )  # fmt: skip


def _d(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


class ShiftOeePublic(BaseModel):
    shift: str = Field(examples=["夜班"])
    start: LocalTime = Field(examples=["2026-03-02T20:00:00+08:00"])
    end: LocalTime = Field(examples=["2026-03-03T08:00:00+08:00"])
    source: str = Field(examples=["rollup_device_hour"])
    result: OeeResult


class ShiftsPublic(BaseModel):
    scope: ScopePublic
    day: date = Field(description="the local day the shifts start on", examples=["2026-03-02"])
    time_zone: str = Field(examples=["Asia/Shanghai"])
    shifts: list[ShiftOeePublic] = Field(
        description="every shift starting that day; empty without a calendar or on a day off"
    )


@router.get("/oee/shifts", response_model=ShiftsPublic,
            summary="按班次对比 OEE of every shift of a day", responses=_ERRORS)  # fmt: skip
@cached_answer
async def get_oee_shifts(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    level: Annotated[ScopeLevel, Query(description="device, line or enterprise")],
    code: CodeQ,
    enterprise: EnterpriseQ = None,
    on: DateQ = None,
) -> ShiftsPublic:
    """ "Why did OEE drop on night shift?": A, P, Q, OEE, offline time and flags of every
    shift starting on ``date`` under the line's or the enterprise's calendar."""
    scope = oee_scope(level, code, enterprise)
    if scope.level in (Level.CLUSTER, Level.REGION):
        raise field_error("query.level", level.value, "shifts belong to one enterprise:"
                          " device, line or enterprise")  # fmt: skip
    await reach(conn, principal, scope)
    within = visible(principal)
    zone = await kpi.display_zone(conn, scope, within=within)
    day = on or _wall_clock().astimezone(zone).date()
    with _query_errors():
        rows = await kpi.oee_by_shift(conn, scope, day, within=within)
    return ShiftsPublic(
        scope=scope_public(scope), day=day, time_zone=zone.key,
        shifts=[
            ShiftOeePublic(shift=name, start=_instant(r.start, zone), end=_instant(r.end, zone),
                           source=r.source, result=oee_result(r.result))
            for name, r in rows
        ],
    )  # fmt: skip


def _instant(value: date | datetime, zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(zone)
    return _midnight(value, zone)


# --- networking and NC rates ----------------------------------------------------------


class RateFigurePublic(BaseModel):
    group_by: GroupBy = Field(examples=["city"])
    group: str = Field(description="region, cluster, industry or credit code", examples=["330200"])
    group_name: str | None = Field(default=None, examples=["宁波市"])
    method: Method = Field(examples=["ratio_of_sums"])
    method_label: str = Field(examples=["合计口径(分子、分母分别加总后相除) ratio of sums"])
    scope: Scope = Field(examples=["all"])
    scope_label: str = Field(examples=["全部企业 all enterprises"])
    rate: float | None = Field(examples=[0.75])
    numerator: float = Field(
        description="device(-day)s; for the mean method the sum of enterprise rates",
        examples=[9.0],
    )
    denominator: float = Field(
        description="device(-day)s; for the mean method the number of enterprises",
        examples=[12.0],
    )
    enterprises: int = Field(
        description="enterprises of the group (in the caller's scope) with devices counted",
        examples=[2],
    )
    flags: list[FlagPublic]
    sources: list[SourcePublic] = Field(
        description="数据来源 where the counted enterprises' figures come from"
    )


class RatesPublic(BaseModel):
    kind: Kind = Field(examples=["networking"])
    kind_label: str = Field(examples=["设备联网率 equipment networking rate"])
    group_by: GroupBy = Field(examples=["city"])
    scope: Scope = Field(examples=["all"])
    scope_label: str = Field(examples=["全部企业 all enterprises"])
    region: str | None = Field(default=None, examples=["330000"])
    cluster: str | None = Field(default=None, examples=[None])
    period: PeriodPublic
    restricted: bool = Field(examples=[True])
    restricted_label: str | None = Field(default=None, examples=[_RESTRICTED])
    items: list[RateFigurePublic] = Field(description="both methods for every group")


class CurrentRatesPublic(RatesPublic):
    at: LocalTime = Field(
        description="the window ends here", examples=["2026-03-02T15:00:00+08:00"]
    )
    since: LocalTime = Field(examples=["2026-03-01T14:00:00+08:00"])
    window_h: float = Field(examples=[25.0])
    federated: list[FederatedEnterprisePublic] = Field(
        default_factory=list,
        description="enterprises known from federated daily reports only: not in these"
        " figures (seeing a device within hours needs its data)",
    )


def _label(zh: str, en: str) -> str:
    return f"{zh} {en}"


def rate_items(
    figures: Sequence[RateFigure], names: dict[str, str], principal: Principal, zone: ZoneInfo
) -> list[RateFigurePublic]:
    out: list[RateFigurePublic] = []
    for f in figures:
        flags = []
        if not principal.is_admin and f.group_by is not GroupBy.ENTERPRISE:
            flags.append(CALLER_SCOPE)
        if f.rate is None:
            flags.append(NO_DEVICES)
        out.append(RateFigurePublic(
            group_by=f.group_by, group=f.group, group_name=names.get(f.group),
            method=f.method, method_label=_label(f.method.label_zh, _METHOD_EN[f.method]),
            scope=f.scope, scope_label=_label(f.scope.label_zh, _SCOPE_EN[f.scope]),
            rate=f.rate, numerator=f.numerator, denominator=f.denominator,
            enterprises=f.enterprises,
            flags=[FlagPublic(flag=x, label=_RATE_FLAGS[x]) for x in flags],
            sources=sources_public(f.sources, zone),
        ))  # fmt: skip
    return out


async def _names(conn: Conn, group_by: GroupBy, figures: Sequence[RateFigure]) -> dict[str, str]:
    return await kpi.group_names(conn, group_by, only={f.group for f in figures})


def rates_public(
    kind: Kind, *, group_by: GroupBy, scope: Scope, region: str | None, cluster: str | None,
    period: PeriodPublic, items: list[RateFigurePublic], principal: Principal,
) -> RatesPublic:  # fmt: skip
    restricted = not principal.is_admin
    return RatesPublic(
        kind=kind, kind_label=_label(kind.label_zh, _KIND_EN[kind]), group_by=group_by,
        scope=scope, scope_label=_label(scope.label_zh, _SCOPE_EN[scope]), region=region,
        cluster=cluster, period=period, restricted=restricted,
        restricted_label=_RESTRICTED if restricted else None, items=items,
    )  # fmt: skip


@router.get("/networking", response_model=RatesPublic,
            summary="设备联网率 Equipment networking rate", responses=_ERRORS)  # fmt: skip
@cached_answer
async def get_networking(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    period: Annotated[Period, Query(description="day, week, month or custom (days)")] = Period.DAY,
    on: DateQ = None,
    start: StartQ = None,
    end: EndQ = None,
    group_by: GroupByQ = GroupBy.CITY,
    scope: RateScopeQ = Scope.ALL,
    region: RegionQ = None,
    cluster: ClusterQ = None,
) -> RatesPublic:
    """Networked / in-service production devices (a day) or device-days (a period),
    per group, as a ratio of sums and as the mean of enterprise rates, over the
    enterprises of the caller's scope (narrowed to ``region`` and ``cluster``)."""
    within = await area(conn, principal, region, cluster)
    zone = await kpi.display_zone(conn, within=within)
    span, first, last = days_span(period, on, start, end, zone)
    figures = await kpi.networking_rates(conn, first, last, group_by, scope, within=within)
    items = rate_items(figures, await _names(conn, group_by, figures), principal, zone)
    return rates_public(
        Kind.NETWORKING, group_by=group_by, scope=scope, region=region, cluster=cluster,
        period=period_public(span, zone), items=items, principal=principal,
    )  # fmt: skip


class RatesPoint(BaseModel):
    period: PeriodPublic
    items: list[RateFigurePublic]


class RatesSeriesPublic(BaseModel):
    kind: Kind = Field(examples=["networking"])
    kind_label: str = Field(examples=["设备联网率 equipment networking rate"])
    every: Every = Field(examples=["day"])
    group_by: GroupBy = Field(examples=["city"])
    scope: Scope = Field(examples=["all"])
    scope_label: str = Field(examples=["全部企业 all enterprises"])
    region: str | None = Field(default=None, examples=["330200"])
    cluster: str | None = Field(default=None, examples=[None])
    period: PeriodPublic
    restricted: bool = Field(examples=[False])
    restricted_label: str | None = Field(default=None, examples=[None])
    points: list[RatesPoint] = Field(description="one per day, week or month, clipped to the range")


@router.get("/networking/series", response_model=RatesSeriesPublic,
            summary="设备联网率历史序列 Networking rate per day, week or month",
            responses=_ERRORS)  # fmt: skip
@cached_answer
async def get_networking_series(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    every: EveryQ = Every.DAY,
    period: Annotated[Period, Query(description="week, month or custom (days)")] = Period.MONTH,
    on: DateQ = None,
    start: StartQ = None,
    end: EndQ = None,
    group_by: GroupByQ = GroupBy.CITY,
    scope: RateScopeQ = Scope.ALL,
    region: RegionQ = None,
    cluster: ClusterQ = None,
) -> RatesSeriesPublic:
    """The networking rate of every day, week or month of the period; each point
    equals GET /kpi/networking for its days."""
    within = await area(conn, principal, region, cluster)
    zone = await kpi.display_zone(conn, within=within)
    span, first, last = days_span(period, on, start, end, zone)
    series = await kpi.networking_series(
        conn, first, last, every, group_by, scope=scope, within=within
    )
    groups = {f.group for _, _, figures in series for f in figures}
    names = await kpi.group_names(conn, group_by, only=groups)
    restricted = not principal.is_admin
    return RatesSeriesPublic(
        kind=Kind.NETWORKING,
        kind_label=_label(Kind.NETWORKING.label_zh, _KIND_EN[Kind.NETWORKING]),
        every=every, group_by=group_by, scope=scope,
        scope_label=_label(scope.label_zh, _SCOPE_EN[scope]), region=region, cluster=cluster,
        period=period_public(span, zone), restricted=restricted,
        restricted_label=_RESTRICTED if restricted else None,
        points=[
            RatesPoint(period=period_public(day_span(Period(every.value), first, last, zone), zone),
                       items=rate_items(figures, names, principal, zone))
            for first, last, figures in series
        ],
    )  # fmt: skip


@router.get("/networking/current", response_model=CurrentRatesPublic,
            summary="当前设备联网率 Current networking rate (devices seen in a window)",
            responses=_ERRORS)  # fmt: skip
@cached_answer
async def get_networking_current(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    window_h: Annotated[
        float, Query(gt=0, le=MAX_WINDOW_H, description="hours before `at` a device counts in")
    ] = DEFAULT_CURRENT_WINDOW_H,
    at: Annotated[
        datetime | None,
        Query(description="where the window ends, an instant with offset (default now)"),
    ] = None,
    group_by: GroupByQ = GroupBy.CITY,
    scope: RateScopeQ = Scope.ALL,
    region: RegionQ = None,
    cluster: ClusterQ = None,
) -> CurrentRatesPublic:
    """Devices seen (a good point, or reported online) within ``window_h`` hours before
    ``at`` / production devices in service on that local date."""
    if at is not None and at.tzinfo is None:
        raise field_error(
            "query.at", at.isoformat(), "needs a UTC offset, e.g. 2026-03-02T15:00+08:00"
        )
    now = at or _wall_clock()
    within = await area(conn, principal, region, cluster)
    zone = await kpi.display_zone(conn, within=within)
    figures = await kpi.current_networking_rates(
        conn, now, group_by, scope, window_h, within=within
    )
    items = rate_items(figures, await _names(conn, group_by, figures), principal, zone)
    since = now - timedelta(hours=window_h)
    day = now.astimezone(zone).date()
    period = PeriodPublic(
        period="current", first_day=day, last_day=day, start=since.astimezone(zone),
        end=now.astimezone(zone), time_zone=zone.key,
    )  # fmt: skip
    base = rates_public(
        Kind.NETWORKING, group_by=group_by, scope=scope, region=region, cluster=cluster,
        period=period, items=items, principal=principal,
    )  # fmt: skip
    left_out = await kpi.federated_enterprises(conn, within=within)
    return CurrentRatesPublic(
        **base.model_dump(), at=now.astimezone(zone), since=since.astimezone(zone),
        window_h=window_h,
        federated=[
            FederatedEnterprisePublic(
                enterprise=cc, enterprise_name=None, instance=inst, note=NOT_CURRENT_NOTE)
            for cc, inst in left_out.items()
        ],
    )  # fmt: skip


@router.get("/nc", response_model=RatesPublic, summary="数控化率 NC rate", responses=_ERRORS)
@cached_answer
async def get_nc(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    on: DateQ = None,
    key_process: Annotated[
        bool, Query(description="关键工序数控化率: key-process devices only")
    ] = False,
    group_by: GroupByQ = GroupBy.CITY,
    scope: RateScopeQ = Scope.ALL,
    region: RegionQ = None,
    cluster: ClusterQ = None,
) -> RatesPublic:
    """NC devices / in-service production devices on a local day (of key-process
    devices only with ``key_process``), per group, both methods."""
    within = await area(conn, principal, region, cluster)
    zone = await kpi.display_zone(conn, within=within)
    span, day, _ = days_span(Period.DAY, on, None, None, zone)
    figures = await kpi.nc_rates(conn, day, group_by, scope, key_process=key_process, within=within)
    kind = Kind.NC_KEY_PROCESS if key_process else Kind.NC
    items = rate_items(figures, await _names(conn, group_by, figures), principal, zone)
    return rates_public(
        kind, group_by=group_by, scope=scope, region=region, cluster=cluster,
        period=period_public(span, zone), items=items, principal=principal,
    )  # fmt: skip


# --- evidence -------------------------------------------------------------------------


class EvidencePublic(BaseModel):
    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    enterprise_name: str | None = Field(default=None, examples=["宁波甲模具有限公司"])
    device: str = Field(examples=["M01"])
    name: str = Field(examples=["设备M01"])
    status: str = Field(description="counted, not_counted or excluded", examples=["counted"])
    status_label: str = Field(examples=["计入 counted"])
    reason: str = Field(examples=["good_points"])
    reason_label: str = Field(examples=["当日有有效数据 good data that day"])
    good_points: int = Field(examples=[1440])
    online_reported: bool = Field(examples=[False])
    last_seen: LocalTime | None = Field(
        description="last good point or online report up to the day's end, in the"
        " enterprise's zone",
        examples=["2026-03-02T23:59:00+08:00"],
    )
    time_zone: str = Field(examples=["Asia/Shanghai"])


NOT_CURRENT_NOTE = (
    "联邦上报为日汇总，不计入当前联网率 federated reports are daily: not in the current rate"
)


class EvidencePage(Page[EvidencePublic]):
    day: date = Field(examples=["2026-03-02"])
    group_by: GroupBy | None = Field(default=None, examples=["city"])
    group: str | None = Field(default=None, examples=["330200"])
    scope: Scope = Field(examples=["all"])
    counted: int = Field(description="计入 in the numerator (whole list)", examples=[3])
    not_counted: int = Field(description="未计入 in the denominator only", examples=[1])
    excluded: int = Field(description="不计入分母 not in the denominator", examples=[1])
    rate: float | None = Field(
        description="counted / (counted + not_counted): the group's daily rate of the"
        " devices listed (of local enterprises only)", examples=[0.75],
    )  # fmt: skip
    federated: list[FederatedEnterprisePublic] = Field(
        default_factory=list,
        description="enterprises of the group known from federated reports only: counted in"
        " the figures, but their devices are not listed (they never leave their cluster)",
    )


def _status(e: Evidence) -> str:
    if e.excluded:
        return "excluded"
    return "counted" if e.counted else "not_counted"


async def _group_reach(conn: Conn, principal: Principal, group_by: GroupBy, group: str) -> str:
    """The group's key if the caller reaches it (404 otherwise); errors name query.group."""
    if group_by in (GroupBy.PROVINCE, GroupBy.CITY, GroupBy.COUNTY):
        code = _region(group, "query.group")
        actual = codes.region_level(code)
        if actual.value != group_by.value:
            raise field_error("query.group", group, f"is a {actual} code, not a {group_by} code")
        await reach(conn, principal, OeeScope(Level.REGION, code))
        return code
    if group_by is GroupBy.CLUSTER:
        code = _cluster(group, "query.group")
        await reach(conn, principal, OeeScope(Level.CLUSTER, code))
        return code
    if group_by is GroupBy.ENTERPRISE:
        code = _credit(group, "query.group")
        await reach(conn, principal, OeeScope(Level.ENTERPRISE, code))
        return code
    try:  # an industry (GB/T 4754 division, as the figures group them)
        code = codes.validate_industry_code(group)
    except InvalidValue as exc:
        raise field_error("query.group", group, exc.rule) from exc
    if len(code) != 3:
        raise field_error("query.group", group, "must be a GB/T 4754 division such as C34")
    return code


@router.get("/networking/evidence", response_model=EvidencePage,
            summary="联网率核查清单 Networking evidence: every device, counted or not, and why",
            responses=_ERRORS)  # fmt: skip
@cached_answer
async def get_networking_evidence(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    on: DateQ = None,
    group_by: Annotated[GroupBy | None, Query(description="with group: the kind of group")] = None,
    group: Annotated[
        str | None,
        Query(
            max_length=64,
            description="a group of the figures (every device of your scope when omitted)",
        ),
    ] = None,
    scope: RateScopeQ = Scope.ALL,
    limit: Limit = 100,
    offset: Offset = 0,
) -> EvidencePage:
    """Every device of the ledger in the group on the day, in natural order (D2 before
    D10): counted (good data, or reported online), not counted (silent), or excluded from
    the denominator (not production equipment, not yet commissioned, decommissioned),
    with its last-seen time in its enterprise's zone. counted / (counted + not_counted)
    is the group's daily rate."""
    if (group_by is None) != (group is None):
        missing = "query.group_by" if group_by is None else "query.group"
        raise field_error(missing, None, "group and group_by go together")
    within = visible(principal)
    key = None if group is None or group_by is None else await _group_reach(
        conn, principal, group_by, group
    )  # fmt: skip
    zone = await kpi.display_zone(conn, within=within)
    day = on or _wall_clock().astimezone(zone).date()
    rows = await kpi.networking_evidence(
        conn, day, group_by or GroupBy.ENTERPRISE, key, scope, within=within
    )
    facts = await kpi.enterprise_facts(conn, within=within)
    members = [
        cc for cc, ent in facts.items()
        if ent.in_scope(scope) and (key is None or group_by is None
                                    or key in group_keys(ent, group_by))
    ]  # fmt: skip
    remote = await kpi.federated_enterprises(conn, members, within=within)
    page = rows[offset : offset + limit]
    names = await kpi.group_names(conn, GroupBy.ENTERPRISE, only={e.enterprise for e in page})
    counted = sum(e.counted for e in rows)
    excluded = sum(e.excluded for e in rows)
    not_counted = len(rows) - counted - excluded
    items = [
        EvidencePublic(
            enterprise=e.enterprise, enterprise_name=names.get(e.enterprise), device=e.device,
            name=e.name, status=_status(e), status_label=_STATUS_LABELS[_status(e)],
            reason=e.reason, reason_label=_label(e.reason_zh, _REASON_EN.get(e.reason, "")),
            good_points=e.good_points, online_reported=e.online_reported,
            last_seen=local(e.last_seen, ZoneInfo(e.time_zone)), time_zone=e.time_zone,
        )
        for e in page
    ]  # fmt: skip
    return EvidencePage(
        total=len(rows), limit=limit, offset=offset, items=items, day=day, group_by=group_by,
        group=key, scope=scope, counted=counted, not_counted=not_counted, excluded=excluded,
        rate=counted / (counted + not_counted) if counted + not_counted else None,
        federated=federated_public(remote, {cc: facts[cc].name for cc in remote}),
    )  # fmt: skip
