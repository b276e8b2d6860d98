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
   `` Ideal Cycle Time S `` all find their column. Each cell is converted by its
   column's kind (booleans, dates, numbers, code lists, device types) and the row is
   validated by the pydantic model; every failure becomes a :class:`RowError` naming
   the header text used in the file, the raw cell and the rule.
3. **Cross-checks.** Keys must be unique in the file (the second occurrence is the
   error and names the first), and references must resolve: a device's or an edge's
   enterprise, an enterprise's clusters and an edge's devices. A row that fails any
   check is left out, so every model in a :class:`Ledger` refers only to models in
   the same ledger or to keys the caller says the registry already has.

A bad row never stops the others: ``read_ledger`` returns all valid rows with all
errors. Only a file that cannot be read as a ledger at all (unknown extension,
unreadable bytes, a recognised table without one of its required columns, two
columns meaning the same thing) raises :class:`LedgerError`.

Warnings (unknown columns, once per column; sheets that are no table; checks that
could not be made) are reported apart from errors: the rows they concern are kept.
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
from zhizao.registry import (
    DEVICE_TYPE_LABELS,
    Cluster,
    Device,
    DeviceType,
    EdgeGateway,
    Enterprise,
    Region,
)

LedgerModel: TypeAlias = Region | Cluster | Enterprise | Device | EdgeGateway

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


_SECONDS_SUFFIX = re.compile(r"\s*(s|sec|秒)$", re.IGNORECASE)


def parse_seconds(value: object) -> float | None:
    """A number of seconds: a number cell, or text such as 45, 12.5 or 45秒."""
    if _is_blank(value):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = _as_float(value, "seconds", "must be a number of seconds, e.g. 45 or 12.5")
    else:
        text = _SECONDS_SUFFIX.sub("", _nfkc(_text(value)).strip())
        try:
            number = float(text)
        except ValueError as exc:
            raise InvalidValue(
                "seconds", value, "must be a number of seconds, e.g. 45 or 12.5"
            ) from exc
    if not math.isfinite(number):
        raise InvalidValue("seconds", value, "must be a finite number of seconds")
    return number


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


_DEVICE_TYPE_SYNONYMS: dict[str, DeviceType] = {
    # What ledgers commonly write instead of the generic label.
    "加工中心": DeviceType.CNC_MACHINE_TOOL,
    "数控车床": DeviceType.CNC_MACHINE_TOOL,
    "数控铣床": DeviceType.CNC_MACHINE_TOOL,
    "数控磨床": DeviceType.CNC_MACHINE_TOOL,
    "机器人": DeviceType.INDUSTRIAL_ROBOT,
    "冲床": DeviceType.PRESS,
    "焊机": DeviceType.WELDING,
}
_DEVICE_TYPES: dict[str, DeviceType] = {
    **{_lookup_key(name): kind for name, kind in _DEVICE_TYPE_SYNONYMS.items()},
    **{_lookup_key(kind.name): kind for kind in DeviceType},
    **{_lookup_key(kind.value): kind for kind in DeviceType},
    **{_lookup_key(label): kind for kind, label in DEVICE_TYPE_LABELS.items()},
}


def parse_device_type(value: object) -> DeviceType | None:
    """The enum value (``cnc_machine_tool``), its name or the Chinese label (数控机床)."""
    if _is_blank(value):
        return None
    kind = _DEVICE_TYPES.get(_lookup_key(_text(value)))
    if kind is None:
        labels = "、".join(DEVICE_TYPE_LABELS.values())
        raise InvalidValue(
            "device_type", value, f"is not a device type; use one of {labels} or the English value"
        )
    return kind


def _parse_text(value: object) -> str | None:
    return None if _is_blank(value) else _text(value)


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

    @property
    def by_header(self) -> dict[str, _Column]:
        return {_lookup_key(alias): col for col in self.columns for alias in col.aliases}

    @property
    def required(self) -> tuple[_Column, ...]:
        return tuple(col for col in self.columns if col.required)


def _col(name: str, aliases: str, parse: _CellParser, *, required: bool = False) -> _Column:
    return _Column(name, tuple(aliases.split()), parse, required)


