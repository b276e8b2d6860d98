"""A streaming reader of ``.xlsx`` workbooks: each cell as Excel last showed it.

The ledger reader needs, from a workbook, the rows of each sheet with the values a
person saw in Excel or WPS. openpyxl's read-only mode streams rows, but it cannot
tell a formula that was never calculated from an empty cell (``data_only=True``
gives ``None`` for both, or the ``0`` that XlsxWriter stores), it does not expose
merged ranges, it leaves Excel's ``_x0000_`` escapes of control characters as text,
and its per-cell objects make it the slowest part of a large import. This module
reads the few parts a ledger needs with expat, directly:

- ``xl/workbook.xml`` and its relationships: the worksheets in order, the 1904 date
  system, and ``fullCalcOnLoad``: a workbook that asks to be recalculated on opening
  was written by a program that did not calculate (openpyxl, XlsxWriter), so the
  values stored with its formulas are placeholders, not results;
- ``xl/sharedStrings.xml``: the strings, phonetic guides (``rPh``) left out;
- ``xl/styles.xml``: which cell styles are dates (openpyxl's own date-format rules,
  plus the locale built-ins 27-36 and 50-58 that Chinese Excel writes for 2024年3月1日);
- each worksheet, row by row: numbers, strings, booleans, dates, and instead of a
  value a :class:`Formula` for a formula without a computed value and a
  :class:`CellError` for ``#N/A``, ``#REF!`` and the like.

**Merged ranges** (``<mergeCells>``, written after the rows) are applied when the
sheet has been read: the value of the top-left cell is the value of every cell of
the range, in the rows that have cells of their own, so a 车间 merged down five
device rows gives all five rows that workshop. Columns beyond the sheet's widest row
are not filled, so a range of a whole row costs nothing.

**Bounds.** Expat is used with no DTD allowed (no entity can be declared, so none
can expand); a part whose declared size is above :data:`MAX_PART_BYTES` and a
sheet of more than :data:`MAX_CELLS` cells are refused with :class:`LedgerError`
before they are read further. Memory is the rows of one sheet: the caller turns
them into rows of the ledger before the next sheet is read.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import re
import zipfile
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any
from xml.parsers import expat

from openpyxl.formula.translate import Translator, TranslatorError
from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format
from openpyxl.utils.cell import column_index_from_string, range_boundaries
from openpyxl.utils.datetime import CALENDAR_MAC_1904, CALENDAR_WINDOWS_1900, from_excel

from zhizao.errors import LedgerError

#: Uncompressed size of one part of the workbook (a 100,000-row ledger is ~40 MB).
MAX_PART_BYTES = 1024 * 1024 * 1024
#: Cells of one sheet kept in memory, blanks inside a row included (Excel's own
#: limit is 1,048,576 rows; a ledger of 100,000 rows × 20 columns has 2,000,000).
MAX_CELLS = 20_000_000
#: Excel's last column, XFD.
MAX_COLUMN = 16_384

# Number formats that are dates in the Chinese, Japanese and Korean versions of Excel
# without being written into styles.xml (e.g. 31: yyyy"年"m"月"d"日").
_LOCALE_DATE_FORMATS = frozenset((*range(27, 37), *range(50, 59)))
_ESCAPE_RE = re.compile(r"_x([0-9A-Fa-f]{4})_")

Row = tuple[int, tuple[object, ...]]

#: What zipfile and zlib raise for a damaged archive (found by tests/test_fuzz_ledger.py:
#: a flipped byte gives anything from "negative seek value" to "zip file version 18.8").
_DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


@dataclass(frozen=True, slots=True)
class Formula:
    """A formula cell without a value computed by a spreadsheet program."""

    cell: str  # A1 reference
    text: str  # "=VLOOKUP(B2,...)"; empty when the file does not say

    def __str__(self) -> str:
        return self.text or "(formula)"


@dataclass(frozen=True, slots=True)
class CellError:
    """An error value as a cell's content or formula result (#N/A, #REF!, #DIV/0!)."""

    cell: str
    code: str

    def __str__(self) -> str:
        return self.code


@dataclass
class Sheet:
    """The non-blank rows of one worksheet, merged ranges applied."""

    name: str
    rows: list[Row]
    merged_ranges: int = 0


