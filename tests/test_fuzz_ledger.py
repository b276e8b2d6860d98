"""Fuzzing the ledger import: generated cells, rows and files.

Three properties, each over generated input (hypothesis):

- **rows through the database**: a devices sheet (CSV or XLSX) of valid rows, some with
  SQL characters, long and unusual names, merged 车间 ranges, and poisoned rows, each
  with exactly one bad cell (a control character, a formula without a value, an error
  value, a huge or negative number, an impossible date, a code that is SQL, text
  beyond its length). After ``zhizao registry import`` every valid row is stored exactly
  once and as written, every poisoned row is reported at its sheet, row and column,
  and nothing else is lost;
- **any cells**: a sheet of arbitrary cells under arbitrary known headers parses to a
  report (models, errors, warnings), never an exception other than LedgerError;
- **any bytes**: a corrupted workbook or random bytes is a LedgerError or a report.

The example count is ``ZHIZAO_FUZZ_EXAMPLES`` (default 40, which CI runs);
docs/robustness.md records a longer run.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import os
import random
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from zhizao.cli.registry import import_ledger
from zhizao.codes import make_credit_code
from zhizao.errors import LedgerError
from zhizao.ledger import Ledger, parse_ledger
from zhizao.settings import DatabaseSettings

EXAMPLES = int(os.environ.get("ZHIZAO_FUZZ_EXAMPLES", "40"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # One database serves every example of a test; each example has its own enterprise.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HEADER = ["统一社会信用代码", "设备编号", "设备名称", "设备类型", "车间", "标准节拍(秒)",
          "投产日期"]  # fmt: skip
CODE, NAME, TYPE, WORKSHOP, CYCLE, DATE = range(1, 7)
SQL = [
    "'; DROP TABLE device; --",
    "Robert'); DELETE FROM enterprise;--",
    "1 OR 1=1",
    '"; SELECT pg_sleep(10); --',
    "%s %(x)s {0} $1",
    "\\x00 literally",
    "NULL",
]
TYPES = ["数控机床", "加工中心", "industrial_robot", "冲床", "注塑机", "空压机", "三坐标", "CNC"]
WORKSHOPS = ["机加车间", "装配车间", "冲压 车间", "Workshop-1", "'; DROP TABLE site; --"]
_serial = itertools.count()


# ------------------------------------------------------------------ strategies

# Text that is valid in a name cell: printable, no "=" in front (a formula in XLSX), no
# Excel escape (_x0041_), no error code, not blank.
_NAME_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp", "Cf"),
    exclude_characters="_",
)
names = st.one_of(
    st.sampled_from(SQL),
    st.text(_NAME_CHARS, min_size=1, max_size=200),
    st.text(st.sampled_from("设备加工中心 ABC-#/()（）'\"%;"), min_size=1, max_size=40),
).map(lambda text: text.strip()).filter(
    lambda text: 0 < len(text) <= 200 and not text.startswith(("=", "#", "+", "-", "@"))
)
cycles = st.one_of(
    st.none(),
    st.floats(min_value=0.001, max_value=86_400, allow_nan=False),
    st.integers(min_value=1, max_value=86_400),
    st.sampled_from(["45秒", "1分30秒", "12.5"]),
)
dates = st.one_of(
    st.none(),
    st.dates(min_value=date(1990, 1, 1), max_value=date(2099, 12, 31)),
    st.sampled_from(["2024-03-01", "2024/3/1", "2024年3月1日", "20240301"]),
)


@dataclass
class Poison:
    column: int
    value: object
    xlsx_only: bool = False


def poisons(column_names: bool = True) -> st.SearchStrategy[Poison]:
    control = st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x9b", "\ufffe"])
    return st.one_of(
        st.builds(Poison, st.just(CODE), st.sampled_from([*SQL[:2], "x" * 65, "三号机"])),
        st.builds(lambda c: Poison(CODE, f"CNC{c}01"), control),
        st.builds(lambda c: Poison(NAME, f"加工{c}中心"), control),
        st.builds(lambda c: Poison(WORKSHOP, f"机加{c}车间"), control),
        st.just(Poison(NAME, "名" * 201)),
        st.just(Poison(WORKSHOP, "车" * 201)),
        st.just(Poison(TYPE, SQL[0])),
        st.builds(
            Poison,
            st.just(CYCLE),
            st.sampled_from([-5, 0, 86_401, 10**400, "1" + "0" * 400, "abc", "500ms", math.inf]),
        ),
        st.builds(
            Poison,
            st.just(DATE),
            st.sampled_from(["2023-02-30", "99999999", SQL[0], 10**30, "明天"]),
        ),
        st.builds(
            lambda column, formula: Poison(column, formula, xlsx_only=True),
            st.sampled_from([NAME, TYPE, WORKSHOP, CYCLE, DATE]),
            st.sampled_from(["=A1", "=VLOOKUP(B2,Sheet2!A:B,2,FALSE)", "=1/0", "=NOW()"]),
        ),
        st.builds(
            lambda column, code: Poison(column, code, xlsx_only=True),
            st.sampled_from([NAME, TYPE, WORKSHOP]),
            st.sampled_from(["#N/A", "#REF!", "#DIV/0!", "#VALUE!"]),
        ),
    )


@dataclass
class Row:
    cells: list[object]
    poison: Poison | None = None


@st.composite
def sheets(draw: st.DrawFn) -> tuple[str, list[Row], tuple[int, int] | None]:
    kind = draw(st.sampled_from(["csv", "xlsx"]))
    count = draw(st.integers(min_value=1, max_value=10))
    rows: list[Row] = []
    for index in range(count):
        cells: list[object] = [
            None,  # the enterprise, set per example
            f"D{index:03d}",
            draw(names),
            draw(st.sampled_from(TYPES)),
            draw(st.one_of(st.none(), st.sampled_from(WORKSHOPS))),
            draw(cycles),
            draw(dates),
        ]
        row = Row(cells)
        if draw(st.booleans()):
            poison = draw(poisons().filter(lambda p: kind == "xlsx" or not p.xlsx_only))
            if kind == "xlsx" and isinstance(poison.value, str):
                # openpyxl refuses control characters; Excel writes them as _xHHHH_.
                poison.value = "".join(
                    f"_x{ord(c):04X}_" if ord(c) < 32 or c == "\ufffe" else c for c in poison.value
                )
            too_big = isinstance(poison.value, int) and poison.value.bit_length() > 1000
            if too_big or (isinstance(poison.value, float) and math.isinf(poison.value)):
                # Neither a CSV nor openpyxl can write these as numbers: as text.
                poison.value = str(poison.value)
            row.cells[poison.column] = poison.value
            row.poison = poison
        rows.append(row)
    merged = None
    if kind == "xlsx" and count >= 2 and draw(st.booleans()):
        start = draw(st.integers(min_value=0, max_value=count - 2))
        end = draw(st.integers(min_value=start + 1, max_value=count - 1))
        if all(r.poison is None or r.poison.column != WORKSHOP for r in rows[start : end + 1]):
            for row in rows[start : end + 1]:
                row.cells[WORKSHOP] = "合并车间"
            merged = (start, end)
    return kind, rows, merged


def write(path: Path, kind: str, credit: str, rows: list[Row], merged: tuple[int, int] | None
          ) -> Path:  # fmt: skip
    for row in rows:
        row.cells[0] = credit
    if kind == "csv":
        import csv

        target = path.with_suffix(".csv")
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for row in rows:
                writer.writerow(["" if c is None else c for c in row.cells])
        return target
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "设备台账"
    sheet.append(HEADER)
    for index, row in enumerate(rows):
        cells = list(row.cells)
        if merged and merged[0] < index <= merged[1]:
            cells[WORKSHOP] = None  # below the top-left cell Excel keeps nothing
        sheet.append(cells)
    if merged:
        column = "E"
        sheet.merge_cells(f"{column}{merged[0] + 2}:{column}{merged[1] + 2}")
    target = path.with_suffix(".xlsx")
    book.save(target)
    return target


def register(url: str, credit: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO enterprise (credit_code, name, region_code, industry_code)"
            " VALUES (%s, %s, '330206', 'C3670')",
            (credit, f"企业 {credit}"),
        )


# ------------------------------------------------------------------ properties


@fuzz
@given(sheet=sheets())
def test_valid_rows_are_stored_once_and_each_poisoned_row_is_reported(
    db_url: str, tmp_path: Path, sheet: tuple[str, list[Row], tuple[int, int] | None]
) -> None:
    kind, rows, merged = sheet
    credit = make_credit_code(f"91330206MA{next(_serial):07d}")
    register(db_url, credit)
    path = write(tmp_path / f"ledger-{credit}", kind, credit, rows, merged)

    ledger, changes = asyncio.run(import_ledger(DatabaseSettings(url=db_url), path))

    sheet_name = path.name if kind == "csv" else "设备台账"
    reported = {(e.sheet, e.row, e.column) for e in ledger.errors}
    for number, row in enumerate(rows, start=2):
        if row.poison is not None:
            assert (sheet_name, number, HEADER[row.poison.column]) in reported, (
                row.poison,
                ledger.errors,
            )
    # Nothing but the poisoned rows is reported or lost.
    assert {e.row for e in ledger.errors} == {
        n for n, r in enumerate(rows, start=2) if r.poison is not None
    }
    valid = [row for row in rows if row.poison is None]
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "SELECT d.code, d.name, s.name FROM device d"
            " JOIN enterprise e ON e.id = d.enterprise_id"
            " LEFT JOIN site s ON s.id = d.site_id WHERE e.credit_code = %s ORDER BY d.code",
            (credit,),
        ).fetchall()
    assert stored == [(r.cells[CODE], r.cells[NAME], r.cells[WORKSHOP]) for r in valid]
    assert changes.devices.inserted == len(valid)


cells = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.sampled_from(["是", "否", "Y", "=A1", "#N/A", "", " ", *SQL, *TYPES]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.dates(),
    st.booleans(),
)
ALL_HEADERS = [*HEADER, "产线", "产线编号", "是否数控", "是否生产设备", "停用日期",
               "节拍(分钟)", "资产编号", "备注", "未知列", "", "企业名称", "行政区划代码",
               "行业代码"]  # fmt: skip


@fuzz
@given(
    headers=st.lists(st.sampled_from(ALL_HEADERS), min_size=1, max_size=12),
    body=st.lists(st.lists(cells, max_size=14), max_size=12),
    kind=st.sampled_from(["csv", "xlsx"]),
)
def test_any_cells_give_a_report_never_another_exception(
    headers: list[str], body: list[list[object]], kind: str
) -> None:
    _assert_report_or_refusal(_any_file(kind, headers, body), f"ledger.{kind}")


def _any_file(kind: str, headers: list[str], body: list[list[object]]) -> bytes:
    if kind == "csv":
        import csv

        text = io.StringIO()
        writer = csv.writer(text)
        for row in [headers, *body]:
            writer.writerow(["" if c is None else str(c) for c in row])
        return text.getvalue().encode("utf-8", "surrogatepass")
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "设备台账"
    for row in [headers, *body]:
        sheet.append([_storable(c) for c in row])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _storable(cell: object) -> object:
    """A cell openpyxl can write: control characters as Excel writes them."""
    if isinstance(cell, str):
        return "".join(f"_x{ord(c):04X}_" if ord(c) < 32 or 0xD800 <= ord(c) < 0xE000 else c
                       for c in cell)  # fmt: skip
    if isinstance(cell, float) and not math.isfinite(cell):
        return str(cell)
    return cell


def _assert_report_or_refusal(data: bytes, source: str) -> None:
    """A report of the file, or a LedgerError that names it; never another exception."""
    refusal: LedgerError | None = None
    try:
        ledger = parse_ledger(data, source)
    except LedgerError as exc:
        refusal = exc
    if refusal is not None:
        assert str(refusal).startswith(source)
        return
    _assert_report(ledger)


def _assert_report(ledger: Ledger) -> None:
    for problem in [*ledger.errors, *ledger.warnings]:
        assert problem.sheet
        assert problem.row >= 0
        assert problem.reason
        assert "\x00" not in str(problem)  # shown as <U+0000>, safe for a terminal
    models = len(ledger.devices) + len(ledger.enterprises)
    assert models + sum(ledger.rejected_rows.values()) <= sum(ledger.rows_by_table.values())


def _good_workbook() -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "设备台账"
    sheet.append(HEADER)
    sheet.append(["91330206MA2GR7K17L", "D1", "名", "数控机床", "机加车间", 30, date(2024, 3, 1)])
    sheet.merge_cells("E2:E3")
    sheet["F3"] = "=F2*2"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


GOOD_XLSX = _good_workbook()


@fuzz
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    flips=st.integers(min_value=1, max_value=40),
    mode=st.sampled_from(["bytes", "part", "random"]),
)
def test_corrupt_workbooks_and_random_bytes_are_ledger_errors_or_reports(
    seed: int, flips: int, mode: str
) -> None:
    rng = random.Random(seed)
    if mode == "random":
        data = rng.randbytes(rng.randint(0, 4000))
    elif mode == "bytes":
        buffer = bytearray(GOOD_XLSX)
        for _ in range(flips):
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        data = bytes(buffer)
    else:
        # Valid zip, damaged XML inside: what a truncated or hand-edited file looks like.
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(GOOD_XLSX)) as old, zipfile.ZipFile(out, "w") as new:
            for item in old.infolist():
                part = bytearray(old.read(item))
                if item.filename.startswith("xl/") and part and rng.random() < 0.5:
                    for _ in range(flips):
                        part[rng.randrange(len(part))] = rng.choice(b"<>&\"'=/ ax0_\x00")
                new.writestr(item, bytes(part))
        data = out.getvalue()
    _assert_report_or_refusal(data, "damaged.xlsx")
