"""The provincial networking-rate report (设备联网率统计报表), built from the kernel's KPI
functions so that every figure in it equals the KPI endpoint's for the same scope and
period (docs/reports.md).

A report covers a period (a month ``2026-10``, a quarter ``2026-Q4``, a year
``2026`` or days ``2026-10-01..2026-10-15``) and an area (a region, a cluster, or
what the caller may see). It holds, for each breakdown (city, county, cluster,
industry section and division of GB/T 4754) and each enterprise scope (all, 规上,
重点), the networked and in-service production device-days, the rate by both
methods and its change against the previous period of the same length; the rate of
every enterprise; the enterprises furthest behind; the production devices not
networked on the period's last day with when they were last seen; and the NC rate
(数控化率, both variants) on that day.

On the provincial instance the figures include the enterprises known only from
cluster instances' daily reports, summed as the cluster sums its own (the kernel's
functions do it). Every row says its sources (``local`` and/or instances, with as of
when: :mod:`zhizao.provenance`), the cover lists them all, and the list of devices not
networked names the federated enterprises whose devices it cannot hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from zhizao.errors import InvalidValue
from zhizao.networking import (
    EnterpriseFacts,
    Evidence,
    GroupBy,
    Kind,
    Method,
    RateFigure,
    RateParts,
    Scope,
    aggregate,
)
from zhizao.oee import Oee, OeeComponents, compute, summed
from zhizao.provenance import Origins, Source, merge
from zhizao.storage import kpi
from zhizao.storage.connection import Conn
from zhizao.storage.kpi import Within

#: GB/T 4754-2017 门类 (sections).
INDUSTRY_SECTIONS = {
    "A": "农、林、牧、渔业", "B": "采矿业", "C": "制造业",
    "D": "电力、热力、燃气及水生产和供应业", "E": "建筑业", "F": "批发和零售业",
    "G": "交通运输、仓储和邮政业", "H": "住宿和餐饮业", "I": "信息传输、软件和信息技术服务业",
    "J": "金融业", "K": "房地产业", "L": "租赁和商务服务业", "M": "科学研究和技术服务业",
    "N": "水利、环境和公共设施管理业", "O": "居民服务、修理和其他服务业", "P": "教育",
    "Q": "卫生和社会工作", "R": "文化、体育和娱乐业", "S": "公共管理、社会保障和社会组织",
    "T": "国际组织",
}  # fmt: skip
#: GB/T 4754-2017 大类 (divisions) of manufacturing, the section this platform serves.
INDUSTRY_DIVISIONS = {
    "C13": "农副食品加工业", "C14": "食品制造业", "C15": "酒、饮料和精制茶制造业",
    "C16": "烟草制品业", "C17": "纺织业", "C18": "纺织服装、服饰业",
    "C19": "皮革、毛皮、羽毛及其制品和制鞋业", "C20": "木材加工和木、竹、藤、棕、草制品业",
    "C21": "家具制造业", "C22": "造纸和纸制品业", "C23": "印刷和记录媒介复制业",
    "C24": "文教、工美、体育和娱乐用品制造业", "C25": "石油、煤炭及其他燃料加工业",
    "C26": "化学原料和化学制品制造业", "C27": "医药制造业", "C28": "化学纤维制造业",
    "C29": "橡胶和塑料制品业", "C30": "非金属矿物制品业", "C31": "黑色金属冶炼和压延加工业",
    "C32": "有色金属冶炼和压延加工业", "C33": "金属制品业", "C34": "通用设备制造业",
    "C35": "专用设备制造业", "C36": "汽车制造业",
    "C37": "铁路、船舶、航空航天和其他运输设备制造业", "C38": "电气机械和器材制造业",
    "C39": "计算机、通信和其他电子设备制造业", "C40": "仪器仪表制造业", "C41": "其他制造业",
    "C42": "废弃资源综合利用业", "C43": "金属制品、机械和设备修理业",
}  # fmt: skip

_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_QUARTER = re.compile(r"^(\d{4})-?[Qq]([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")
_DAYS = re.compile(r"^(\d{4}-\d{2}-\d{2})\s*(?:\.\.|~|/)\s*(\d{4}-\d{2}-\d{2})$")
#: The longest custom period, as the KPI routes allow.
MAX_DAYS = 366


@dataclass(frozen=True)
class ReportPeriod:
    kind: str  # month, quarter, year, custom
    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def label(self) -> str:
        if self.kind == "month":
            return f"{self.first:%Y-%m}"
        if self.kind == "quarter":
            return f"{self.first.year}-Q{(self.first.month - 1) // 3 + 1}"
        if self.kind == "year":
            return f"{self.first.year}"
        return f"{self.first}..{self.last}"

    @property
    def label_zh(self) -> str:
        if self.kind == "month":
            return f"{self.first.year}年{self.first.month}月"
        if self.kind == "quarter":
            return f"{self.first.year}年第{(self.first.month - 1) // 3 + 1}季度"
        if self.kind == "year":
            return f"{self.first.year}年"
        return f"{self.first} 至 {self.last}"

    def previous(self) -> ReportPeriod:
        """The period of the same kind just before (the same number of days, custom)."""
        if self.kind == "month":
            last = self.first - timedelta(days=1)
            return ReportPeriod("month", last.replace(day=1), last)
        if self.kind == "quarter":
            last = self.first - timedelta(days=1)
            return ReportPeriod("quarter", date(last.year, last.month - 2, 1), last)
        if self.kind == "year":
            return ReportPeriod("year", date(self.first.year - 1, 1, 1),
                                date(self.first.year - 1, 12, 31))  # fmt: skip
        last = self.first - timedelta(days=1)
        return ReportPeriod("custom", last - timedelta(days=self.days - 1), last)


def _month_end(year: int, month: int) -> date:
    following = date(year + month // 12, month % 12 + 1, 1)
    return following - timedelta(days=1)


def parse_period(text: str, field_name: str = "period") -> ReportPeriod:
    """``2026-10``, ``2026-Q4``, ``2026`` or ``2026-10-01..2026-10-15``."""
    value = text.strip()
    try:
        if m := _MONTH.match(value):
            year, month = int(m[1]), int(m[2])
            return ReportPeriod("month", date(year, month, 1), _month_end(year, month))
        if m := _QUARTER.match(value):
            year, quarter = int(m[1]), int(m[2])
            return ReportPeriod(
                "quarter", date(year, 3 * quarter - 2, 1), _month_end(year, 3 * quarter)
            )
        if m := _YEAR.match(value):
            return ReportPeriod("year", date(int(m[1]), 1, 1), date(int(m[1]), 12, 31))
        if m := _DAYS.match(value):
            first, last = date.fromisoformat(m[1]), date.fromisoformat(m[2])
            if last < first:
                raise InvalidValue(field_name, text, "ends before it begins")
            if (last - first).days + 1 > MAX_DAYS:
                raise InvalidValue(field_name, text, f"is longer than {MAX_DAYS} days")
            return ReportPeriod("custom", first, last)
    except ValueError as exc:
        if isinstance(exc, InvalidValue):
            raise
        raise InvalidValue(field_name, text, f"is not a calendar date ({exc})") from exc
    raise InvalidValue(
        field_name, text,
        "must be a month (2026-10), a quarter (2026-Q4), a year (2026) or days"
        " (2026-10-01..2026-10-15)",
    )  # fmt: skip


def difference(now: float | None, before: float | None) -> float | None:
    """The change of a rate against the previous period; none without both."""
    return None if now is None or before is None else now - before


class Breakdown:
    """A breakdown of the report: its grouping, its industry depth and its labels."""

    def __init__(self, key: str, group_by: GroupBy, zh: str, en: str, digits: int = 2) -> None:
        self.key, self.group_by, self.zh, self.en, self.digits = key, group_by, zh, en, digits


BREAKDOWNS = (
    Breakdown("city", GroupBy.CITY, "按地市", "by city"),
    Breakdown("county", GroupBy.COUNTY, "按区县", "by county"),
    Breakdown("cluster", GroupBy.CLUSTER, "按产业集群", "by industrial cluster"),
    Breakdown("industry_section", GroupBy.INDUSTRY, "按行业门类", "by industry section", 0),
    Breakdown("industry_division", GroupBy.INDUSTRY, "按行业大类", "by industry division", 2),
)
SCOPES = (Scope.ALL, Scope.ABOVE_DESIGNATED_SIZE, Scope.KEY_ENTERPRISE)


@dataclass(frozen=True)
class RateRow:
    """One group in one scope: both methods now, and the ratio of sums before."""

    breakdown: str
    group: str
    name: str
    scope: Scope
    enterprises: int
    numerator: int  # networked (or NC) device(-day)s
    denominator: int  # in-service production device(-day)s
    rate: float | None  # ratio of sums
    mean_rate: float | None  # mean of enterprise rates
    previous_rate: float | None = None
    sources: tuple[Source, ...] = ()  # of the period's figure

    @property
    def change(self) -> float | None:
        return difference(self.rate, self.previous_rate)


@dataclass(frozen=True)
class EnterpriseRow:
    credit_code: str
    name: str
    region_code: str
    industry_code: str
    clusters: tuple[str, ...]
    above_designated_size: bool
    key_enterprise: bool
    networked_days: int
    device_days: int
    rate: float | None
    previous_rate: float | None
    nc_devices: int
    production_devices: int
    source: Source | None = None

    @property
    def change(self) -> float | None:
        return difference(self.rate, self.previous_rate)


@dataclass(frozen=True)
class NetworkingReport:
    period: ReportPeriod
    previous: ReportPeriod
    region: str | None
    cluster: str | None
    generated_at: datetime
    #: Whether the caller's grants narrowed the figures to part of the area.
    restricted: bool
    networking: list[RateRow]
    nc: list[RateRow]  # kind nc then nc_key_process, on the period's last day
    enterprises: list[EnterpriseRow]
    behind: list[EnterpriseRow]
    not_networked: list[Evidence]
    #: Days of the period with rollups, of its days (data coverage of the report).
    covered_days: int = 0
    region_names: dict[str, str] = field(default_factory=dict)
    #: Every source of the report's figures, and the zone times are shown in.
    sources: tuple[Source, ...] = ()
    #: Federated enterprises (credit code → instance): in the figures, but no device of
    #: theirs can be in ``not_networked``.
    federated: dict[str, str] = field(default_factory=dict)

    @property
    def nc_day(self) -> date:
        return self.period.last


def localised(sources: Iterable[Source], zone: ZoneInfo) -> tuple[Source, ...]:
    """The sources with their times in ``zone`` (as the report shows every time)."""
    return tuple(replace(s, as_of=s.as_of.astimezone(zone)) for s in sources)


def _rows(
    figures: list[RateFigure],
    before: list[RateFigure],
    breakdown: Breakdown,
    names: Callable[[str], str],
    zone: ZoneInfo,
) -> list[RateRow]:
    previous = {(f.group, f.scope): f.rate for f in before if f.method is Method.RATIO_OF_SUMS}
    means = {
        (f.group, f.scope): f.rate for f in figures if f.method is Method.MEAN_OF_ENTERPRISE_RATES
    }
    return [
        RateRow(
            breakdown.key, f.group, names(f.group), f.scope, f.enterprises, int(f.numerator),
            int(f.denominator), f.rate, means.get((f.group, f.scope)),
            previous.get((f.group, f.scope)), localised(f.sources, zone),
        )
        for f in figures
        if f.method is Method.RATIO_OF_SUMS
    ]  # fmt: skip


def _namer(breakdown: Breakdown, names: dict[GroupBy, dict[str, str]]) -> Callable[[str], str]:
    if breakdown.group_by is GroupBy.INDUSTRY:
        table = INDUSTRY_SECTIONS if breakdown.digits == 0 else INDUSTRY_DIVISIONS
        return lambda code: table.get(code, "")
    own = names.get(breakdown.group_by, {})
    return lambda code: own.get(code, "")


async def networking_report(
    conn: Conn,
    period: ReportPeriod,
    *,
    region: str | None = None,
    cluster: str | None = None,
    within: Within | None = None,
    restricted: bool = False,
    behind: int = 20,
    progress: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> NetworkingReport:
    """The report of ``period`` over the enterprises of ``within`` (the caller's), narrowed
    to ``region`` and ``cluster``. ``progress`` hears each step as it begins."""
    say = progress or (lambda _step: None)
    narrowed = kpi.area_filter(region, cluster)
    area = narrowed if within is None else kpi.restrict(within, narrowed)
    previous = period.previous()
    zone = await kpi.display_zone(conn, within=area)
    say("企业与设备 enterprises and devices")
    facts = await kpi.enterprise_facts(conn, within=area)
    say(f"联网设备·日 networked device-days, {period.label}")
    parts = await kpi.networking_parts(conn, period.first, period.last, within=area)
    known = await kpi.origins(conn, period.first, period.last, within=area)
    say(f"上期 previous period, {previous.label}")
    before_parts = await kpi.networking_parts(conn, previous.first, previous.last, within=area)
    say(f"数控化率 NC rate on {period.last}")
    nc_parts = await kpi.nc_parts(conn, period.last, within=area)
    key_parts = await kpi.nc_parts(conn, period.last, key_process=True, within=area)
    nc_known = await kpi.nc_origins(conn, period.last, within=area)
    key_known = await kpi.nc_origins(conn, period.last, key_process=True, within=area)
    names = {g: await kpi.group_names(conn, g) for g in (GroupBy.CITY, GroupBy.COUNTY,
                                                         GroupBy.CLUSTER)}  # fmt: skip
    networking: list[RateRow] = []
    nc: list[RateRow] = []
    say("分组汇总 breakdowns")
    for breakdown in BREAKDOWNS:
        namer = _namer(breakdown, names)
        for scope in SCOPES:
            figures = aggregate(Kind.NETWORKING, parts, facts, breakdown.group_by, scope,
                                industry_digits=breakdown.digits, origins=known)  # fmt: skip
            before = aggregate(Kind.NETWORKING, before_parts, facts, breakdown.group_by, scope,
                               industry_digits=breakdown.digits)  # fmt: skip
            networking.extend(_rows(figures, before, breakdown, namer, zone))
            for kind, source, of in (
                (Kind.NC, nc_parts, nc_known),
                (Kind.NC_KEY_PROCESS, key_parts, key_known),
            ):
                rows = _rows(
                    aggregate(kind, source, facts, breakdown.group_by, scope,
                              industry_digits=breakdown.digits, origins=of),
                    [], breakdown, namer, zone,
                )  # fmt: skip
                nc.extend(_nc_row(row, kind) for row in rows)
    federated = await kpi.federated_enterprises(conn, within=area)
    enterprises = _enterprise_rows(facts, parts, before_parts, nc_parts, known=known,
                                   federated=federated, zone=zone)  # fmt: skip
    ranked = [e for e in enterprises if e.rate is not None]
    ranked.sort(key=lambda e: (e.rate, -e.device_days, e.credit_code))
    say(f"未联网设备 devices not networked on {period.last}")
    evidence = await kpi.networking_evidence(conn, period.last, GroupBy.ENTERPRISE, None,
                                             within=area)  # fmt: skip
    not_networked = [e for e in evidence if e.reason == "silent"]
    covered = await kpi.covered_days(conn, period.first, period.last, within=area)
    everything = [*(r.sources for r in networking), *(r.sources for r in nc)]
    return NetworkingReport(
        period=period, previous=previous, region=region, cluster=cluster,
        generated_at=now or datetime.now(UTC), restricted=restricted, networking=networking,
        nc=nc, enterprises=enterprises, behind=ranked[:behind], not_networked=not_networked,
        covered_days=covered, region_names=names[GroupBy.CITY] | names[GroupBy.COUNTY],
        sources=merge(s for group in everything for s in group),
        federated=federated,
    )  # fmt: skip


@dataclass(frozen=True)
class NcRow(RateRow):
    kind: Kind = Kind.NC


def _nc_row(row: RateRow, kind: Kind) -> NcRow:
    return NcRow(
        row.breakdown, row.group, row.name, row.scope, row.enterprises, row.numerator,
        row.denominator, row.rate, row.mean_rate, None, row.sources, kind,
    )  # fmt: skip


def _enterprise_rows(
    facts: dict[str, EnterpriseFacts],
    parts: dict[str, RateParts],
    before: dict[str, RateParts],
    nc: dict[str, RateParts],
    *,
    known: Origins,
    federated: dict[str, str],
    zone: ZoneInfo,
) -> list[EnterpriseRow]:
    out = []
    for cc in sorted(facts):
        f = facts[cc]
        now, was, ncp = parts.get(cc, RateParts()), before.get(cc, RateParts()), nc.get(cc)
        out.append(
            EnterpriseRow(
                cc, f.name, f.region_code, f.industry_code, f.cluster_codes,
                f.above_designated_size, f.key_enterprise, now.numerator, now.denominator,
                now.rate, was.rate, ncp.numerator if ncp else 0, ncp.denominator if ncp else 0,
                # A federated enterprise without a report in the period has no figure
                # and no source.
                None if cc in federated and cc not in known.federated
                else localised([known.of(cc)], zone)[0],
            )
        )  # fmt: skip
    return out


# --- the cluster operator's monthly report ----------------------------------------------

#: Months of the trend, the period's own last month included.
TREND_MONTHS = 12


@dataclass(frozen=True)
class ClusterEnterpriseRow:
    credit_code: str
    name: str
    networked_days: int
    device_days: int
    networking_rate: float | None
    networking_rank: int | None  # 1 = best; None without in-service devices
    oee: Oee
    oee_rank: int | None  # 1 = best; None without planned busy time
    covered_days: int  # days of the period with rollups of its devices
    source: Source | None = None

    @property
    def coverage(self) -> float | None:
        """Share of planned busy time with data (1 − offline / PBT)."""
        c = self.oee.components
        return None if c.pbt_s <= 0 else 1 - c.offline_s / c.pbt_s


@dataclass(frozen=True)
class TrendPoint:
    first: date
    last: date
    networked_days: int
    device_days: int
    networking_rate: float | None
    oee: Oee


@dataclass(frozen=True)
class ClusterReport:
    period: ReportPeriod
    cluster: str
    cluster_name: str
    generated_at: datetime
    restricted: bool
    networking: RateParts
    oee: Oee
    enterprises: list[ClusterEnterpriseRow]
    trend: list[TrendPoint]
    covered_days: int
    sources: tuple[Source, ...] = ()


def _ranks(values: dict[str, float | None]) -> dict[str, int]:
    """Competition ranks (1, 2, 2, 4), highest first; entries without a value unranked."""
    ordered = sorted((v, k) for k, v in values.items() if v is not None)
    ordered.reverse()
    ranks: dict[str, int] = {}
    for position, (value, key) in enumerate(ordered, start=1):
        same = [k for k, r in ranks.items() if values[k] == value]
        ranks[key] = ranks[same[0]] if same else position
    return ranks


def _month_start(day: date, back: int) -> date:
    month = day.year * 12 + day.month - 1 - back
    return date(month // 12, month % 12 + 1, 1)


async def cluster_report(
    conn: Conn,
    cluster: str,
    period: ReportPeriod,
    *,
    within: Within | None = None,
    restricted: bool = False,
    progress: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> ClusterReport:
    """The cluster's enterprises ranked by networking rate and by OEE over ``period``,
    the cluster's trend over the last 12 months, and each enterprise's data coverage."""
    say = progress or (lambda _step: None)
    narrowed = kpi.area_filter(None, cluster)
    area = narrowed if within is None else kpi.restrict(within, narrowed)
    names = await kpi.group_names(conn, GroupBy.CLUSTER, only=[cluster])
    scope = kpi.OeeScope(kpi.Level.CLUSTER, cluster)
    # A cluster known only from federated reports has no name here, but is a cluster.
    if cluster not in names and not await kpi.in_reach(conn, scope):
        raise InvalidValue("cluster", cluster, "is not a registered industrial cluster")
    zone = await kpi.display_zone(conn, within=area)
    say("企业 enterprises")
    facts = await kpi.enterprise_facts(conn, within=area)
    say(f"联网率 networking rate, {period.label}")
    parts = await kpi.networking_parts(conn, period.first, period.last, within=area)
    known = await kpi.origins(conn, period.first, period.last, within=area)
    say(f"OEE, {period.label}")
    report = await kpi.oee_for_days(conn, scope, period.first, period.last, within=area)
    by_enterprise: dict[str, list[OeeComponents]] = {}
    for device in report.devices:
        by_enterprise.setdefault(device.enterprise, []).append(device.components)
    for remote in report.federated:
        by_enterprise.setdefault(remote.enterprise, []).append(remote.components)
    covered = await kpi.covered_days_by_enterprise(conn, period.first, period.last, within=area)
    oees = {cc: compute(summed(by_enterprise.get(cc, []))) for cc in facts}
    rates = {cc: parts.get(cc, RateParts()).rate for cc in facts}
    net_rank = _ranks(rates)
    oee_rank = _ranks({cc: o.oee for cc, o in oees.items()})
    rows = [
        ClusterEnterpriseRow(
            cc, facts[cc].name, parts.get(cc, RateParts()).numerator,
            parts.get(cc, RateParts()).denominator, rates[cc], net_rank.get(cc), oees[cc],
            oee_rank.get(cc), covered.get(cc, 0), localised([known.of(cc)], zone)[0],
        )
        for cc in facts
    ]  # fmt: skip
    rows.sort(key=lambda r: (r.networking_rank or 10**9, r.oee_rank or 10**9, r.credit_code))
    say(f"近 {TREND_MONTHS} 个月趋势 trend over {TREND_MONTHS} months")
    first = _month_start(period.last, TREND_MONTHS - 1)
    series = await kpi.networking_series_parts(conn, first, period.last, kpi.Every.MONTH,
                                               within=area)  # fmt: skip
    oee_months = await kpi.oee_series(conn, scope, first, period.last, kpi.Every.MONTH,
                                      within=area)  # fmt: skip
    trend = []
    for month in oee_months:
        assert isinstance(month.start, date)  # noqa: S101 - a series of days
        assert isinstance(month.end, date)  # noqa: S101
        total = sum((p for p in series.get(month.start, {}).values() if p.denominator), RateParts())
        trend.append(TrendPoint(month.start, month.end, total.numerator, total.denominator,
                                total.rate, month.result))  # fmt: skip
    total = sum((p for p in parts.values() if p.denominator), RateParts())
    return ClusterReport(
        period=period, cluster=cluster, cluster_name=names.get(cluster, ""),
        generated_at=now or datetime.now(UTC), restricted=restricted, networking=total,
        oee=report.result, enterprises=rows, trend=trend,
        covered_days=await kpi.covered_days(conn, period.first, period.last, within=area),
        sources=localised(known.sources(sorted(facts)), zone),
    )  # fmt: skip