def _unescape(text: str) -> str:
    """Excel writes characters XML cannot hold as ``_xHHHH_`` (U+0000 is ``_x0000_``);
    a literal ``_x`` is written ``_x005F_x``. Decoded left to right, as Excel does."""
    if "_x" not in text:
        return text
    return _ESCAPE_RE.sub(lambda match: chr(int(match.group(1), 16)), text)


_LOCAL_NAMES: dict[str, str] = {}


def _local(name: str) -> str:
    """``x:c`` → ``c``, cached: a sheet has a handful of distinct element names and
    millions of elements. (Prefixes are compared away rather than resolved: expat's
    namespace mode costs a third of the parse, and the parts of a workbook use one
    namespace for their elements.)"""
    local = _LOCAL_NAMES.get(name)
    if local is None:
        local = name.rpartition(":")[2]
        if len(_LOCAL_NAMES) < 1000:
            _LOCAL_NAMES[name] = local
    return local


def _no_dtd(*_: object) -> None:
    raise LedgerError("the workbook's XML declares a DTD, which no spreadsheet part has")


def _parser() -> Any:
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _no_dtd
    parser.EntityDeclHandler = _no_dtd
    parser.buffer_text = True
    parser.buffer_size = 1 << 16
    return parser


def _parse(
    source: IO[bytes],
    start: Callable[..., None],
    end: Callable[[str], None] | None = None,
    text: Callable[[str], None] | None = None,
) -> None:
    parser = _parser()
    parser.StartElementHandler = start
    if end is not None:
        parser.EndElementHandler = end
    if text is not None:
        parser.CharacterDataHandler = text
    try:
        parser.ParseFile(source)
    except expat.ExpatError as exc:
        raise LedgerError(f"a part of the workbook is not well-formed XML ({exc})") from exc
    except _DAMAGED as exc:
        # A damaged or truncated file fails while a part is decompressed (bad CRC,
        # bad deflate data), which is while it is parsed.
        raise LedgerError(f"a part of the workbook is damaged ({exc})") from exc