_REGION_CODE = "region_code region 行政区划代码 区划代码 所在地区代码"
_INDUSTRY_CODE = "industry_code industry 行业代码 国民经济行业代码 行业分类代码"
_ENTERPRISE_REF = "enterprise credit_code enterprise_credit_code 统一社会信用代码 企业信用代码"

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
        ),
        _TableSpec(
            Table.CLUSTERS,
            ("clusters", "cluster", "产业集群", "集群"),
            Cluster,
            (
                _col("code", "code cluster_code 集群编号 集群代码", _parse_code, required=True),
                _col(
                    "name",
                    "name cluster_name 集群名称 产业集群名称 名称",
                    _parse_text,
                    required=True,
                ),
                _col("region_code", _REGION_CODE, _parse_code, required=True),
                _col("industry_code", _INDUSTRY_CODE, _parse_code, required=True),
            ),
        ),
        _TableSpec(
            Table.ENTERPRISES,
            ("enterprises", "enterprise", "企业", "企业信息", "企业名录"),
            Enterprise,
            (
                _col(
                    "credit_code",
                    "credit_code 统一社会信用代码 信用代码",
                    _parse_code,
                    required=True,
                ),
                _col("name", "name enterprise_name 企业名称 名称", _parse_text, required=True),
                _col("region_code", _REGION_CODE, _parse_code, required=True),
                _col("industry_code", _INDUSTRY_CODE, _parse_code, required=True),
                _col(
                    "cluster_codes",
                    "clusters cluster_codes 所属产业集群 产业集群 所属集群",
                    split_codes,
                ),
                _col(
                    "above_designated_size",
                    "above_designated_size 规上企业 规上 规模以上企业",
                    parse_bool,
                ),
                _col("key_enterprise", "key_enterprise 重点企业 重点", parse_bool),
                _col("time_zone", "time_zone timezone 时区", _parse_text),
            ),
        ),
        _TableSpec(
            Table.DEVICES,
            ("devices", "device", "设备台账", "设备", "设备清单"),
            Device,
            (
                _col("enterprise", _ENTERPRISE_REF, _parse_code, required=True),
                _col(
                    "code",
                    "code device_code 设备编号 设备编码 设备代码",
                    _parse_code,
                    required=True,
                ),
                _col("name", "name device_name 设备名称 名称", _parse_text, required=True),
                _col(
                    "device_type",
                    "device_type type 设备类型 设备类别",
                    parse_device_type,
                    required=True,
                ),
                _col("site_code", "site site_code 厂区 厂区编号", _parse_code),
                _col("line_code", "line line_code 产线 产线编号 生产线", _parse_code),
                _col(
                    "is_production_equipment",
                    "is_production_equipment 生产设备 是否生产设备",
                    parse_bool,
                ),
                _col("is_nc", "is_nc nc 数控设备 是否数控 数控", parse_bool),
                _col("key_process", "key_process 关键工序 是否关键工序", parse_bool),
                _col(
                    "ideal_cycle_time_s",
                    "ideal_cycle_time_s ideal_cycle_time 标准节拍(秒) 标准节拍(s) 标准节拍 "
                    "理论节拍(秒)",
                    parse_seconds,
                ),
                _col("commissioned_on", "commissioned_on 投产日期 启用日期", parse_date),
                _col("decommissioned_on", "decommissioned_on 停用日期 报废日期", parse_date),
            ),
        ),
        _TableSpec(
            Table.EDGES,
            ("edges", "edge", "edge_gateways", "gateways", "边缘网关", "网关"),
            EdgeGateway,
            (
                _col("edge_id", "edge_id edge 网关编号 边缘网关编号", _parse_code, required=True),
                _col("enterprise", _ENTERPRISE_REF, _parse_code, required=True),
                _col("name", "name edge_name 网关名称 名称", _parse_text),
                _col("device_codes", "devices device_codes 服务设备 接入设备", split_codes),
            ),
        ),
    )
}
_HEADERS = {table: spec.by_header for table, spec in _SPECS.items()}
_SHEET_NAMES = {
    _lookup_key(name): table for table, spec in _SPECS.items() for name in spec.sheet_names
}


def table_for_sheet_name(name: str) -> Table | None:
    """The table a sheet name stands for (``设备台账`` → devices), if any."""
    return _SHEET_NAMES.get(_lookup_key(name))


def _header_matches(headers: Iterable[object], table: Table) -> set[str]:
    lookup = _HEADERS[table]
    return {
        lookup[key].field
        for header in headers
        if not _is_blank(header) and (key := _lookup_key(_text(header))) in lookup
    }


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


