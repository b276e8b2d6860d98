"""The networking-rate report as files: XLSX (a cover sheet and one sheet per table,
Chinese headers over English ones), CSV (UTF-8 with a BOM, so that Excel on a Chinese
Windows opens it as such) and plain data for JSON.

Rates are written as numbers with a percent format, never as text, so that a reader
can sort and sum them; times in the enterprise's zone with its offset.

Every figure's sources (``local`` and/or the reporting cluster instances, with when
their newest report counted was received and the newest day it covers) are a column
of each table, a list in the JSON, and rows of the cover sheet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from zhizao.networking import Evidence, Kind, Method, Scope
from zhizao.oee import Oee
from zhizao.provenance import NO_DEVICES_NOTE, Source, describe
from zhizao.provenance import plain as source_plain
from zhizao.report import (
    BREAKDOWNS,
    ClusterReport,
    EnterpriseRow,
    NcRow,
    NetworkingReport,
    RateRow,
    ReportPeriod,
)

RATE = "0.0%"
CHANGE = '+0.0" pp";-0.0" pp";0.0" pp"'
COUNT = "#,##0"
_HEADER_FILL = PatternFill("solid", fgColor="DDE6F0")
_SCOPE_ZH = {s: s.label_zh for s in Scope}
_KIND_ZH = {Kind.NC: "数控化率", Kind.NC_KEY_PROCESS: "关键工序数控化率"}
_KIND_EN = {Kind.NC: "NC rate", Kind.NC_KEY_PROCESS: "key-process NC rate"}
_BREAKDOWN_ZH = {b.key: b.zh for b in BREAKDOWNS}


class ReportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"


@dataclass(frozen=True)
class Column:
    zh: str
    en: str
    value: Callable[[Any], object]
    fmt: str | None = None
    width: int = 14


def _yes(flag: bool) -> str:
    return "是" if flag else "否"


def _sources(sources: Sequence[Source]) -> str:
    return describe(sources)


def _source(source: Source | None) -> str:
    return "" if source is None else describe([source])


_SOURCES_ZH, _SOURCES_EN = "数据来源", "sources (instance, received, data to)"


def _pp(change: float | None) -> float | None:
    # Percentage points as a number the CHANGE format shows as "+1.2 pp".
    return None if change is None else change * 100


RATE_COLUMNS = (
    Column("分组代码", "group code", lambda r: r.group, width=14),
    Column("名称", "name", lambda r: r.name, width=24),
    Column("企业范围", "enterprise scope", lambda r: _SCOPE_ZH[r.scope], width=12),
    Column("企业数", "enterprises", lambda r: r.enterprises, COUNT, 9),
    Column("联网设备·日", "networked device-days", lambda r: r.numerator, COUNT),
    Column("在役生产设备·日", "in-service production device-days", lambda r: r.denominator, COUNT),
    Column("联网率(合计口径)", "rate, ratio of sums", lambda r: r.rate, RATE),
    Column("联网率(企业平均口径)", "rate, mean of enterprise rates", lambda r: r.mean_rate, RATE),
    Column("上期联网率", "previous period's rate", lambda r: r.previous_rate, RATE),
    Column("变化(百分点)", "change (percentage points)", lambda r: _pp(r.change), CHANGE),
    Column(_SOURCES_ZH, _SOURCES_EN, lambda r: _sources(r.sources), width=40),
)
NC_COLUMNS = (
    Column("分组维度", "breakdown", lambda r: _BREAKDOWN_ZH[r.breakdown], width=12),
    Column("指标", "figure", lambda r: _KIND_ZH[r.kind], width=16),
    Column("分组代码", "group code", lambda r: r.group),
    Column("名称", "name", lambda r: r.name, width=24),
    Column("企业范围", "enterprise scope", lambda r: _SCOPE_ZH[r.scope], width=12),
    Column("企业数", "enterprises", lambda r: r.enterprises, COUNT, 9),
    Column("数控设备", "NC devices", lambda r: r.numerator, COUNT),
    Column("在役生产设备", "in-service production devices", lambda r: r.denominator, COUNT),
    Column("数控化率(合计口径)", "rate, ratio of sums", lambda r: r.rate, RATE),
    Column("数控化率(企业平均口径)", "rate, mean of enterprise rates", lambda r: r.mean_rate, RATE),
    Column(_SOURCES_ZH, _SOURCES_EN, lambda r: _sources(r.sources), width=40),
)
ENTERPRISE_COLUMNS = (
    Column("统一社会信用代码", "credit code", lambda e: e.credit_code, width=22),
    Column("企业名称", "enterprise", lambda e: e.name, width=28),
    Column("行政区划", "region", lambda e: e.region_code, width=10),
    Column("行业代码", "industry (GB/T 4754)", lambda e: e.industry_code, width=10),
    Column("产业集群", "clusters", lambda e: "、".join(e.clusters), width=16),
    Column("规上", "above designated size", lambda e: _yes(e.above_designated_size), width=8),
    Column("重点", "key enterprise", lambda e: _yes(e.key_enterprise), width=8),
    Column("联网设备·日", "networked device-days", lambda e: e.networked_days, COUNT),
    Column("在役生产设备·日", "in-service production device-days", lambda e: e.device_days, COUNT),
    Column("联网率", "networking rate", lambda e: e.rate, RATE),
    Column("上期联网率", "previous period's rate", lambda e: e.previous_rate, RATE),
    Column("变化(百分点)", "change (percentage points)", lambda e: _pp(e.change), CHANGE),
    Column("数控设备", "NC devices", lambda e: e.nc_devices, COUNT),
    Column("在役生产设备", "in-service production devices", lambda e: e.production_devices, COUNT),
    Column(_SOURCES_ZH, _SOURCES_EN, lambda e: _source(e.source), width=40),
)  # fmt: skip


def _ranked(column: Column) -> Column:
    """An enterprise column read from a (rank, enterprise) pair."""
    return Column(column.zh, column.en, lambda pair: column.value(pair[1]), column.fmt,
                  column.width)  # fmt: skip


BEHIND_COLUMNS = (
    Column("排名", "rank", lambda pair: pair[0], COUNT, 6),
    *(_ranked(c) for c in ENTERPRISE_COLUMNS[:12]),
    _ranked(ENTERPRISE_COLUMNS[-1]),
)


def _last_seen(e: Evidence) -> str:
    if e.last_seen is None:
        return "从未 never"
    return e.last_seen.astimezone(ZoneInfo(e.time_zone)).isoformat(timespec="seconds")


DEVICE_COLUMNS = (
    Column("统一社会信用代码", "credit code", lambda e: e.enterprise, width=22),
    Column("设备编号", "device", lambda e: e.device, width=14),
    Column("设备名称", "device name", lambda e: e.name, width=22),
    Column("最后在线(企业当地时间)", "last seen (enterprise's local time)", _last_seen, width=28),
)


@dataclass(frozen=True)
class Table:
    key: str
    zh: str
    en: str
    columns: Sequence[Column]
    rows: Sequence[Any]


def tables(report: NetworkingReport) -> list[Table]:
    """The report's tables in the order of the workbook's sheets."""
    out = [
        Table(b.key, b.zh, b.en, RATE_COLUMNS,
              [r for r in report.networking if r.breakdown == b.key])
        for b in BREAKDOWNS
    ]  # fmt: skip
    out.append(Table("nc", "数控化率", f"NC rate on {report.nc_day}", NC_COLUMNS, report.nc))
    out.append(Table("enterprises", "企业", "enterprises", ENTERPRISE_COLUMNS, report.enterprises))
    out.append(Table("behind", "落后企业", "furthest behind", BEHIND_COLUMNS,
                     list(enumerate(report.behind, start=1))))  # fmt: skip
    out.append(Table("devices", "未联网设备", f"not networked on {report.period.last}",
                     DEVICE_COLUMNS, report.not_networked))  # fmt: skip
    return out


TABLE_KEYS = ("city", "county", "cluster", "industry_section", "industry_division", "nc",
              "enterprises", "behind", "devices")  # fmt: skip


def _cover(report: NetworkingReport, zone: ZoneInfo) -> list[tuple[str, str, object]]:
    p, prev = report.period, report.previous
    area = report.region or "全省 / 权限范围 all in scope"
    if report.region and report.region in report.region_names:
        area = f"{report.region} {report.region_names[report.region]}"
    coverage = f"{report.covered_days} / {p.days} 天 days"
    return [
        ("报表", "report", "设备联网率统计报表 Equipment networking-rate report"),
        ("统计期间", "period", f"{p.label_zh} ({p.first} – {p.last})"),
        ("上期", "previous period", f"{prev.label_zh} ({prev.first} – {prev.last})"),
        ("地区", "region", area),
        ("产业集群", "cluster", report.cluster or "—"),
        ("统计口径", "methods",
         f"合计口径 {Method.RATIO_OF_SUMS.value}: 联网设备·日之和 ÷ 在役生产设备·日之和;"
         f" 企业平均口径 {Method.MEAN_OF_ENTERPRISE_RATES.value}: 各企业联网率的算术平均"),
        ("数控化率日期", "NC rate on", f"{report.nc_day}"),
        ("数据覆盖", "data coverage", coverage),
        ("权限范围", "caller's scope",
         "仅含调用者权限范围内的企业 only the enterprises in the caller's scope"
         if report.restricted else "全部 all"),
        ("生成时间", "generated",
         report.generated_at.astimezone(zone).isoformat(timespec="seconds")),
        *_source_rows(report.sources, zone),
        *(
            [("未联网设备", "devices not networked",
              f"{len(report.federated)} 家联邦上报企业不在清单中: {NO_DEVICES_NOTE}")]
            if report.federated else []
        ),
    ]  # fmt: skip


def _source_rows(sources: Sequence[Source], zone: ZoneInfo) -> list[tuple[str, str, object]]:
    """One cover row per source: local as of generation, each instance as of its newest
    report received and the newest day it covers."""
    rows: list[tuple[str, str, object]] = []
    for s in sources:
        as_of = s.as_of.astimezone(zone).isoformat(timespec="seconds")
        if not s.federated:
            text = (
                f"本实例数据 this instance's own data: {s.enterprises} 家企业 enterprises,"
                f" 截至 as of {as_of}"
            )
        else:
            text = (
                f"联邦上报 federated reports of {s.instance}: {s.enterprises} 家企业 enterprises,"
                f" 最新接收 newest received {as_of}, 数据至 data to {s.newest_day}"
                f" ({s.days} 天 days of the period)"
            )
        rows.append((_SOURCES_ZH, s.instance, text))
    return rows


def write_xlsx(report: NetworkingReport, out: IO[bytes], zone: ZoneInfo) -> None:
    _book(_cover(report, zone), tables(report), out)


def write_csv(report: NetworkingReport, out: IO[str], table_key: str = "city") -> None:
    """One table (``TABLE_KEYS``), headers in Chinese and English; UTF-8 BOM first."""
    [table] = [t for t in tables(report) if t.key == table_key]
    _write_table(table, out)


#: What a spreadsheet takes as the start of a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    # Rates as plain fractions (0.8125), as the API gives them; no thousands marks.
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        # A name from a ledger such as "=HYPERLINK(...)" must stay text when Excel
        # opens the file: the quote makes it so, and Excel does not show it.
        return "'" + value
    return value


def csv_text(report: NetworkingReport, table_key: str = "city") -> str:
    buffer = io.StringIO(newline="")
    write_csv(report, buffer, table_key)
    return buffer.getvalue()


def _plain(rows: Iterable[RateRow | NcRow]) -> list[dict[str, object]]:
    out = []
    for r in rows:
        item: dict[str, object] = {
            "breakdown": r.breakdown, "group": r.group, "name": r.name, "scope": r.scope.value,
            "enterprises": r.enterprises, "numerator": r.numerator,
            "denominator": r.denominator, "rate": r.rate, "mean_rate": r.mean_rate,
            "sources": [source_plain(x) for x in r.sources],
        }  # fmt: skip
        if isinstance(r, NcRow):
            item["kind"] = r.kind.value
            item["kind_label"] = f"{_KIND_ZH[r.kind]} {_KIND_EN[r.kind]}"
        else:
            item["previous_rate"] = r.previous_rate
            item["change"] = r.change
        out.append(item)
    return out


def _enterprise(e: EnterpriseRow) -> dict[str, object]:
    return {
        "credit_code": e.credit_code, "name": e.name, "region": e.region_code,
        "industry": e.industry_code, "clusters": list(e.clusters),
        "above_designated_size": e.above_designated_size, "key_enterprise": e.key_enterprise,
        "networked_device_days": e.networked_days, "device_days": e.device_days,
        "rate": e.rate, "previous_rate": e.previous_rate, "change": e.change,
        "nc_devices": e.nc_devices, "production_devices": e.production_devices,
        "sources": [] if e.source is None else [source_plain(e.source)],
    }  # fmt: skip


def _period(p: ReportPeriod) -> dict[str, object]:
    return {"kind": p.kind, "label": p.label, "label_zh": p.label_zh,
            "first_day": p.first.isoformat(), "last_day": p.last.isoformat()}  # fmt: skip


def plain(report: NetworkingReport, zone: ZoneInfo) -> dict[str, object]:
    """The report as JSON-ready data (the API's and ``--format json``'s)."""
    p, prev = report.period, report.previous
    return {
        "period": _period(p), "previous": _period(prev),
        "region": report.region, "cluster": report.cluster, "restricted": report.restricted,
        "generated_at": report.generated_at.astimezone(zone).isoformat(),
        "covered_days": report.covered_days, "days": p.days, "nc_day": report.nc_day.isoformat(),
        "sources": [source_plain(s, zone) for s in report.sources],
        "federated": [
            {"enterprise": cc, "instance": inst, "note": NO_DEVICES_NOTE}
            for cc, inst in sorted(report.federated.items())
        ],
        "networking": _plain(report.networking), "nc": _plain(report.nc),
        "enterprises": [_enterprise(e) for e in report.enterprises],
        "behind": [_enterprise(e) for e in report.behind],
        "not_networked": [
            {"enterprise": e.enterprise, "device": e.device, "name": e.name,
             "last_seen": None if e.last_seen is None
             else e.last_seen.astimezone(ZoneInfo(e.time_zone)).isoformat()}
            for e in report.not_networked
        ],
    }  # fmt: skip


# --- the cluster operator's monthly report ----------------------------------------------

CLUSTER_ENTERPRISE_COLUMNS = (
    Column("联网率排名", "rank, networking", lambda e: e.networking_rank, COUNT, 10),
    Column("OEE排名", "rank, OEE", lambda e: e.oee_rank, COUNT, 9),
    Column("统一社会信用代码", "credit code", lambda e: e.credit_code, width=22),
    Column("企业名称", "enterprise", lambda e: e.name, width=28),
    Column("联网设备·日", "networked device-days", lambda e: e.networked_days, COUNT),
    Column("在役生产设备·日", "in-service production device-days", lambda e: e.device_days, COUNT),
    Column("设备联网率", "networking rate", lambda e: e.networking_rate, RATE),
    Column("OEE", "OEE", lambda e: e.oee.oee, RATE, 9),
    Column("时间开动率 A", "availability", lambda e: e.oee.availability, RATE),
    Column("性能开动率 P", "performance", lambda e: e.oee.performance, RATE),
    Column("合格品率 Q", "quality", lambda e: e.oee.quality, RATE),
    Column("数据覆盖率", "data coverage (planned time with data)", lambda e: e.coverage, RATE),
    Column("有数据天数", "days with data", lambda e: e.covered_days, COUNT),
    Column(_SOURCES_ZH, _SOURCES_EN, lambda e: _source(e.source), width=40),
)
TREND_COLUMNS = (
    Column("月份", "month", lambda t: f"{t.first:%Y-%m}", width=10),
    Column("联网设备·日", "networked device-days", lambda t: t.networked_days, COUNT),
    Column("在役生产设备·日", "in-service production device-days", lambda t: t.device_days, COUNT),
    Column("设备联网率", "networking rate", lambda t: t.networking_rate, RATE),
    Column("OEE", "OEE", lambda t: t.oee.oee, RATE, 9),
    Column("时间开动率 A", "availability", lambda t: t.oee.availability, RATE),
    Column("性能开动率 P", "performance", lambda t: t.oee.performance, RATE),
    Column("合格品率 Q", "quality", lambda t: t.oee.quality, RATE),
)
CLUSTER_TABLE_KEYS = ("enterprises", "trend")


def cluster_tables(report: ClusterReport) -> list[Table]:
    return [
        Table("enterprises", "企业排名", "enterprises ranked", CLUSTER_ENTERPRISE_COLUMNS,
              report.enterprises),
        Table("trend", "月度趋势", "trend by month", TREND_COLUMNS, report.trend),
    ]  # fmt: skip


def _cluster_cover(report: ClusterReport, zone: ZoneInfo) -> list[tuple[str, str, object]]:
    p = report.period
    return [
        ("报表", "report", "产业集群月度报告 Industrial cluster's monthly report"),
        ("产业集群", "cluster", f"{report.cluster} {report.cluster_name}".strip()),
        ("统计期间", "period", f"{p.label_zh} ({p.first} – {p.last})"),
        ("设备联网率", "networking rate", report.networking.rate),
        ("OEE", "OEE", report.oee.oee),
        ("企业数", "enterprises", len(report.enterprises)),
        ("数据覆盖", "data coverage", f"{report.covered_days} / {p.days} 天 days"),
        ("排名口径", "ranking",
         "联网率: 联网设备·日 ÷ 在役生产设备·日; OEE: 合格品理想时间 ÷ 计划开动时间; 并列同名次"
         " ties share a rank"),
        ("权限范围", "caller's scope",
         "仅含调用者权限范围内的企业 only the enterprises in the caller's scope"
         if report.restricted else "全部 all"),
        ("生成时间", "generated",
         report.generated_at.astimezone(zone).isoformat(timespec="seconds")),
        *_source_rows(report.sources, zone),
    ]  # fmt: skip


def _book(cover_rows: list[tuple[str, str, object]], sheets: list[Table], out: IO[bytes]) -> None:
    book = Workbook()
    cover = book.active
    if cover is None:  # a new workbook always has its first sheet
        cover = book.create_sheet()
    cover.title = "封面 Cover"
    for letter, width in (("A", 16), ("B", 18), ("C", 90)):
        cover.column_dimensions[letter].width = width
    for zh, en, value in cover_rows:
        cover.append([zh, en, value])
        if isinstance(value, float):
            cover.cell(cover.max_row, 3).number_format = RATE
            cover.cell(cover.max_row, 3).alignment = Alignment(horizontal="left")
    for row in cover.iter_rows(min_col=1, max_col=2):
        for cell in row:
            cell.font = Font(bold=True)
    for table in sheets:
        _sheet(book, table)
    book.save(out)


def _sheet(book: Workbook, table: Table) -> None:
    sheet = book.create_sheet(table.zh[:31])
    sheet.append([c.zh for c in table.columns])
    sheet.append([c.en for c in table.columns])
    for cell in (*sheet[1], *sheet[2]):
        cell.font = Font(bold=cell.row == 1)
        cell.fill = _HEADER_FILL
        cell.alignment = Alignment(wrap_text=True, vertical="center")
    for i, column in enumerate(table.columns, start=1):
        sheet.column_dimensions[get_column_letter(i)].width = column.width
    for item in table.rows:
        sheet.append([c.value(item) for c in table.columns])
        for cell in sheet[sheet.max_row]:
            # openpyxl stores a string starting with "=" as a formula: a name from a
            # ledger must stay the text it is.
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"
    for i, column in enumerate(table.columns, start=1):
        if column.fmt:
            for (cell,) in sheet.iter_rows(min_row=3, min_col=i, max_col=i):
                cell.number_format = column.fmt
    sheet.freeze_panes = "A3"
    sheet.auto_filter.ref = f"A2:{get_column_letter(len(table.columns))}{max(sheet.max_row, 2)}"


def write_cluster_xlsx(report: ClusterReport, out: IO[bytes], zone: ZoneInfo) -> None:
    _book(_cluster_cover(report, zone), cluster_tables(report), out)


def _write_table(table: Table, out: IO[str]) -> None:
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow([f"{c.zh} {c.en}" for c in table.columns])
    for item in table.rows:
        writer.writerow([_csv_cell(c.value(item)) for c in table.columns])


def cluster_csv_text(report: ClusterReport, table_key: str = "enterprises") -> str:
    [table] = [t for t in cluster_tables(report) if t.key == table_key]
    buffer = io.StringIO(newline="")
    _write_table(table, buffer)
    return buffer.getvalue()


def _oee(o: Oee) -> dict[str, object]:
    return {"oee": o.oee, "availability": o.availability, "performance": o.performance,
            "quality": o.quality, "planned_busy_s": o.pbt_s, "offline_s": o.components.offline_s,
            "flags": [str(f) for f in o.flags]}  # fmt: skip


def cluster_plain(report: ClusterReport, zone: ZoneInfo) -> dict[str, object]:
    p = report.period
    return {
        "cluster": report.cluster, "cluster_name": report.cluster_name,
        "period": _period(p),
        "restricted": report.restricted,
        "generated_at": report.generated_at.astimezone(zone).isoformat(),
        "covered_days": report.covered_days, "days": p.days,
        "sources": [source_plain(s, zone) for s in report.sources],
        "networking": {"rate": report.networking.rate, "numerator": report.networking.numerator,
                       "denominator": report.networking.denominator},
        "oee": _oee(report.oee),
        "enterprises": [
            {"credit_code": e.credit_code, "name": e.name, "networking_rank": e.networking_rank,
             "oee_rank": e.oee_rank, "networked_device_days": e.networked_days,
             "device_days": e.device_days, "networking_rate": e.networking_rate,
             "oee": _oee(e.oee), "coverage": e.coverage, "covered_days": e.covered_days,
             "sources": [] if e.source is None else [source_plain(e.source, zone)]}
            for e in report.enterprises
        ],
        "trend": [
            {"month": f"{t.first:%Y-%m}", "first_day": t.first.isoformat(),
             "last_day": t.last.isoformat(), "networked_device_days": t.networked_days,
             "device_days": t.device_days, "networking_rate": t.networking_rate,
             "oee": _oee(t.oee)}
            for t in report.trend
        ],
    }  # fmt: skip