class Workbook:
    """The worksheets of an ``.xlsx`` file held in memory; :meth:`sheets` reads them."""

    def __init__(self, data: bytes) -> None:
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
        except _DAMAGED as exc:
            raise LedgerError(f"not a readable .xlsx workbook ({exc})") from exc
        self._names = set(self._zip.namelist())
        self.epoch = CALENDAR_WINDOWS_1900
        #: The workbook asks to be recalculated when opened: stored formula values
        #: are placeholders of the program that wrote it.
        self.uncalculated = False
        self.worksheets: list[tuple[str, str]] = []  # (name, part)
        workbook = self._office_document()
        rels = self._relationships(workbook)
        self._read_workbook(workbook, rels)
        strings = next((t for kind, t in rels.values() if kind.endswith("/sharedStrings")), None)
        styles = next((t for kind, t in rels.values() if kind.endswith("/styles")), None)
        self.shared_strings = self._read_strings(strings) if strings else []
        self.date_styles, self.timedelta_styles = self._read_styles(styles)

    # -- parts

    def _open(self, part: str) -> IO[bytes]:
        try:
            info = self._zip.getinfo(part)
        except KeyError as exc:
            raise LedgerError(f"not a readable .xlsx workbook (no part {part})") from exc
        if info.file_size > MAX_PART_BYTES:
            raise LedgerError(
                f"the workbook part {part} is {info.file_size / 2**30:.1f} GiB uncompressed, "
                f"more than the {MAX_PART_BYTES // 2**30} GiB a ledger may have"
            )
        try:
            return self._zip.open(info)
        except _DAMAGED as exc:
            raise LedgerError(f"the workbook part {part} cannot be read ({exc})") from exc

    def _office_document(self) -> str:
        if "_rels/.rels" in self._names:
            for kind, target in self._relationships("").values():
                if kind.endswith("/officeDocument"):
                    return target
        if "xl/workbook.xml" in self._names:
            return "xl/workbook.xml"
        raise LedgerError("not a readable .xlsx workbook (no workbook part)")

    def _relationships(self, part: str) -> dict[str, tuple[str, str]]:
        """Relationship id → (type, part) of ``part`` ("" for the package)."""
        folder, name = posixpath.split(part)
        rels_part = posixpath.join(folder, "_rels", f"{name}.rels")
        found: dict[str, tuple[str, str]] = {}
        if rels_part not in self._names:
            return found

        def start(tag: str, attrs: dict[str, str]) -> None:
            if _local(tag) == "Relationship" and attrs.get("TargetMode") != "External":
                target = attrs.get("Target", "")
                resolved = (
                    target.lstrip("/")
                    if target.startswith("/")
                    else posixpath.normpath(posixpath.join(folder, target))
                )
                found[attrs.get("Id", "")] = (attrs.get("Type", ""), resolved)

        with self._open(rels_part) as source:
            _parse(source, start)
        return found

    def _read_workbook(self, part: str, rels: dict[str, tuple[str, str]]) -> None:
        def start(tag: str, attrs: dict[str, str]) -> None:
            local = _local(tag)
            if local == "sheet":
                # r:id, in the transitional or the strict relationships namespace
                rid = next((v for k, v in attrs.items() if k.endswith(":id")), "")
                kind, target = rels.get(rid, ("", ""))
                if kind.endswith("/worksheet"):  # chart sheets hold no rows
                    self.worksheets.append((attrs.get("name", target), target))
            elif local == "workbookPr" and attrs.get("date1904") in ("1", "true"):
                self.epoch = CALENDAR_MAC_1904
            elif local == "calcPr" and attrs.get("fullCalcOnLoad") in ("1", "true"):
                self.uncalculated = True

        with self._open(part) as source:
            _parse(source, start)

    def _read_strings(self, part: str) -> list[str]:
        strings: list[str] = []
        pieces: list[str] = []
        state = {"in_t": False, "phonetic": 0}

        def start(tag: str, _: dict[str, str]) -> None:
            local = _local(tag)
            if local == "t":
                state["in_t"] = True
            elif local == "rPh":
                state["phonetic"] += 1
            elif local == "si":
                pieces.clear()

        def end(tag: str) -> None:
            local = _local(tag)
            if local == "t":
                state["in_t"] = False
            elif local == "rPh":
                state["phonetic"] -= 1
            elif local == "si":
                strings.append(_unescape("".join(pieces)))

        def text(data: str) -> None:
            if state["in_t"] and not state["phonetic"]:
                pieces.append(data)

        with self._open(part) as source:
            _parse(source, start, end, text)
        return strings

    def _read_styles(self, part: str | None) -> tuple[frozenset[int], frozenset[int]]:
        if part is None:
            return frozenset(), frozenset()
        custom: dict[int, str] = {}
        formats: list[int] = []
        depth = {"cellXfs": 0}

        def start(tag: str, attrs: dict[str, str]) -> None:
            local = _local(tag)
            if local == "numFmt":
                # A style the ledger does not need cannot stop the import.
                with contextlib.suppress(ValueError):
                    custom[int(attrs.get("numFmtId", ""))] = attrs.get("formatCode", "")
            elif local == "cellXfs":
                depth["cellXfs"] += 1
            elif local == "xf" and depth["cellXfs"]:
                try:
                    formats.append(int(attrs.get("numFmtId", "0")))
                except ValueError:
                    formats.append(0)

        def end(tag: str) -> None:
            if _local(tag) == "cellXfs":
                depth["cellXfs"] -= 1

        with self._open(part) as source:
            _parse(source, start, end)
        dates: set[int] = set()
        durations: set[int] = set()
        for index, number_format in enumerate(formats):
            code = custom.get(number_format) or BUILTIN_FORMATS.get(number_format)
            if code is None:
                if number_format in _LOCALE_DATE_FORMATS:
                    dates.add(index)
                continue
            if is_date_format(code):
                dates.add(index)
                if is_timedelta_format(code):
                    durations.add(index)
        return frozenset(dates), frozenset(durations)

    # -- sheets

    def sheets(self) -> Iterator[Sheet]:
        """Each worksheet in workbook order, read when the caller asks for it."""
        for name, part in self.worksheets:
            reader = _SheetReader(self, name)
            with self._open(part) as source:
                _parse(source, reader.start, reader.end, reader.text)
            yield reader.finish()

    def close(self) -> None:
        self._zip.close()