def read_ledger(
    path: Path,
    *,
    known_enterprises: AbstractSet[str] | None = None,
    known_clusters: AbstractSet[str] | None = None,
) -> Ledger:
    """Parse a ``.csv`` or ``.xlsx`` ledger file into models and row errors.

    ``known_enterprises`` and ``known_clusters`` are the credit codes and cluster
    codes the registry already holds: references to them resolve even when the file
    does not contain them. When neither the file nor the caller provides a table,
    references to it are not checked (and a warning says so).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    return parse_ledger(
        data, str(path), known_enterprises=known_enterprises, known_clusters=known_clusters
    )


def parse_ledger(
    data: bytes,
    source: str,
    *,
    known_enterprises: AbstractSet[str] | None = None,
    known_clusters: AbstractSet[str] | None = None,
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
    return _Reader(source, sheets, known_enterprises, known_clusters).read(
        is_csv=suffix in CSV_SUFFIXES
    )


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
        known_clusters: AbstractSet[str] | None,
    ) -> None:
        self.source = source
        self.raw_sheets = sheets
        self.is_csv = False
        self.known_enterprises = (
            None if known_enterprises is None else {c.strip().upper() for c in known_enterprises}
        )
        self.known_clusters = (
            None if known_clusters is None else {c.strip() for c in known_clusters}
        )
        self.ledger = Ledger(source=source)

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
            problems.sort(key=lambda e: (order.get(e.sheet, -1), e.row))
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
        columns = self._map_columns(raw.name, header_row, header_cells, spec)
        headers = {col.field: text for _, col, text in columns}
        missing = [col.display for col in spec.required if col.field not in headers]
        if missing:
            raise LedgerError(
                f"{self._place(raw.name)} ({table.value}) has no column " + ", ".join(missing)
            )
        position = {text: index for index, _, text in columns}
        unnamed_warned: set[int] = set()
        parsed: list[_ParsedRow] = []
        for number, cells in raw.rows:
            if number <= header_row:
                continue
            first_error = len(self.ledger.errors)
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
            self._validate(row, spec, headers)
            # A row's messages in the order of its columns, as the user reads the row.
            self.ledger.errors[first_error:] = sorted(
                self.ledger.errors[first_error:], key=lambda e: position.get(e.column, -1)
            )
            parsed.append(row)
        self.ledger.sheets.append(SheetRead(raw.name, table, header_row, len(parsed)))
        return _ParsedTable(table, raw.name, header_row, headers, parsed)

    def _map_columns(
        self, sheet: str, header_row: int, cells: tuple[object, ...], spec: _TableSpec
    ) -> list[tuple[int, _Column, str]]:
        lookup = spec.by_header
        columns: list[tuple[int, _Column, str]] = []
        seen: dict[str, str] = {}
        for index, cell in enumerate(cells):
            if _is_blank(cell):
                continue
            text = _text(cell)
            col = lookup.get(_lookup_key(text))
            if col is None:
                self.warn(
                    sheet,
                    header_row,
                    text,
                    None,
                    f"unknown column for {spec.table.value}, ignored",
                )
                continue
            if col.field in seen:
                raise LedgerError(
                    f"{self._place(sheet)}: columns {seen[col.field]!r} and {text!r} "
                    f"both mean {col.display}"
                )
            seen[col.field] = text
            columns.append((index, col, text))
        return columns

    def _validate(self, row: _ParsedRow, spec: _TableSpec, headers: Mapping[str, str]) -> None:
        """Validate the cells that converted, so one message per bad cell is reported;
        a row with any bad cell is never accepted."""
        try:
            model = spec.model.model_validate(row.values)
        except ValidationError as exc:
            row.failed = True
            for err in exc.errors(include_url=False):
                if err["loc"] and str(err["loc"][0]) in row.unparsed:
                    continue  # already reported as the cell's conversion error
                column, value, reason = _model_error(err, headers, row.raw)
                self.error(row.sheet, row.row, column, value, reason)
            return
        if not row.failed:
            row.model = model


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
        key = self._key(parsed.table, row)
        if key is not None:
            first = self.claimed[parsed.table].setdefault(key, (row.sheet, row.row))
            if first != (row.sheet, row.row):
                self._duplicate(parsed, row, first)
                row.failed = True
        model = row.model
        if row.failed or model is None:
            return
        checks: dict[Table, Callable[[_ParsedTable, _ParsedRow], bool]] = {
            Table.ENTERPRISES: self._enterprise_refs,
            Table.DEVICES: self._enterprise_ref,
            Table.EDGES: self._edge_refs,
        }
        check = checks.get(parsed.table)
        if check is not None and not check(parsed, row):
            row.failed = True
            return
        self._accept(parsed, row, key, model)

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

    def _resolve_enterprise(self, parsed: _ParsedTable, row: _ParsedRow, column: str) -> bool:
        credit = cast(Device | EdgeGateway, row.model).enterprise
        reason = self._unresolved(parsed, Table.ENTERPRISES, credit, self.reader.known_enterprises)
        if reason is None:
            return True
        self.reader.error(row.sheet, row.row, column, row.raw.get("enterprise"), reason)
        return False

    def _enterprise_ref(self, parsed: _ParsedTable, row: _ParsedRow) -> bool:
        return self._resolve_enterprise(parsed, row, parsed.headers["enterprise"])

    def _enterprise_refs(self, parsed: _ParsedTable, row: _ParsedRow) -> bool:
        ok = True
        for code in cast(Enterprise, row.model).cluster_codes:
            reason = self._unresolved(parsed, Table.CLUSTERS, code, self.reader.known_clusters)
            if reason is not None:
                column = parsed.headers["cluster_codes"]
                value = row.raw.get("cluster_codes")
                self.reader.error(row.sheet, row.row, column, value, f"cluster {code} {reason}")
                ok = False
        return ok

    def _edge_refs(self, parsed: _ParsedTable, row: _ParsedRow) -> bool:
        model = cast(EdgeGateway, row.model)
        if not self._resolve_enterprise(parsed, row, parsed.headers["enterprise"]):
            return False
        if not model.device_codes:
            return True
        if not self.by_table[Table.DEVICES]:
            # Devices may be in the registry already; only the upsert can tell.
            self._unchecked(parsed, Table.DEVICES)
            return True
        unknown = []
        for code in model.device_codes:
            key = (model.enterprise, code)
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
