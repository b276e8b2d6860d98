"""Equipment-ledger files (设备台账) parsed into domain models, with row-level errors.

A ledger arrives as a spreadsheet a factory or cluster office keeps by hand: an
``.xlsx`` workbook with a sheet per table, or one ``.csv`` file per table. This
module turns it into :mod:`zhizao.registry` models and a list of located errors; it
never touches the database (the registry upsert consumes a :class:`Ledger`).

How a file is read, in three passes:

1. **Cells.** Each sheet is read into rows of raw cell values, keeping the row
   numbers a spreadsheet user sees (header = row 1, blank rows counted but skipped).
   Only this pass does I/O; unreadable input raises :class:`LedgerError`.
2. **Rows.** The table is recognised from the sheet name (English or Chinese) or,
   failing that, from the headers. Headers are matched after NFKC normalisation
   (full-width brackets and letters become ASCII), case folding and removal of
   spaces, ``_``, ``-`` and ``*``, so ``标准节拍（秒）``, ``标准节拍(秒)`` and
   `` Ideal Cycle Time S `` all find their column; a trailing note that names no
   unit (（必填）) is dropped as a second try. The aliases are the wordings of real
   templates (enterprise ledgers, EAM/MES exports, provincial survey forms); a
   header that is none of them is compared by edit distance to offer a "did you
   mean". Each cell is converted by its column's kind (booleans, dates, numbers,
   code lists, device types) and the row is validated by the pydantic model; every
   failure becomes a :class:`RowError` naming the header text used in the file, the
   raw cell and the rule. Device cells are then read together: an unknown type is
   其他 when the row says whether it is production equipment, an auxiliary type
   implies "not production equipment", and 厂区 / 车间 / 产线 names or codes become the
   model's site and line (the registry store finds or derives their codes).
3. **Cross-checks.** Keys must be unique in the file (the second occurrence is the
   error and names the first), and references must resolve: a device's or an edge's
   enterprise, a cluster's or an enterprise's region and an edge's devices. These
   checks run on rows that already failed too, so that one import reports every
   problem of every row; only a cell that is itself wrong is not checked further.
   A row that fails any check is left out, so every model in a :class:`Ledger`
   refers only to models in the same ledger or to keys the caller says the
   registry already has. An enterprise's clusters, given as codes or names, that
   resolve to nothing cost the enterprise only those memberships (a warning each).

Warnings (unknown columns, once per column; sheets that are no table; checks that
could not be made) are reported apart from errors: the rows they concern are kept.

An import on behalf of an enterprise (``only_enterprises``, what an enterprise
engineer uploads through the API) may hold devices and edge gateways of those
enterprises only. A row of any other enterprise is that row's error, worded the same
whether or not the enterprise exists, so the report discloses nothing of other
enterprises; rows of regions, clusters and enterprises are errors too (admins change
those).
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeAlias, cast

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException
from pydantic import BaseModel, ValidationError

from zhizao.errors import InvalidValue, LedgerError
from zhizao.regions import region_code_for
from zhizao.registry import (
    DEVICE_TYPE_LABELS,
    Cluster,
    Device,
    DeviceType,
    EdgeGateway,
    Enterprise,
    Region,
    check_service_dates,
    is_code,
    name_key,
)

LedgerModel: TypeAlias = Region | Cluster | Enterprise | Device | EdgeGateway

#: Why a row of another enterprise is refused in an import restricted to some.
FOREIGN_ENTERPRISE = (
    "is not an enterprise this import may change (an enterprise engineer imports the"
    " devices and edge gateways of their own enterprise); the row is not stored"
)

CSV_SUFFIXES = frozenset({".csv"})
XLSX_SUFFIXES = frozenset({".xlsx", ".xlsm"})
#: Rows above the header that are skipped when they are titles (合并单元格的表头标题).
_HEADER_SEARCH_ROWS = 10


class Table(StrEnum):
    """The tables of a ledger, in the order their rows depend on each other."""

    REGIONS = "regions"
    CLUSTERS = "clusters"
    ENTERPRISES = "enterprises"
    DEVICES = "devices"
    EDGES = "edges"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RowError:
    """A located problem: which file, sheet, row and column, the raw value and why.

    ``row`` is the 1-based row number a spreadsheet user sees (the header is row 1
    unless title rows precede it); ``0`` means the sheet as a whole. For a CSV file
    ``sheet`` is the file name. ``column`` is the header text as written in the file,
    or the column letter when the column has no header.
    """

    source: str
    sheet: str
    row: int
    column: str
    value: object
    reason: str

    def __str__(self) -> str:
        where = f"{self.sheet} row {self.row}" if self.row else self.sheet
        if self.column:
            where += f", {self.column}"
        shown = "" if self.value is None or self.value == "" else f" {self.value!r}"
        return f"{where}:{shown} {self.reason}"


@dataclass(frozen=True)
class RowRef:
    """Where a model came from, and which of its fields the file gave as columns.

    ``fields`` lets the registry upsert update only what the file speaks about: a
    later file with just the key columns and 停用日期 must not reset the other
    fields of a device to their defaults.
    """

    sheet: str
    row: int
    fields: frozenset[str]
    #: field name → the header text the file used for it, for messages.
    headers: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class SheetRead:
    """One sheet (or CSV file) as read: its table, header row and data-row count."""

    name: str
    table: Table | None
    header_row: int
    rows: int
    #: Headers recognised as ledger columns the registry does not use (序号, 设备型号).
    unused: tuple[str, ...] = ()


@dataclass
class Ledger:
    """Everything valid in a ledger file, plus every row that was not."""

    regions: list[Region] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    enterprises: list[Enterprise] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    edges: list[EdgeGateway] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)
    sheets: list[SheetRead] = field(default_factory=list)
    source: str = ""
    origins: dict[LedgerModel, RowRef] = field(default_factory=dict, repr=False)

    @property
    def rows_read(self) -> dict[str, int]:
        """Non-empty data rows read per sheet name (a CSV's sheet is its file name)."""
        return {sheet.name: sheet.rows for sheet in self.sheets}

    @property
    def rows_by_table(self) -> dict[Table, int]:
        """Non-empty data rows read per table, over all sheets of that table."""
        counts = dict.fromkeys(Table, 0)
        for sheet in self.sheets:
            if sheet.table is not None:
                counts[sheet.table] += sheet.rows
        return counts

    @property
    def rejected_rows(self) -> dict[Table, int]:
        """Data rows with at least one error, per table: rows that were not stored.

        Several problems of one row make one rejected row; problems of a sheet as a
        whole (row 0) reject no row.
        """
        tables = {sheet.name: sheet.table for sheet in self.sheets}
        counts = dict.fromkeys(Table, 0)
        for sheet, _ in {(e.sheet, e.row) for e in self.errors if e.row}:
            table = tables.get(sheet)
            if table is not None:
                counts[table] += 1
        return counts

    def origin(self, model: LedgerModel) -> RowRef | None:
        """The sheet, row and given columns of a model in this ledger."""
        return self.origins.get(model)

    def fields_of(self, model: LedgerModel) -> frozenset[str] | None:
        """The model fields the file gave as columns (None: not from this ledger).

        An upsert updates only these on an existing row, so a file without a
        停用日期 column leaves the registry's decommissioning dates alone.
        """
        ref = self.origins.get(model)
        return None if ref is None else ref.fields


# --------------------------------------------------------------------------- cells


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: object) -> str:
    """A cell as text; Excel stores the code 330206 as the number 330206.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


_TRUE = frozenset({"是", "y", "yes", "true", "t", "1", "✓", "✔", "√", "☑"})
_FALSE = frozenset({"否", "n", "no", "false", "f", "0", "✗", "✘", "×", "☐"})


def parse_bool(value: object) -> bool | None:
    """是/否, Y/N, yes/no, true/false, 1/0, ✓ (and ✔ √) or a real boolean; blank is None."""
    if _is_blank(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = _nfkc(_text(value)).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidValue("boolean", value, "must be 是/否, Y/N, yes/no, true/false, 1/0 or ✓")


_DATE_RE = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
    # Excel's CSV export of a date cell may carry a midnight time: ignore any time.
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
)
_COMPACT_DATE_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
#: Excel's day 0 in the 1900 date system (its phantom 1900-02-29 makes it the 30th).
_EXCEL_EPOCH = date(1899, 12, 30)
#: Serial numbers of 1980-01-01 and 2100-01-01: a bare number in a date column is
#: taken as an Excel date only in this range, anything else is a typing mistake.
_EXCEL_SERIAL_RANGE = (29_221, 73_051)
_DATE_RULE = "must be a date such as 2024-03-01, 2024/3/1 or 2024年3月1日"


def _as_float(value: float, kind: str, rule: str) -> float:
    try:
        return float(value)
    except OverflowError as exc:  # an integer cell beyond any float
        raise InvalidValue(kind, value, rule) from exc


def _date_from_parts(value: object, year: str, month: str, day: str) -> date:
    try:
        return date(int(year), int(month), int(day))
    except ValueError as exc:
        raise InvalidValue("date", value, f"is not a calendar day ({exc})") from exc


def _date_from_number(value: float) -> date:
    if value.is_integer() and (match := _COMPACT_DATE_RE.match(str(int(value)))):
        return _date_from_parts(value, *match.groups())
    low, high = _EXCEL_SERIAL_RANGE
    if low <= value < high:
        return _EXCEL_EPOCH + timedelta(days=math.floor(value))
    raise InvalidValue("date", value, _DATE_RULE)


def parse_date(value: object) -> date | None:
    """ISO, 2024/3/1, 2024.3.1, 2024年3月1日, 20240301 or a real Excel date; blank is None."""
    if _is_blank(value):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _date_from_number(_as_float(value, "date", _DATE_RULE))
    text = _nfkc(_text(value)).strip()
    match = _DATE_RE.match(text) or _COMPACT_DATE_RE.match(text)
    if match is None:
        raise InvalidValue("date", value, _DATE_RULE)
    return _date_from_parts(value, *match.groups())


#: 45, 45s, 45秒, 1.5分钟, 1分30秒, 2min 30s: a duration as ledgers type it.
_DURATION_RE = re.compile(
    r"^(?:(?P<min>\d+(?:\.\d+)?)\s*(?:分钟|分|mins?|m)\s*)?"
    r"(?:(?P<sec>\d+(?:\.\d+)?)\s*(?:秒钟|秒|secs?|s)?)?$",
    re.IGNORECASE,
)
_SECONDS_RULE = "must be a number of seconds, e.g. 45, 12.5, 45秒 or 1分30秒"


def _duration_s(value: object, *, bare_unit_s: float) -> float | None:
    """A duration cell in seconds; a number without a unit counts ``bare_unit_s`` each."""
    if _is_blank(value):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = _as_float(value, "seconds", _SECONDS_RULE) * bare_unit_s
    else:
        text = _nfkc(_text(value)).strip()
        match = _DURATION_RE.match(text)
        if match is None or not (match["min"] or match["sec"]):
            raise InvalidValue("seconds", value, _SECONDS_RULE)
        minutes, seconds = match["min"], match["sec"]
        has_unit = text[-1:].isalpha() or not text[-1:].isascii()
        if minutes is None and not has_unit:
            number = float(seconds) * bare_unit_s  # a bare number typed as text
        else:
            number = float(minutes or 0) * 60 + float(seconds or 0)
    if not math.isfinite(number):
        raise InvalidValue("seconds", value, "must be a finite number of seconds")
    return number


def parse_seconds(value: object) -> float | None:
    """A number of seconds: a number cell, or text such as 45, 12.5, 45秒 or 1分30秒."""
    return _duration_s(value, bare_unit_s=1)


_LIST_SEPARATORS = re.compile(r"[;；、,，\s]+")


def split_codes(value: object) -> tuple[str, ...] | None:
    """Codes separated by ; ； 、 , ， or white space; blank is None."""
    if _is_blank(value):
        return None
    parts = (part for part in _LIST_SEPARATORS.split(_nfkc(_text(value))) if part)
    return tuple(dict.fromkeys(parts))  # a code listed twice is still one code


def _lookup_key(text: str) -> str:
    """How headers, sheet names and device types are compared: loosely."""
    return re.sub(r"[\s_\-*]+", "", _nfkc(text)).casefold()


_DEVICE_TYPE_SYNONYMS: dict[DeviceType, str] = {
    # What ledgers write instead of the generic label: machine names, their common
    # variants and the equipment classes of EAM/MES exports and provincial survey
    # forms. Compared like headers (full-width = half-width, case and spaces ignored).
    DeviceType.CNC_MACHINE_TOOL: (
        "加工中心 立式加工中心 卧式加工中心 龙门加工中心 五轴加工中心 数控车床 数控铣床 "
        "数控磨床 数控钻床 数控镗床 数控机床设备 车铣复合 车削中心 数控加工中心 CNC CNC机床 "
        "数控 数控设备 精雕机 雕铣机 线切割 数控线切割 电火花 火花机"
    ),
    DeviceType.INDUSTRIAL_ROBOT: (
        "机器人 工业机械手 机械手 机械臂 焊接机器人 搬运机器人 码垛机器人 喷涂机器人 "
        "协作机器人 robot"
    ),
    DeviceType.INJECTION_MOULDING: (
        "注塑成型机 注射成型机 注塑机设备 立式注塑机 卧式注塑机 全电动注塑机 电动注塑机 "
        "液压注塑机 伺服注塑机 双色注塑机 injection_moulding injection_molding_machine "
        "injection_molding"
    ),
    DeviceType.LOOM: "喷气织机 喷水织机 剑杆织机 织布机",
    DeviceType.KNITTING_MACHINE: "圆机 横机 大圆机 电脑横机 针织大圆机 经编机",
    DeviceType.PRESS: "冲床 冲压设备 压力机 液压机 油压机 数控冲床 精冲机 伺服压力机 压机",
    DeviceType.WELDING: "焊机 电焊机 激光焊接机 氩弧焊机 点焊机 焊接机 焊接设备",
    DeviceType.LASER_CUTTER: "激光切割 光纤激光切割机 激光切管机 激光机",
    DeviceType.DIE_CASTING: "压铸机设备 冷室压铸机 热室压铸机",
    DeviceType.PLC_LINE: "自动化产线 自动线 生产线 流水线 装配线 自动化生产线",
    DeviceType.TEST_EQUIPMENT: (
        "三坐标 三坐标测量机 CMM 检验设备 检测仪器 测试设备 检测仪 测量设备 测量仪器 "
        "影像测量仪 试验设备 视觉检测设备"
    ),
    DeviceType.CONVEYOR: "输送线 传送带 输送机 皮带线 物流线",
    DeviceType.COMPRESSOR: "空气压缩机 螺杆空压机 螺杆式空压机 压缩机 空压站",
    DeviceType.PRESS_BRAKE: "数控折弯机 折弯机床 电液伺服折弯机",
    DeviceType.PACKAGING: "包装设备 打包机 封箱机 装箱机 贴标机",
    DeviceType.AGV: "AGV小车 自动导引车 AMR 移动机器人",
    DeviceType.AUXILIARY: (
        "辅机 辅助 冷水机 冷干机 干燥机 模温机 变压器 配电柜 锅炉 水泵 除尘设备 "
        "环保设备 空调 中央空调 废气处理设备 纯水机 储气罐 备用发电机 发电机"
    ),
    DeviceType.COOLING_TOWER: "凉水塔 冷却水塔",
    DeviceType.CRANE: "行车 天车 桥式起重机 龙门吊 起重机 电动葫芦 吊车",
    DeviceType.FORKLIFT: "叉车 电动叉车 堆高车 叉车设备",
    DeviceType.OTHER: "其它 其他设备 其它设备 other",
}
_DEVICE_TYPES: dict[str, DeviceType] = {
    **{
        _lookup_key(name): kind
        for kind, names in _DEVICE_TYPE_SYNONYMS.items()
        for name in names.split()
    },
    **{_lookup_key(kind.name): kind for kind in DeviceType},
    **{_lookup_key(kind.value): kind for kind in DeviceType},
    **{_lookup_key(label): kind for kind, label in DEVICE_TYPE_LABELS.items()},
}


def _device_type_rule() -> str:
    labels = "、".join(DEVICE_TYPE_LABELS.values())
    return f"is not a device type; use one of {labels} or the English value"


def parse_device_type(value: object) -> DeviceType | None:
    """The enum value (``cnc_machine_tool``), its name, the Chinese label (数控机床)
    or a name ledgers commonly use for it (加工中心, 行车, 三坐标)."""
    if _is_blank(value):
        return None
    kind = _DEVICE_TYPES.get(_lookup_key(_text(value)))
    if kind is None:
        raise InvalidValue("device_type", value, _device_type_rule())
    return kind


@dataclass(frozen=True)
class _UnknownType:
    """A device type cell the vocabulary does not know; the row decides what it costs."""

    text: str


def _parse_device_type_cell(value: object) -> DeviceType | _UnknownType | None:
    try:
        return parse_device_type(value)
    except InvalidValue:
        return _UnknownType(_text(value))


def parse_minutes(value: object) -> float | None:
    """A cycle time in a column whose header says minutes (节拍(分钟)), as seconds.

    A bare number is minutes; a cell that names its unit (90秒, 1分30秒) is read as written.
    """
    return _duration_s(value, bare_unit_s=60)


def _parse_text(value: object) -> str | None:
    return None if _is_blank(value) else _text(value)


def parse_region(value: object) -> str | None:
    """A GB/T 2260 code, or the name of a Zhejiang division (温州市鹿城区 → 330302)."""
    return None if _is_blank(value) else region_code_for(_text(value))


def _parse_code(value: object) -> str | None:
    # Codes are ASCII: full-width letters and digits typed with a Chinese IME are not
    # a different code.
    return None if _is_blank(value) else _nfkc(_text(value)).strip()


# --------------------------------------------------------------------------- tables

_CellParser = Callable[[object], object]


@dataclass(frozen=True)
class _Column:
    field: str
    aliases: tuple[str, ...]  # the English header first, then the Chinese ones
    parse: _CellParser
    required: bool = False
    #: Headers that mean this column only when no header of ``aliases`` is in the
    #: sheet: 资产编号 is the device code of a ledger that has no 设备编号.
    fallbacks: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """Both names, for messages about a column that is not in the file."""
        chinese = next((a for a in self.aliases if not a.isascii()), None)
        return f"{chinese} ({self.aliases[0]})" if chinese else self.aliases[0]


@dataclass(frozen=True)
class _TableSpec:
    table: Table
    sheet_names: tuple[str, ...]
    model: type[BaseModel]
    columns: tuple[_Column, ...]
    #: Headers ledgers commonly carry that the registry has no use for (序号, 设备型号):
    #: recognised, so they are listed as not used rather than warned about.
    unused: tuple[str, ...] = ()
    #: Headers that look useful but are deliberately not read, with the reason.
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def by_header(self) -> dict[str, _Column]:
        return {_lookup_key(alias): col for col in self.columns for alias in col.aliases}

    @property
    def by_fallback(self) -> dict[str, _Column]:
        return {_lookup_key(alias): col for col in self.columns for alias in col.fallbacks}

    @property
    def required(self) -> tuple[_Column, ...]:
        return tuple(col for col in self.columns if col.required)


def _col(
    name: str,
    aliases: str,
    parse: _CellParser,
    *,
    required: bool = False,
    fallbacks: str = "",
) -> _Column:
    return _Column(name, tuple(aliases.split()), parse, required, tuple(fallbacks.split()))


# Header wordings are those of the platform's own template plus what enterprise
# ledgers, EAM/MES equipment exports and provincial 设备联网 / 两化融合 survey forms
# use for the same thing. Aliases are compared by _lookup_key; a header with a
# bracketed note that is no unit (（必填）, (18位)) is also tried without it.
_REGION_CODE = (
    "region_code region 行政区划代码 区划代码 所在地区代码 所属地区代码 所在区县代码 区县代码 "
    "所属区县代码 地区代码"
)
#: Columns that name the division rather than code it (温州市鹿城区): read when the
#: sheet has no code column, through the province's reference list (zhizao.regions).
_REGION_NAME = (
    "region_name 所在地区 所属地区 所在区县 所属区县 地区 区县 所在地 行政区划 所在县(市、区) "
    "所属县(市、区) 县(市、区)"
)
_INDUSTRY_CODE = (
    "industry_code industry 行业代码 国民经济行业代码 "
    "行业分类代码 所属行业代码 国民经济行业分类代码 "
    "行业类别代码 国民经济行业分类 行业分类"
)
_ENTERPRISE_REF = (
    "enterprise credit_code enterprise_credit_code 统一社会信用代码 企业信用代码 社会信用代码 "
    "企业统一社会信用代码 所属企业信用代码 所属企业统一社会信用代码"
)
_GENERAL_UNUSED = "no 序号 编号序号 备注 备注说明 说明 remark remarks note notes"
_CYCLE_SECONDS = (
    "ideal_cycle_time_s ideal_cycle_time cycle_time_s cycle_time standard_cycle_time "
    "ideal_cycle_time(s) cycle_time(s) cycle_time(sec) standard_cycle_time(s) "
    "standard_cycle_time_s ct(s) 标准节拍(秒) 标准节拍(s) "
    "标准节拍 理论节拍(秒) 理论节拍(s) 理论节拍 "
    "理想节拍(秒) 理想节拍(s) 理想节拍 节拍时间(秒) 节拍时间(s) 节拍时间 节拍(秒) 节拍(s) 节拍 "
    "标准周期(秒) 标准周期 设计节拍(秒) 设计节拍 "
    "额定节拍(秒) 额定节拍 标准节拍时间(秒) 标准节拍时间 "
    "单件节拍(秒) 单件节拍"
)
_CYCLE_MINUTES = (
    "ideal_cycle_time_min cycle_time_min cycle_time(min) ideal_cycle_time(min) "
    "标准节拍(分钟) 标准节拍(min) 理论节拍(分钟) 理论节拍(min) "
    "理想节拍(分钟) 理想节拍(min) 节拍时间(分钟) 节拍时间(min) 节拍(分钟) 节拍(min) "
    "标准周期(分钟) 设计节拍(分钟)"
)

#: Where a cluster or an enterprise is and what it makes: the same columns in both.
_PLACE_AND_INDUSTRY = (
    _col("region_code", _REGION_CODE, parse_region, required=True, fallbacks=_REGION_NAME),
    _col("industry_code", _INDUSTRY_CODE, _parse_code, required=True),
)

_SPECS: dict[Table, _TableSpec] = {
    spec.table: spec
    for spec in (
        _TableSpec(
            Table.REGIONS,
            ("regions", "region", "行政区划", "区划"),
            Region,
            (
                _col("code", "code region_code 行政区划代码 区划代码", _parse_code, required=True),
                _col(
                    "name",
                    "name region_name 行政区划名称 区划名称 名称",
                    _parse_text,
                    required=True,
                ),
            ),
            unused=tuple(_GENERAL_UNUSED.split()),
        ),
        _TableSpec(
            Table.CLUSTERS,
            ("clusters", "cluster", "产业集群", "集群"),
            Cluster,
            (
                _col(
                    "code",
                    "code cluster_code 集群编号 集群代码 集群编码 产业集群编号 产业集群代码",
                    _parse_code,
                    required=True,
                ),
                _col(
                    "name",
                    "name cluster_name 集群名称 产业集群名称 名称",
                    _parse_text,
                    required=True,
                ),
                *_PLACE_AND_INDUSTRY,
            ),
            unused=tuple(f"{_GENERAL_UNUSED} 主导产业 牵头单位".split()),
        ),
        _TableSpec(
            Table.ENTERPRISES,
            ("enterprises", "enterprise", "企业", "企业信息", "企业名录", "企业清单"),
            Enterprise,
            (
                _col(
                    "credit_code",
                    "credit_code 统一社会信用代码 信用代码 社会信用代码 企业信用代码 统一代码 "
                    "企业统一社会信用代码",
                    _parse_code,
                    required=True,
                ),
                _col(
                    "name",
                    "name enterprise_name company_name 企业名称 名称 单位名称 企业全称 公司名称 "
                    "企业(单位)名称",
                    _parse_text,
                    required=True,
                ),
                *_PLACE_AND_INDUSTRY,
                _col(
                    "cluster_codes",
                    "clusters cluster_codes cluster 所属产业集群 产业集群 所属集群 集群 "
                    "所属产业集群名称 产业集群名称 所属集群名称",
                    split_codes,
                ),
                _col(
                    "above_designated_size",
                    "above_designated_size 规上企业 规上 规模以上企业 是否规上 是否规上企业 "
                    "是否规模以上企业 是否规模以上 规模以上 规上工业企业 是否规上工业企业 "
                    "是否为规上企业",
                    parse_bool,
                ),
                _col(
                    "key_enterprise",
                    "key_enterprise 重点企业 重点 是否重点企业 是否重点 是否为重点企业",
                    parse_bool,
                ),
                _col("time_zone", "time_zone timezone 时区", _parse_text),
            ),
            unused=tuple(
                f"{_GENERAL_UNUSED} 联系人 联系电话 电话 手机 地址 企业地址 注册地址 法定代表人 "
                "法人代表 法人 注册资本 成立日期 主营业务 "
                "主要产品 从业人员 员工人数 职工人数 营业收入 "
                "所属乡镇 乡镇(街道) 街道 所属行业 行业名称 "
                "行业类别 企业规模 企业类型 登记注册类型".split()
            ),
            refused={
                # Survey forms ask an enterprise for its own totals and rates.
                _lookup_key(header): (
                    "is not read: the platform computes it from the device ledger and the "
                    "data the edges send (docs/kpi.md)"
                )
                for header in (
                    "设备总数",
                    "设备数量",
                    "生产设备总数",
                    "生产设备数",
                    "联网设备数",
                    "联网设备总数",
                    "数控设备数",
                    "设备联网率",
                    "联网率",
                    "数控化率",
                    "关键工序数控化率",
                    "生产设备数字化率",
                )
            },
        ),
        _TableSpec(
            Table.DEVICES,
            ("devices", "device", "设备台账", "设备", "设备清单", "设备信息", "设备明细"),
            Device,
            (
                _col("enterprise", _ENTERPRISE_REF, _parse_code, required=True),
                _col(
                    "code",
                    "code device_code equipment_code equipment_no device_no 设备编号 设备编码 "
                    "设备代码 设备号 设备自编号 设备管理编号 机台编号 机台号",
                    _parse_code,
                    required=True,
                    fallbacks="asset_no asset_code asset_number 资产编号 固定资产编号 资产编码 "
                    "设备资产编号",
                ),
                _col(
                    "name",
                    "name device_name equipment_name 设备名称 名称 设备名 资产名称 机台名称",
                    _parse_text,
                    required=True,
                ),
                _col(
                    "device_type",
                    "device_type type equipment_type device_category equipment_category 设备类型 "
                    "设备类别 设备分类 设备种类 设备大类 类别 类型",
                    _parse_device_type_cell,
                    required=True,
                ),
                # 厂区 / 车间 / 产线 cells hold a name (冲压车间) or a code (L1): see
                # _place_fields. The *_code columns hold codes only.
                _col("site_code", "site_code plant_code 厂区编号 厂区代码 厂区编码", _parse_code),
                _col(
                    "site_label",
                    "site site_name plant 厂区 厂区名称 所属厂区 所在厂区",
                    _parse_text,
                ),
                _col(
                    "workshop_code",
                    "workshop_code 车间编号 车间代码 车间编码",
                    _parse_code,
                ),
                _col(
                    "workshop_label",
                    "workshop workshop_name 车间 车间名称 所属车间 所在车间 使用车间 生产车间 "
                    "使用部门 车间(部门)",
                    _parse_text,
                ),
                _col(
                    "line_code",
                    "line_code line_id 产线编号 产线代码 产线编码 生产线编号 生产线代码 线体编号",
                    _parse_code,
                ),
                _col(
                    "line_label",
                    "line line_name production_line 产线 生产线 产线名称 生产线名称 所属产线 "
                    "所在产线 所属生产线 线体 线别",
                    _parse_text,
                ),
                _col(
                    "is_production_equipment",
                    "is_production_equipment production_equipment 生产设备 是否生产设备 "
                    "是否为生产设备 是否属于生产设备",
                    parse_bool,
                ),
                _col(
                    "is_nc",
                    "is_nc nc cnc 数控设备 是否数控 数控 是否数控设备 是否数控化 数控化",
                    parse_bool,
                ),
                _col(
                    "key_process",
                    "key_process 关键工序 是否关键工序 是否关键工序设备 关键工序设备",
                    parse_bool,
                ),
                _col("ideal_cycle_time_s", _CYCLE_SECONDS, parse_seconds),
                _col("ideal_cycle_time_s", _CYCLE_MINUTES, parse_minutes),
                _col(
                    "commissioned_on",
                    "commissioned_on commissioning_date in_service_date start_date 投产日期 "
                    "启用日期 投用日期 投入使用日期 开始使用日期 初次使用日期 投产时间 启用时间 "
                    "投运日期 使用日期",
                    parse_date,
                ),
                _col(
                    "decommissioned_on",
                    "decommissioned_on decommissioning_date out_of_service_date 停用日期 报废日期 "
                    "停用时间 报废时间 退役日期 处置日期",
                    parse_date,
                ),
            ),
            unused=tuple(
                f"{_GENERAL_UNUSED} model 设备型号 型号 规格型号 型号规格 规格 规格参数 技术参数 "
                "manufacturer 生产厂家 制造商 制造厂家 制造厂 制造单位 厂家 品牌 国别 供应商 "
                "serial_no 出厂编号 出厂日期 购置日期 购买日期 "
                "采购日期 购入日期 原值 资产原值 净值 "
                "价格 使用年限 折旧年限 department 使用部门 使用单位 部门 责任人 负责人 设备管理员 "
                "操作人员 status 设备状态 使用状态 状态 功率 功率(kW) 额定功率 数量 单位 "
                "安装位置 安装地点 存放地点 使用场所 location 管理类别 设备等级 ABC分类 "
                "ip ip地址 通讯协议 通信协议 协议 控制系统 数控系统 系统型号".split()
            ),
            refused={
                _lookup_key(header): (
                    "is not read: a device counts as networked when an edge gateway sends its "
                    "data (服务设备 of the 边缘网关 sheet), not by a flag in the ledger"
                )
                for header in (
                    "networked",
                    "is_networked",
                    "是否联网",
                    "联网",
                    "联网状态",
                    "是否已联网",
                    "已联网",
                )
            },
        ),
        _TableSpec(
            Table.EDGES,
            ("edges", "edge", "edge_gateways", "gateways", "边缘网关", "网关"),
            EdgeGateway,
            (
                _col(
                    "edge_id",
                    "edge_id edge gateway_id 网关编号 边缘网关编号 网关ID",
                    _parse_code,
                    required=True,
                ),
                _col("enterprise", _ENTERPRISE_REF, _parse_code, required=True),
                _col("name", "name edge_name gateway_name 网关名称 名称", _parse_text),
                _col(
                    "device_codes",
                    "devices device_codes 服务设备 接入设备 接入设备编号 采集设备",
                    split_codes,
                ),
            ),
            unused=tuple(f"{_GENERAL_UNUSED} ip ip地址 安装位置 型号 设备型号".split()),
        ),
    )
}
#: Fields that only the reader uses: combined into the model's place fields.
_PLACE_COLUMNS = ("site_label", "workshop_code", "workshop_label", "line_label")
_HEADERS = {table: spec.by_header for table, spec in _SPECS.items()}
_SHEET_NAMES = {
    _lookup_key(name): table for table, spec in _SPECS.items() for name in spec.sheet_names
}


def table_for_sheet_name(name: str) -> Table | None:
    """The table a sheet name stands for (``设备台账`` → devices), if any."""
    return _SHEET_NAMES.get(_lookup_key(name))


_NOTE_RE = re.compile(r"\(([^()]*)\)$")
#: A bracketed note that names a unit changes what the numbers mean: 节拍(分钟) is not
#: 节拍 in seconds, so such a note is never dropped to find a number column. A note
#: on any other column (投产日期(yyyy-mm-dd), 统一社会信用代码（必填）) says nothing
#: about what the values mean.
_UNIT_NOTE_RE = re.compile(r"[a-z]|秒|分|时|天|日")
_NUMBER_FIELDS = frozenset({"ideal_cycle_time_s"})


def _header_keys(text: str) -> tuple[str, ...]:
    """The lookup keys of a header: as written, then without a trailing note."""
    key = _lookup_key(text)
    match = _NOTE_RE.search(key)
    if match is None or match.start() == 0:
        return (key,)
    return (key, key[: match.start()])


def _unit_note(text: str) -> bool:
    match = _NOTE_RE.search(_lookup_key(text))
    return match is not None and _UNIT_NOTE_RE.search(match.group(1)) is not None


def _lookup_header(lookup: Mapping[str, _Column], text: str) -> _Column | None:
    key, *stripped = _header_keys(text)
    if key in lookup:
        return lookup[key]
    for bare in stripped:
        col = lookup.get(bare)
        if col is not None and not (col.field in _NUMBER_FIELDS and _unit_note(text)):
            return col
    return None


def _header_matches(headers: Iterable[object], table: Table) -> set[str]:
    spec = _SPECS[table]
    lookup = {**spec.by_fallback, **_HEADERS[table]}
    return {
        col.field
        for header in headers
        if not _is_blank(header) and (col := _lookup_header(lookup, _text(header))) is not None
    }


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def _closest_header(
    text: str, spec: _TableSpec, seen: Mapping[str, str]
) -> tuple[str, _Column | None] | None:
    """The known header an unknown one most likely means (a typo, a word more or
    less), or None; the column is None for a header the registry does not use.
    Edit distance 1 for short headers and 2 for longer ones, or one containing the
    other when the shorter is at least half the longer. On a tie, a column the
    sheet does not have yet beats one it has (``seen``: field → header)."""
    keys = _header_keys(text)
    # A unit is part of what the header says: 节拍(毫秒) is nearest 节拍(秒), not 节拍.
    wanted = keys[0] if _unit_note(text) else keys[-1]
    candidates: list[tuple[str, _Column | None]] = [
        (alias, col) for col in spec.columns for alias in (*col.aliases, *col.fallbacks)
    ]
    # 设备形号 is a typo of 设备型号 (not used), not of 设备编号: offer the nearest of all.
    candidates += [(alias, None) for alias in spec.unused]
    best: tuple[tuple[float, bool, int], str, _Column | None] | None = None
    for alias, col in candidates:
        known = _lookup_key(alias)
        shorter, longer = sorted((wanted, known), key=len)
        limit = 1 if len(shorter) <= 4 else 2
        distance = _edit_distance(wanted, known)
        score: float
        if distance <= limit:
            score = float(distance)
        elif (
            shorter in longer
            and len(shorter) >= (4 if shorter.isascii() else 2)
            and 2 * len(shorter) >= len(longer)
        ):
            score = limit + 0.5
        else:
            continue
        # On a tie the longer header: a truncated header means the longer one.
        rank = (score, col is not None and col.field in seen, -len(known))
        if best is None or rank < best[0]:
            best = (rank, alias, col)
    return None if best is None else (best[1], best[2])


def table_for_headers(headers: Iterable[object], hint: str = "") -> Table | None:
    """The table a header row belongs to, or None when it is none or ambiguous.

    A table whose required columns are all present beats one that lacks some; then
    more matching columns win. ``hint`` (a file or sheet name) breaks a tie.
    """
    cells = list(headers)
    scored: list[tuple[tuple[bool, int], Table]] = []
    for table, spec in _SPECS.items():
        matched = _header_matches(cells, table)
        complete = all(col.field in matched for col in spec.required)
        scored.append(((complete, len(matched)), table))
    best = max(score for score, _ in scored)
    if best[1] == 0:
        return None
    leaders = [table for score, table in scored if score == best]
    if len(leaders) == 1:
        return leaders[0]
    hinted = table_for_sheet_name(hint)
    return hinted if hinted in leaders else None


# --------------------------------------------------------------------------- reading

_Row: TypeAlias = tuple[int, tuple[object, ...]]


@dataclass
class _RawSheet:
    """The non-empty rows of one sheet, with the row numbers the user sees."""

    name: str
    rows: list[_Row]
    hint: str  # a name that may say which table this is (file stem for CSV)


KnownClusters: TypeAlias = AbstractSet[str] | Mapping[str, str]


def read_ledger(
    path: Path,
    *,
    known_enterprises: AbstractSet[str] | None = None,
    known_clusters: KnownClusters | None = None,
    known_regions: AbstractSet[str] | None = None,
    only_enterprises: AbstractSet[str] | None = None,
) -> Ledger:
    """Parse a ``.csv`` or ``.xlsx`` ledger file into models and row errors.

    ``known_enterprises``, ``known_clusters`` and ``known_regions`` are what the
    registry already holds: credit codes, clusters (codes, or code → name so that an
    enterprise's 产业集群 may name a cluster instead of giving its code) and region
    codes. References to them resolve even when the file does not contain them.
    When neither the file nor the caller provides a table, references to it are not
    checked (and a warning says so; regions are then left to the registry upsert).
    ``only_enterprises`` restricts the file to those enterprises' devices and edges
    (module doc); the caller includes them in ``known_enterprises``.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    return parse_ledger(
        data,
        str(path),
        known_enterprises=known_enterprises,
        known_clusters=known_clusters,
        known_regions=known_regions,
        only_enterprises=only_enterprises,
    )


def parse_ledger(
    data: bytes,
    source: str,
    *,
    known_enterprises: AbstractSet[str] | None = None,
    known_clusters: KnownClusters | None = None,
    known_regions: AbstractSet[str] | None = None,
    only_enterprises: AbstractSet[str] | None = None,
) -> Ledger:
    """Like :func:`read_ledger` for bytes already in memory (an upload); the format
    follows the extension of ``source``."""
    suffix = Path(source).suffix.lower()
    if suffix in CSV_SUFFIXES:
        sheets = [_read_csv(data, source)]
    elif suffix in XLSX_SUFFIXES:
        sheets = _read_xlsx(data, source)
    elif suffix == ".xls":
        raise LedgerError(f"{source}: the old .xls format is not supported; save it as .xlsx")
    else:
        raise LedgerError(
            f"{source}: unknown ledger format {suffix or '(no extension)'!r}; use .xlsx or .csv"
        )
    reader = _Reader(
        source,
        sheets,
        known_enterprises,
        known_clusters,
        known_regions,
        only_enterprises=only_enterprises,
    )
    return reader.read(is_csv=suffix in CSV_SUFFIXES)


def _decode(data: bytes, source: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export
        return data.decode("utf-16")
    # UTF-8 first (with or without BOM); Excel on a Chinese Windows saves CSV as GBK,
    # of which GB 18030 is the superset.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise LedgerError(f"{source}: not text in UTF-8 or GB 18030 (GBK)")


def _read_csv(data: bytes, source: str) -> _RawSheet:
    text = _decode(data, source)
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first_line and "," not in first_line else ","
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise LedgerError(f"{source}: not a readable CSV file ({exc})") from exc
    rows: list[_Row] = [
        (number, tuple(record))
        for number, record in enumerate(records, start=1)
        if not all(_is_blank(cell) for cell in record)
    ]
    name = Path(source).name
    return _RawSheet(name=name, rows=rows, hint=Path(source).stem)


def _read_xlsx(data: bytes, source: str) -> list[_RawSheet]:
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise LedgerError(f"{source}: not a readable .xlsx workbook ({exc})") from exc
    sheets: list[_RawSheet] = []
    try:
        for worksheet in workbook.worksheets:
            rows: list[_Row] = []
            # The <dimension> tag written by some tools is wrong; read to the real end.
            worksheet.reset_dimensions()
            for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
                if not all(_is_blank(cell) for cell in values):
                    rows.append((number, tuple(values)))
            sheets.append(_RawSheet(name=worksheet.title, rows=rows, hint=worksheet.title))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, SyntaxError) as exc:
        # SyntaxError is what the XML parsers raise for a corrupt sheet part.
        raise LedgerError(f"{source}: a sheet of the workbook cannot be read ({exc})") from exc
    finally:
        workbook.close()
    return sheets


# --------------------------------------------------------------------------- parsing


@dataclass
class _ParsedRow:
    sheet: str
    row: int
    raw: dict[str, object]  # field → the cell as in the file
    values: dict[str, object]  # field → the converted cell, where it converted
    model: BaseModel | None = None
    failed: bool = False
    unparsed: set[str] = field(default_factory=set)  # fields whose cell did not convert
    bad: set[str] = field(default_factory=set)  # fields with any error, checked or not
    #: The 产业集群 items of an enterprise row as written (codes or names); resolved
    #: against the clusters of the file and the registry in pass 3.
    clusters: tuple[str, ...] | None = None


@dataclass
class _ParsedTable:
    table: Table
    sheet: str
    header_row: int
    headers: dict[str, str]  # field → header text in the file
    rows: list[_ParsedRow]


def _model_error(
    err: Mapping[str, Any], headers: Mapping[str, str], raw: Mapping[str, object]
) -> tuple[str, object, str]:
    """A pydantic error as (column header, raw cell, reason)."""
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if loc:
        name = str(loc[0])
    elif isinstance(cause, InvalidValue):
        name = cause.field  # a model-level rule names its field itself
    else:
        name = ""
    reason = cause.rule if isinstance(cause, InvalidValue) else str(err["msg"])
    if err["type"] == "missing":
        reason = "is required; the cell is empty"
    if len(loc) > 1 and isinstance(loc[1], int):
        reason = f"item {loc[1] + 1} {err['input']!r} {reason}"
    return headers.get(name, name), raw.get(name), _with_headers(reason, headers)


def _with_headers(reason: str, headers: Mapping[str, str]) -> str:
    """The kernel's rules name fields (commissioned_on); the user knows the headers.

    Only snake_case names are replaced: ``code`` or ``name`` are also ordinary words.
    """
    names = [name for name in headers if "_" in name]
    if not names:
        return reason
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    return pattern.sub(lambda match: headers[match.group(1)], reason)


class _Reader:
    """One pass over one file: parse each sheet, then cross-check and assemble."""

    def __init__(
        self,
        source: str,
        sheets: list[_RawSheet],
        known_enterprises: AbstractSet[str] | None,
        known_clusters: KnownClusters | None,
        known_regions: AbstractSet[str] | None = None,
        *,
        only_enterprises: AbstractSet[str] | None = None,
    ) -> None:
        self.source = source
        self.raw_sheets = sheets
        self.is_csv = False
        self.known_enterprises = (
            None if known_enterprises is None else {c.strip().upper() for c in known_enterprises}
        )
        # Cluster code → name; a plain set of codes knows no names.
        self.known_clusters: dict[str, str] | None = (
            None
            if known_clusters is None
            else {
                code.strip(): (known_clusters[code] if isinstance(known_clusters, Mapping) else "")
                for code in known_clusters
            }
        )
        self.known_regions = None if known_regions is None else {c.strip() for c in known_regions}
        self.only_enterprises = (
            None if only_enterprises is None else {c.strip().upper() for c in only_enterprises}
        )
        self.ledger = Ledger(source=source)
        self.positions: dict[str, dict[str, int]] = {}  # sheet → header text → column

    def error(self, sheet: str, row: int, column: str, value: object, reason: str) -> None:
        self.ledger.errors.append(RowError(self.source, sheet, row, column, value, reason))

    def warn(self, sheet: str, row: int, column: str, value: object, reason: str) -> None:
        self.ledger.warnings.append(RowError(self.source, sheet, row, column, value, reason))

    # ---- pass 2: rows

    def _place(self, sheet: str) -> str:
        """The file, and the sheet unless the file is a CSV (whose sheet is itself)."""
        return self.source if self.is_csv else f"{self.source}, sheet {sheet!r}"

    def read(self, *, is_csv: bool) -> Ledger:
        self.is_csv = is_csv
        tables: list[_ParsedTable] = []
        for raw in self.raw_sheets:
            table = self._table_of(raw, is_csv=is_csv)
            if table is None:
                continue
            tables.append(self._parse_sheet(raw, table))
        if not tables:
            raise LedgerError(
                f"{self.source}: no sheet is a ledger table; name the sheets regions/行政区划, "
                "clusters/产业集群, enterprises/企业, devices/设备台账 or edges/边缘网关"
            )
        _CrossCheck(self, tables).run()
        order = {sheet.name: index for index, sheet in enumerate(self.ledger.sheets)}
        for problems in (self.ledger.errors, self.ledger.warnings):
            # Within a row, in the order of its columns, as the user reads the row.
            problems.sort(
                key=lambda e: (
                    order.get(e.sheet, -1),
                    e.row,
                    self.positions.get(e.sheet, {}).get(e.column, -1),
                )
            )
        return self.ledger

    def _table_of(self, raw: _RawSheet, *, is_csv: bool) -> Table | None:
        named = None if is_csv else table_for_sheet_name(raw.name)
        if named is not None:
            return named
        if not raw.rows:
            if is_csv:
                raise LedgerError(f"{self.source}: the file is empty")
            # An empty Sheet1 left in a workbook holds nothing to lose: listed, not warned.
            self.ledger.sheets.append(SheetRead(raw.name, None, 0, 0))
            return None
        header_row, headers = _find_header(raw.rows, None)
        table = table_for_headers(headers, raw.hint)
        if table is not None:
            return table
        shown = ", ".join(_text(h) for h in headers if not _is_blank(h))
        if is_csv:
            raise LedgerError(
                f"{self.source}: cannot tell which ledger table this is from its headers ({shown})"
            )
        data_rows = sum(1 for number, _ in raw.rows if number > header_row)
        self.ledger.sheets.append(SheetRead(raw.name, None, header_row, data_rows))
        self.warn(
            raw.name,
            0,
            "",
            None,
            f"not a ledger table (name and headers match none), ignored; headers: {shown}",
        )
        return None

    def _parse_sheet(self, raw: _RawSheet, table: Table) -> _ParsedTable:
        spec = _SPECS[table]
        if not raw.rows:
            self.ledger.sheets.append(SheetRead(raw.name, table, 0, 0))
            self.warn(raw.name, 0, "", None, f"empty {table.value} sheet")
            return _ParsedTable(table, raw.name, 0, {}, [])
        header_row, header_cells = _find_header(raw.rows, table)
        columns, not_used = self._map_columns(raw.name, header_row, header_cells, spec)
        headers = {col.field: text for _, col, text in columns}
        missing = [col.display for col in spec.required if col.field not in headers]
        if missing:
            raise LedgerError(
                f"{self._place(raw.name)} ({table.value}) has no column " + ", ".join(missing)
            )
        position = {text: index for index, _, text in columns}
        self.positions[raw.name] = position
        unnamed_warned: set[int] = set()
        parsed: list[_ParsedRow] = []
        for number, cells in raw.rows:
            if number <= header_row:
                continue
            row = _ParsedRow(raw.name, number, {}, {})
            for index, col, text in columns:
                value = cells[index] if index < len(cells) else None
                row.raw[col.field] = value
                try:
                    converted = col.parse(value)
                except InvalidValue as exc:
                    self.error(raw.name, number, text, value, exc.rule)
                    row.failed = True
                    row.unparsed.add(col.field)
                    continue
                if converted is not None:
                    row.values[col.field] = converted
            for index, value in enumerate(cells):
                unnamed = index >= len(header_cells) or _is_blank(header_cells[index])
                if unnamed and index not in unnamed_warned and not _is_blank(value):
                    unnamed_warned.add(index)
                    self.warn(
                        raw.name,
                        number,
                        get_column_letter(index + 1),
                        value,
                        "column has no header; its values are ignored",
                    )
            if table is Table.DEVICES:
                self._device_cells(row, headers)
            elif table is Table.ENTERPRISES and "cluster_codes" in headers:
                clusters = row.values.pop("cluster_codes", None)
                row.clusters = cast(tuple[str, ...], clusters or ())
            self._validate(row, spec, headers)
            row.bad |= row.unparsed
            parsed.append(row)
        self.ledger.sheets.append(
            SheetRead(raw.name, table, header_row, len(parsed), tuple(not_used))
        )
        return _ParsedTable(table, raw.name, header_row, _model_headers(headers), parsed)

    def _device_cells(self, row: _ParsedRow, headers: Mapping[str, str]) -> None:
        """What a device row's cells mean together: the type (an unknown one is 其他
        when the row says whether it is production equipment), the production flag
        an auxiliary type implies, and the site and line from names or codes."""
        values = row.values
        production = values.get("is_production_equipment")
        kind = values.get("device_type")
        flag_header = headers.get(
            "is_production_equipment", "是否生产设备 (is_production_equipment)"
        )
        if isinstance(kind, _UnknownType):
            if production is not None:
                values["device_type"] = DeviceType.OTHER
                self.warn(
                    row.sheet,
                    row.row,
                    headers["device_type"],
                    kind.text,
                    f"is not a known device type; stored as 其他 (other) with {flag_header} "
                    f"{'是' if production else '否'}. Use one of the types in "
                    "docs/registry-import.md to classify it",
                )
            else:
                del values["device_type"]
                self.error(
                    row.sheet,
                    row.row,
                    headers["device_type"],
                    kind.text,
                    f"{_device_type_rule()}; or fill in {flag_header} to store it as 其他",
                )
                row.failed = True
                row.unparsed.add("device_type")
        elif isinstance(kind, DeviceType) and kind.is_auxiliary and production is None:
            values["is_production_equipment"] = False
        self._place_fields(row, headers)

    def _place_fields(self, row: _ParsedRow, headers: Mapping[str, str]) -> None:
        """厂区 / 车间 / 产线 cells into the model's site and line codes and names.

        A 车间 (workshop) is the model's site: it is the level above lines that
        enterprise ledgers actually keep. With a 厂区 beside it, the site is the
        workshop of that plant and its name says both (一厂 冲压车间).
        """
        values = row.values

        def code_of(field: str) -> str | None:
            code = cast(str | None, values.pop(field, None))
            if code is not None and not is_code(code):
                self.error(
                    row.sheet,
                    row.row,
                    headers[field],
                    row.raw.get(field),
                    "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter "
                    "or digit; a name such as 三号线 goes into the name column "
                    "(产线 / 车间 / 厂区)",
                )
                row.failed = True
                row.bad.add(field)
                return None
            return code

        site_code, workshop_code, line_code = (
            code_of("site_code"),
            code_of("workshop_code"),
            code_of("line_code"),
        )
        site_label = cast(str | None, values.pop("site_label", None))
        workshop_label = cast(str | None, values.pop("workshop_label", None))
        line_label = cast(str | None, values.pop("line_label", None))
        if workshop_code or workshop_label:
            code, name = _code_and_name(workshop_code, workshop_label)
            plant = site_label or site_code
            if plant:
                name = f"{plant} {name or code}"
        else:
            code, name = _code_and_name(site_code, site_label)
        values["site_code"], values["site_name"] = code, name
        values["line_code"], values["line_name"] = _code_and_name(line_code, line_label)
        for key in ("site_code", "site_name", "line_code", "line_name"):
            if values[key] is None:
                del values[key]

    def _map_columns(
        self, sheet: str, header_row: int, cells: tuple[object, ...], spec: _TableSpec
    ) -> tuple[list[tuple[int, _Column, str]], list[str]]:
        """The columns read (position, column, header as written) and the headers
        recognised as not used; every other header gets a warning."""
        lookup = spec.by_header
        fallbacks = spec.by_fallback
        unused = {_lookup_key(alias) for alias in spec.unused}
        columns: list[tuple[int, _Column, str]] = []
        seen: dict[str, str] = {}
        leftover: list[tuple[int, str]] = []
        for index, cell in enumerate(cells):
            if _is_blank(cell):
                continue
            text = _text(cell)
            col = _lookup_header(lookup, text)
            if col is None:
                leftover.append((index, text))
                continue
            if col.field in seen:
                raise LedgerError(
                    f"{self._place(sheet)}: columns {seen[col.field]!r} and {text!r} "
                    f"both mean {col.display}"
                )
            seen[col.field] = text
            columns.append((index, col, text))
        not_used: list[str] = []
        for index, text in leftover:
            col = _lookup_header(fallbacks, text)
            if col is not None and col.field not in seen:
                seen[col.field] = text
                columns.append((index, col, text))
                continue
            keys = _header_keys(text)
            refusal = next((spec.refused[k] for k in keys if k in spec.refused), None)
            if refusal is not None:
                self.warn(sheet, header_row, text, None, refusal)
            elif col is not None or any(k in unused for k in keys):
                not_used.append(text)  # 资产编号 beside a 设备编号 is just information
            else:
                self._unknown_column(sheet, header_row, text, spec, seen)
        columns.sort(key=lambda item: item[0])
        return columns, not_used

    def _unknown_column(
        self, sheet: str, header_row: int, text: str, spec: _TableSpec, seen: Mapping[str, str]
    ) -> None:
        reason = f"unknown column for {spec.table.value}, ignored"
        close = _closest_header(text, spec, seen)
        if close is not None:
            alias, col = close
            if col is None:
                reason += f"; did you mean {alias!r}? That column is not used by the registry"
            else:
                reason += f"; did you mean {alias!r} ({col.aliases[0]})?"
                if col.field in seen:
                    reason += f" That column is already read from {seen[col.field]!r}"
        self.warn(sheet, header_row, text, None, reason)

    def _validate(self, row: _ParsedRow, spec: _TableSpec, headers: Mapping[str, str]) -> None:
        """Validate the cells that converted, so one message per bad cell is reported;
        a row with any bad cell is never accepted."""
        headers = _model_headers(headers)
        try:
            model = spec.model.model_validate(row.values)
        except ValidationError as exc:
            row.failed = True
            for err in exc.errors(include_url=False):
                if err["loc"] and str(err["loc"][0]) in row.unparsed:
                    continue  # already reported as the cell's conversion error
                cause = (err.get("ctx") or {}).get("error")
                if err["loc"]:
                    row.bad.add(str(err["loc"][0]))
                elif isinstance(cause, InvalidValue):
                    row.bad.add(cause.field)  # a model rule: it names its field
                column, value, reason = _model_error(err, headers, row.raw)
                self.error(row.sheet, row.row, column, value, reason)
            if spec.model is Device:
                self._service_dates(row, headers)
            return
        if not row.failed:
            row.model = model

    def _service_dates(self, row: _ParsedRow, headers: Mapping[str, str]) -> None:
        """The service-date rule of a device whose other cells failed: pydantic runs a
        model's own rules only when every field is valid, and the user must not
        learn of this problem only after fixing the others."""
        dates = ("commissioned_on", "decommissioned_on")
        if any(f not in row.values or f in row.bad for f in dates):
            return
        try:
            check_service_dates(
                cast(date, row.values["commissioned_on"]),
                cast(date, row.values["decommissioned_on"]),
            )
        except InvalidValue as exc:
            row.bad.add(exc.field)
            self.error(
                row.sheet,
                row.row,
                headers.get(exc.field, exc.field),
                row.raw.get(exc.field),
                _with_headers(exc.rule, headers),
            )


def _code_and_name(code: str | None, label: str | None) -> tuple[str | None, str | None]:
    """A place's code and name from its code cell and its name-or-code cell.

    A 产线 cell that is itself a valid code (L1) is the code, as the platform's own
    template writes it; anything else (三号线, 装配 二线) is a name.
    """
    if code is not None:
        return code, label if label and label != code else None
    if label is None:
        return None, None
    return (label, None) if is_code(label) else (None, label)


def _model_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The sheet's headers by model field: the 厂区 / 车间 / 产线 columns stand for
    the site and line fields they fill."""
    out = {k: v for k, v in headers.items() if k not in _PLACE_COLUMNS}
    site = next(
        (
            headers[f]
            for f in ("workshop_label", "workshop_code", "site_label", "site_code")
            if f in headers
        ),
        None,
    )
    line = headers.get("line_label") or headers.get("line_code")
    if site is not None:
        out.setdefault("site_code", site)
        out["site_name"] = site
    if line is not None:
        out.setdefault("line_code", line)
        out["line_name"] = line
    return out


def _find_header(rows: list[_Row], table: Table | None) -> tuple[int, tuple[object, ...]]:
    """The header row: the first of the leading rows that names two known columns.

    Chinese templates often put a title (XX公司设备台账) above the header; such rows
    name no column and are skipped. Without any match the first row is the header.
    """
    tables = [table] if table is not None else list(Table)
    for number, cells in rows[:_HEADER_SEARCH_ROWS]:
        if any(len(_header_matches(cells, t)) >= 2 for t in tables):
            return number, cells
    return rows[0]


# --------------------------------------------------------------------------- pass 3


def _credit_key(value: object) -> str | None:
    return None if _is_blank(value) else _nfkc(_text(value)).strip().upper()


class _CrossCheck:
    """Uniqueness and references across rows and sheets; assembles the Ledger."""

    def __init__(self, reader: _Reader, tables: list[_ParsedTable]) -> None:
        self.reader = reader
        self.ledger = reader.ledger
        self.by_table: dict[Table, list[_ParsedTable]] = {t: [] for t in Table}
        for parsed in tables:
            self.by_table[parsed.table].append(parsed)
        # Key → (sheet, row) of the first row that claimed it, valid or not.
        self.claimed: dict[Table, dict[object, tuple[str, int]]] = {t: {} for t in Table}
        self.valid: dict[Table, dict[object, BaseModel]] = {t: {} for t in Table}

    def run(self) -> None:
        for table in Table:  # dependency order: references point backwards
            for parsed in self.by_table[table]:
                for row in parsed.rows:
                    self._check_row(parsed, row)

    def _check_row(self, parsed: _ParsedTable, row: _ParsedRow) -> None:
        if self._refused(parsed, row):
            return
        key = self._key(parsed.table, row)
        if key is not None:
            first = self.claimed[parsed.table].setdefault(key, (row.sheet, row.row))
            if first != (row.sheet, row.row):
                self._duplicate(parsed, row, first)
                row.failed = True
        # References are checked on rows with bad cells too, so that a user learns of
        # every problem of a row in one import; only the cells that are themselves
        # wrong are not checked further.
        checks: dict[Table, tuple[Callable[[_ParsedTable, _ParsedRow], bool], ...]] = {
            Table.CLUSTERS: (self._region_ref,),
            Table.ENTERPRISES: (self._region_ref,),
            Table.DEVICES: (self._enterprise_ref,),
            Table.EDGES: (self._enterprise_ref, self._edge_devices),
        }
        for check in checks.get(parsed.table, ()):
            if not check(parsed, row):
                row.failed = True
        clusters = self._clusters(parsed, row) if row.clusters is not None else None
        model = row.model
        if row.failed or model is None:
            return
        if clusters is not None:
            model = model.model_copy(update={"cluster_codes": clusters})
        self._accept(parsed, row, key, model)

    def _refused(self, parsed: _ParsedTable, row: _ParsedRow) -> bool:
        """A row of regions, clusters or enterprises in an import restricted to some
        enterprises (module doc): one error, no further checks."""
        if self.reader.only_enterprises is None or parsed.table in (Table.DEVICES, Table.EDGES):
            return False
        key_field = "credit_code" if parsed.table is Table.ENTERPRISES else "code"
        self.reader.error(
            row.sheet,
            row.row,
            parsed.headers[key_field],
            row.raw.get(key_field),
            f"only an admin imports {parsed.table.value}; the row is not stored "
            "(the devices and edge gateways of your enterprise are)",
        )
        row.failed = True
        return True

    @staticmethod
    def _key(table: Table, row: _ParsedRow) -> object:
        values = row.values
        match table:
            case Table.REGIONS | Table.CLUSTERS:
                return values.get("code")
            case Table.ENTERPRISES:
                return _credit_key(values.get("credit_code"))
            case Table.DEVICES:
                enterprise, code = _credit_key(values.get("enterprise")), values.get("code")
                return None if enterprise is None or code is None else (enterprise, code)
            case Table.EDGES:
                return values.get("edge_id")

    def _duplicate(self, parsed: _ParsedTable, row: _ParsedRow, first: tuple[str, int]) -> None:
        key_field, what = {
            Table.REGIONS: ("code", "region code"),
            Table.CLUSTERS: ("code", "cluster code"),
            Table.ENTERPRISES: ("credit_code", "credit code"),
            Table.DEVICES: ("code", "device code of this enterprise"),
            Table.EDGES: ("edge_id", "edge id"),
        }[parsed.table]
        where = f"row {first[1]}" if first[0] == row.sheet else f"sheet {first[0]!r} row {first[1]}"
        self.reader.error(
            row.sheet,
            row.row,
            parsed.headers[key_field],
            row.raw.get(key_field),
            f"duplicate {what}, first in {where}",
        )

    def _accept(self, parsed: _ParsedTable, row: _ParsedRow, key: object, model: BaseModel) -> None:
        self.valid[parsed.table][key] = model
        fields = frozenset(parsed.headers)
        ledger = self.ledger
        if isinstance(model, Region):
            ledger.regions.append(model)
        elif isinstance(model, Cluster):
            ledger.clusters.append(model)
        elif isinstance(model, Enterprise):
            ledger.enterprises.append(model)
        elif isinstance(model, Device):
            ledger.devices.append(model)
        elif isinstance(model, EdgeGateway):
            ledger.edges.append(model)
        else:  # pragma: no cover - every spec's model is one of the above
            raise TypeError(f"unexpected model {type(model).__name__}")
        ledger.origins[model] = RowRef(row.sheet, row.row, fields, dict(parsed.headers))

    def _unchecked(self, parsed: _ParsedTable, table: Table) -> None:
        """Say once per sheet that references to ``table`` could not be checked."""
        reason = (
            f"references to {table.value} not checked: the file has no {table.value} table "
            "and no list of those in the registry was given"
        )
        if not any(w.sheet == parsed.sheet and w.reason == reason for w in self.ledger.warnings):
            self.reader.warn(parsed.sheet, 0, "", None, reason)

    def _unresolved(
        self, parsed: _ParsedTable, table: Table, key: str, known: AbstractSet[str] | None
    ) -> str | None:
        """Why ``key`` refers to nothing, or None when it resolves or cannot be checked."""
        if key in self.valid[table] or (known is not None and key in known):
            return None
        first = self.claimed[table].get(key)
        if first is not None:
            return f"is in sheet {first[0]!r} row {first[1]}, but that row has errors"
        in_file = bool(self.by_table[table])
        if known is None and not in_file:
            self._unchecked(parsed, table)
            return None
        if known is None:
            return f"is not in the {table.value} of this file"
        if not in_file:
            return "is not in the registry"
        return "is neither in this file nor in the registry"

    def _region_ref(self, parsed: _ParsedTable, row: _ParsedRow) -> bool:
        code = row.values.get("region_code")
        known = self.reader.known_regions
        if known is None or code is None or "region_code" in row.bad:
            return True  # without a list the registry upsert checks the region
        reason = self._unresolved(parsed, Table.REGIONS, cast(str, code), known)
        if reason is None:
            return True
        if reason == "is not in the registry":
            reason = "region is not in the registry"
        self.reader.error(
            row.sheet, row.row, parsed.headers["region_code"], row.raw.get("region_code"), reason
        )
        return False

    def _enterprise_ref(self, parsed: _ParsedTable, row: _ParsedRow) -> bool:
        credit = _credit_key(row.values.get("enterprise"))
        if credit is None or "enterprise" in row.bad:
            return True  # the cell's own error is reported already
        only = self.reader.only_enterprises
        if only is not None and credit not in only:
            # The same words whether or not the enterprise exists: nothing is disclosed.
            self.reader.error(
                row.sheet,
                row.row,
                parsed.headers["enterprise"],
                row.raw.get("enterprise"),
                FOREIGN_ENTERPRISE,
            )
            return False
        reason = self._unresolved(parsed, Table.ENTERPRISES, credit, self.reader.known_enterprises)
        if reason is None:
            return True
        self.reader.error(
            row.sheet, row.row, parsed.headers["enterprise"], row.raw.get("enterprise"), reason
        )
        return False

    def _cluster_index(self) -> dict[str, set[str]]:
        """Cluster name (by name_key) → the codes of the clusters of that name."""
        names: dict[str, set[str]] = {}
        for code, model in self.valid[Table.CLUSTERS].items():
            names.setdefault(name_key(cast(Cluster, model).name), set()).add(cast(str, code))
        for code, name in (self.reader.known_clusters or {}).items():
            if name:  # a plain set of codes gives no names
                names.setdefault(name_key(name), set()).add(code)
        return names

    def _clusters(self, parsed: _ParsedTable, row: _ParsedRow) -> tuple[str, ...]:
        """The cluster codes an enterprise row's 产业集群 cell resolves to.

        Each item may be a code or a name, of a cluster in this file or in the
        registry. An item that resolves to nothing costs the enterprise only that
        membership: it is a warning naming the item, and the enterprise is stored.
        """
        known = self.reader.known_clusters
        in_file = bool(self.by_table[Table.CLUSTERS])
        names = self._cluster_index()
        column = parsed.headers["cluster_codes"]
        resolved: list[str] = []
        for item in row.clusters or ():
            if item in self.valid[Table.CLUSTERS] or (known is not None and item in known):
                resolved.append(item)
                continue
            codes = sorted(names.get(name_key(item), ()))
            if len(codes) == 1:
                resolved.append(codes[0])
                continue
            if known is None and not in_file and is_code(item):
                self._unchecked(parsed, Table.CLUSTERS)
                resolved.append(item)
                continue
            first = self.claimed[Table.CLUSTERS].get(item)
            if codes:
                why = f"names {len(codes)} clusters ({', '.join(codes)}); write the code instead"
            elif first is not None:
                why = f"is in sheet {first[0]!r} row {first[1]}, but that row has errors"
            elif known is None and not in_file:
                why = "is a name, and no clusters are known to look it up (no clusters sheet)"
            else:
                where = {
                    (True, True): "in this file or the registry",
                    (True, False): "in this file",
                    (False, True): "in the registry",
                }[(in_file, known is not None)]
                why = f"is neither the code nor the name of a cluster {where}"
            self.reader.warn(
                row.sheet,
                row.row,
                column,
                item,
                f"cluster {why}; the enterprise is stored without this membership. "
                "Register the cluster (a clusters / 产业集群 sheet) and import again",
            )
        return tuple(dict.fromkeys(resolved))

    def _edge_devices(self, parsed: _ParsedTable, row: _ParsedRow) -> bool:
        credit = _credit_key(row.values.get("enterprise"))
        codes = cast(tuple[str, ...], row.values.get("device_codes") or ())
        if not codes or credit is None or "device_codes" in row.bad:
            return True
        only = self.reader.only_enterprises
        if only is not None and credit not in only:
            return True  # refused as a whole by _enterprise_ref
        if not self.by_table[Table.DEVICES]:
            # Devices may be in the registry already; only the upsert can tell.
            self._unchecked(parsed, Table.DEVICES)
            return True
        unknown = []
        for code in codes:
            key = (credit, code)
            if key in self.valid[Table.DEVICES]:
                continue
            first = self.claimed[Table.DEVICES].get(key)
            unknown.append(f"{code} ({first[0]!r} row {first[1]} has errors)" if first else code)
        if unknown:
            self.reader.error(
                row.sheet,
                row.row,
                parsed.headers["device_codes"],
                row.raw.get("device_codes"),
                "not devices of this enterprise in this file: " + ", ".join(unknown),
            )
            return False
        return True