_COLUMN_CACHE: dict[str, int] = {}


def _column(ref: str) -> int:
    letters = ref.rstrip("0123456789$")
    index = _COLUMN_CACHE.get(letters)
    if index is None:
        try:
            index = column_index_from_string(letters.lstrip("$"))
        except ValueError as exc:
            raise LedgerError(f"the cell reference {ref!r} is not a cell") from exc
        if len(_COLUMN_CACHE) < 20_000:
            _COLUMN_CACHE[letters] = index
    return index


class _SheetReader:
    """The expat handlers of one worksheet and what they have read so far."""

    def __init__(self, book: Workbook, name: str) -> None:
        self.book = book
        self.name = name
        self.rows: list[Row] = []
        self.cells_kept = 0
        self.merges: list[tuple[int, int, int, int]] = []
        self.row_number = 0
        self.row_cells: dict[int, object] = {}
        self.column = 0
        # The cell being read.
        self.ref = ""
        self.kind = "n"
        self.style = 0
        self.value: str | None = None
        self.formula: str | None = None
        self.shared: tuple[str, str] | None = None  # (si, t="shared") of the formula
        self.inline: list[str] | None = None
        self.capture: list[str] | None = None
        self.phonetic = 0
        self.shared_formulas: dict[str, tuple[str, str]] = {}  # si → (origin, text)

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        local = _LOCAL_NAMES.get(tag) or _local(tag)
        if local == "c":
            ref = attrs.get("r")
            self.column = _column(ref) if ref else self.column + 1
            if self.column > MAX_COLUMN:
                raise LedgerError(f"sheet {self.name!r}: cell {ref} is beyond column XFD")
            self.ref = ref or f"#{self.column}"
            self.kind = attrs.get("t", "n")
            style = attrs.get("s")
            self.style = int(style) if style and style.isdigit() else 0
            self.value = self.formula = None
            self.shared = None
            self.inline = None
        elif local == "v":
            self.capture = []
        elif local == "f":
            self.capture = []
            if attrs.get("t") == "shared" and "si" in attrs:
                self.shared = (attrs["si"], attrs.get("ref", ""))
        elif local == "is":
            self.inline = []
        elif local == "t" and self.inline is not None and not self.phonetic:
            self.capture = []
        elif local == "rPh":
            self.phonetic += 1
        elif local == "row":
            number = attrs.get("r")
            self.row_number = int(number) if number and number.isdigit() else self.row_number + 1
            self.row_cells = {}
            self.column = 0
        elif local == "mergeCell":
            self._merge(attrs.get("ref", ""))

    def text(self, data: str) -> None:
        if self.capture is not None:
            self.capture.append(data)

    def end(self, tag: str) -> None:
        local = _LOCAL_NAMES.get(tag) or _local(tag)
        if local == "v":
            self.value = "".join(self.capture or ())
            self.capture = None
        elif local == "f":
            self.formula = "".join(self.capture or ())
            self.capture = None
            if self.shared is not None and self.formula:
                # The first cell of a shared formula holds its text; the others refer
                # to it by index and are translated from it when they are reported.
                self.shared_formulas[self.shared[0]] = (self.ref, self.formula)
        elif local == "t" and self.capture is not None and self.inline is not None:
            self.inline.append("".join(self.capture))
            self.capture = None
        elif local == "rPh":
            self.phonetic -= 1
        elif local == "c":
            value = self._cell_value()
            if value is not None and value != "":
                self.row_cells[self.column] = value
        elif local == "row":
            self._end_row()

    def _end_row(self) -> None:
        if not self.row_cells:
            return
        width = max(self.row_cells)
        self.cells_kept += width
        if self.cells_kept > MAX_CELLS:
            raise LedgerError(
                f"sheet {self.name!r} has more than {MAX_CELLS:,} cells; split the ledger"
            )
        cells: list[object] = [None] * width
        for column, value in self.row_cells.items():
            cells[column - 1] = value
        self.rows.append((self.row_number, tuple(cells)))

    def _cell_value(self) -> object:
        kind, raw = self.kind, self.value
        if kind == "e":
            return CellError(self.ref, raw or "#VALUE!")
        has_formula = self.formula is not None or self.shared is not None
        if has_formula and (self.book.uncalculated or raw is None or (raw == "" and kind != "str")):
            return Formula(self.ref, self._formula_text())
        if kind == "inlineStr":
            return _unescape("".join(self.inline or ()))
        if raw is None:
            return None
        return self._typed(kind, raw)

    def _typed(self, kind: str, raw: str) -> object:
        match kind:
            case "s":
                try:
                    return self.book.shared_strings[int(raw)]
                except (ValueError, IndexError) as exc:
                    raise LedgerError(
                        f"sheet {self.name!r}, cell {self.ref}: refers to shared string "
                        f"{raw!r}, which the workbook does not have"
                    ) from exc
            case "str":
                return _unescape(raw)
            case "b":
                return raw.strip() in ("1", "true")
            case "d":
                try:
                    return datetime.fromisoformat(raw.strip().removesuffix("Z"))
                except ValueError:
                    return raw
            case _:
                return self._number(raw)

    def _number(self, raw: str) -> object:
        text = raw.strip()
        try:
            number: int | float = (
                float(text) if ("." in text or "e" in text or "E" in text) else int(text)
            )
        except ValueError:
            return text  # not a number after all: the ledger's column rules judge it
        if self.style in self.book.date_styles:
            try:
                return from_excel(
                    number, self.book.epoch, timedelta=self.style in self.book.timedelta_styles
                )
            except (OverflowError, ValueError, TypeError):
                return number  # a serial beyond any date: the date column reports it
        return number

    def _formula_text(self) -> str:
        text = self.formula or ""
        if self.shared is not None and not text:
            si, _ = self.shared
            if si in self.shared_formulas:
                origin, master = self.shared_formulas[si]
                try:
                    text = Translator(f"={master}", origin).translate_formula(self.ref)[1:]
                except (TranslatorError, ValueError, IndexError):
                    text = master
        return f"={text}" if text else ""

    def _merge(self, ref: str) -> None:
        try:
            min_col, min_row, max_col, max_row = range_boundaries(ref)
        except (ValueError, TypeError):
            return  # an unreadable range merges nothing; the cells keep their own values
        if None in (min_col, min_row, max_col, max_row):
            return
        self.merges.append((int(min_col), int(min_row), int(max_col), int(max_row)))  # type: ignore[arg-type]

    def finish(self) -> Sheet:
        self.rows.sort(key=lambda row: row[0])
        if self.merges and self.rows:
            _fill_merged(self.name, self.rows, self.merges)
        return Sheet(self.name, self.rows, len(self.merges))


