"""Equipment networking rate (设备联网率) and NC rate (数控化率), DESIGN §7; pure functions.

Both are counts of devices (or device-days) over counts of devices of the ledger:

- networking: a production device in service on a local day is *networked* that day
  when it sent at least one good-quality point itself, or its edge reported it online
  (a connectivity event of that device). An edge that is online does not make its
  devices networked: the device must have spoken, or have been seen, itself.
  Daily rate: networked / in service on that day. Period rate: networked device-days /
  in-service device-days. Current rate: devices seen within a window (default 25 h,
  so a device that reports once a day is not missed) / devices in service today.
- NC rate: in-service production devices that are digitally controlled (``is_nc``) /
  in-service production devices; the key-process variant restricts both to
  ``key_process`` devices.

Up the hierarchy the figures are given two ways, each labelled: the ratio of sums
(every device counts the same) and the mean of enterprise rates (every enterprise
counts the same; enterprises with no device in the denominator are left out). Both
for an enterprise scope: all enterprises, 规上 (above designated size) or 重点 (key).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from zhizao.codes import RegionLevel, region_ancestors, region_level
from zhizao.provenance import Origins, Source

DEFAULT_CURRENT_WINDOW_H = 25.0


class Scope(StrEnum):
    ALL = "all"
    ABOVE_DESIGNATED_SIZE = "above_designated_size"  # 规上
    KEY_ENTERPRISE = "key_enterprise"  # 重点

    @property
    def label_zh(self) -> str:
        return {
            "all": "全部企业",
            "above_designated_size": "规上企业",
            "key_enterprise": "重点企业",
        }[self.value]


class Method(StrEnum):
    RATIO_OF_SUMS = "ratio_of_sums"
    MEAN_OF_ENTERPRISE_RATES = "mean_of_enterprise_rates"

    @property
    def label_zh(self) -> str:
        return (
            "合计口径(分子、分母分别加总后相除)"
            if self is Method.RATIO_OF_SUMS
            else "企业平均口径(各企业比率的算术平均)"
        )


class GroupBy(StrEnum):
    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"
    CLUSTER = "cluster"
    INDUSTRY = "industry"
    ENTERPRISE = "enterprise"


class Kind(StrEnum):
    NETWORKING = "networking"  # 设备联网率
    NC = "nc"  # 数控化率
    NC_KEY_PROCESS = "nc_key_process"  # 关键工序数控化率

    @property
    def label_zh(self) -> str:
        return {"networking": "设备联网率", "nc": "数控化率", "nc_key_process": "关键工序数控化率"}[
            self.value
        ]


@dataclass(frozen=True, slots=True)
class EnterpriseFacts:
    credit_code: str
    name: str
    region_code: str
    industry_code: str
    cluster_codes: tuple[str, ...] = ()
    above_designated_size: bool = False
    key_enterprise: bool = False

    def in_scope(self, scope: Scope) -> bool:
        if scope is Scope.ABOVE_DESIGNATED_SIZE:
            return self.above_designated_size
        if scope is Scope.KEY_ENTERPRISE:
            return self.key_enterprise
        return True


@dataclass(frozen=True, slots=True)
class RateParts:
    """Numerator and denominator: devices, or device-days for a period."""

    numerator: int = 0
    denominator: int = 0

    def __add__(self, other: RateParts) -> RateParts:
        return RateParts(self.numerator + other.numerator, self.denominator + other.denominator)

    @property
    def rate(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True, slots=True)
class RateFigure:
    """One figure of one group, labelled with what it is."""

    kind: Kind
    group_by: GroupBy
    group: str
    scope: Scope
    method: Method
    rate: float | None
    numerator: float  # device(-day)s; for the mean method, the sum of enterprise rates
    denominator: float  # device(-day)s; for the mean method, the number of enterprises
    enterprises: int  # enterprises in the group and scope with a non-empty denominator
    #: Where the counted enterprises' figures come from (zhizao.provenance); empty when
    #: the caller did not ask.
    sources: tuple[Source, ...] = ()


def group_keys(
    enterprise: EnterpriseFacts, group_by: GroupBy, *, industry_digits: int = 2
) -> list[str]:
    """The groups an enterprise falls in (several clusters possible; none if none)."""
    if group_by in (GroupBy.PROVINCE, GroupBy.CITY, GroupBy.COUNTY):
        wanted = RegionLevel(group_by.value)
        return [c for c in region_ancestors(enterprise.region_code) if region_level(c) is wanted]
    if group_by is GroupBy.CLUSTER:
        return list(enterprise.cluster_codes)
    if group_by is GroupBy.INDUSTRY:
        # GB/T 4754: section letter then digits; two digits are the division (大类).
        return [enterprise.industry_code[: 1 + industry_digits]]
    return [enterprise.credit_code]


def aggregate(
    kind: Kind,
    parts: Mapping[str, RateParts],
    enterprises: Mapping[str, EnterpriseFacts],
    group_by: GroupBy,
    scope: Scope = Scope.ALL,
    *,
    industry_digits: int = 2,
    origins: Origins | None = None,
) -> list[RateFigure]:
    """Both methods for every group, sorted by group then method; with ``origins``,
    each figure names the sources of the enterprises it counts."""
    members: dict[str, list[tuple[str, RateParts]]] = defaultdict(list)
    for credit_code, enterprise_parts in parts.items():
        enterprise = enterprises.get(credit_code)
        if enterprise is None or not enterprise.in_scope(scope):
            continue
        for key in group_keys(enterprise, group_by, industry_digits=industry_digits):
            members[key].append((credit_code, enterprise_parts))
    figures: list[RateFigure] = []
    for key in sorted(members):
        counted = [(cc, p) for cc, p in members[key] if p.denominator > 0]
        sources = () if origins is None else origins.sources(cc for cc, _ in counted)
        total = sum((p for _, p in counted), RateParts())
        figures.append(
            RateFigure(kind, group_by, key, scope, Method.RATIO_OF_SUMS, total.rate,
                       total.numerator, total.denominator, len(counted), sources)
        )  # fmt: skip
        rates = [p.rate for _, p in counted if p.rate is not None]
        mean = sum(rates) / len(rates) if rates else None
        figures.append(
            RateFigure(kind, group_by, key, scope, Method.MEAN_OF_ENTERPRISE_RATES, mean,
                       sum(rates), len(rates), len(counted), sources)
        )  # fmt: skip
    return figures


# --- device level ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceDay:
    """What the rollups know of one production device on one local day."""

    enterprise: str
    device: str
    in_service: bool
    good_points: int = 0
    online_reported: bool = False

    @property
    def networked(self) -> bool:
        return self.in_service and (self.good_points > 0 or self.online_reported)


def parts_by_enterprise(days: Iterable[DeviceDay]) -> dict[str, RateParts]:
    """Networked and in-service device-days per enterprise."""
    out: dict[str, RateParts] = defaultdict(RateParts)
    for day in days:
        if day.in_service:
            out[day.enterprise] = out[day.enterprise] + RateParts(int(day.networked), 1)
    return dict(out)


#: Why a device of the ledger is not in the denominator on a day.
EXCLUSION_REASONS = ("not_production_equipment", "not_yet_commissioned", "decommissioned")

_REASONS_ZH = {
    "good_points": "当日有有效数据",
    "online_reported": "当日边缘网关报告设备在线",
    "silent": "当日无有效数据且未报告在线",
    "not_production_equipment": "非生产设备，不计入分母",
    "not_yet_commissioned": "当日尚未投用，不计入分母",
    "decommissioned": "已停用，不计入分母",
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One device of the audit list: counted in the numerator, not counted, or excluded
    from the denominator altogether, and why."""

    enterprise: str
    device: str
    name: str
    counted: bool
    good_points: int
    online_reported: bool
    last_seen: datetime | None  # last good point or online report, any time up to the day's end
    reason: str = field(default="")
    time_zone: str = "Asia/Shanghai"  # the enterprise's, for showing last_seen

    @property
    def excluded(self) -> bool:
        return self.reason in EXCLUSION_REASONS

    @property
    def reason_zh(self) -> str:
        return _REASONS_ZH.get(self.reason, self.reason)


def evidence_reason(
    good_points: int,
    online_reported: bool,
    *,
    production: bool = True,
    commissioned_on: date | None = None,
    decommissioned_on: date | None = None,
    day: date | None = None,
) -> str:
    """Why a device is counted, not counted or excluded on ``day`` (service is by local day:
    from the commissioning day, inclusive, to the decommissioning day, exclusive)."""
    if not production:
        return "not_production_equipment"
    if day is not None and commissioned_on is not None and commissioned_on > day:
        return "not_yet_commissioned"
    if day is not None and decommissioned_on is not None and decommissioned_on <= day:
        return "decommissioned"
    if good_points > 0:
        return "good_points"
    if online_reported:
        return "online_reported"
    return "silent"


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders digit runs by value: D2 before D10, CNC-9 before CNC-10."""
    return tuple(
        (1, int(part), part) if part.isdigit() else (0, 0, part.casefold())
        for part in re.split(r"(\d+)", text)
        if part
    )