def _fill_merged(name: str, rows: list[Row], merges: list[tuple[int, int, int, int]]) -> None:
    """The top-left value of each range into every cell of it, in the rows that exist."""
    numbers = [number for number, _ in rows]
    position = {number: index for index, number in enumerate(numbers)}
    width = max(len(cells) for _, cells in rows)
    # Ranges do not overlap in a valid file, so they fill at most every cell once.
    budget = len(rows) * width
    grown: dict[int, list[object]] = {}
    for min_col, min_row, max_col, max_row in merges:
        top = position.get(min_row)
        if top is None:
            continue
        top_cells = grown.get(top) or rows[top][1]
        value = top_cells[min_col - 1] if min_col - 1 < len(top_cells) else None
        if value is None:
            continue
        last_col = min(max_col, width)
        for index in range(bisect_left(numbers, min_row), bisect_right(numbers, max_row)):
            cells = grown.get(index)
            if cells is None:
                cells = grown[index] = list(rows[index][1])
            if len(cells) < last_col:
                cells.extend([None] * (last_col - len(cells)))
            for column in range(min_col - 1, last_col):
                cells[column] = value
            budget -= last_col - min_col + 1
            if budget < 0:
                raise LedgerError(
                    f"sheet {name!r}: its merged ranges overlap, which Excel does not allow; "
                    "open and save the file in Excel or WPS to repair it"
                )
    for index, cells in grown.items():
        rows[index] = (rows[index][0], tuple(cells))
