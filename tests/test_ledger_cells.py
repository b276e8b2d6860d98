"""Cells that used to stop an import or lose data, now each a located row error or read right.

A NUL or another control character in a cell, a merged 车间 cell over five device rows,
a formula without a computed value (a file written by a program, not saved by Excel),
an error value such as #N/A, and a workbook written by XlsxWriter (another program
than openpyxl, which stores 0 as every formula's value): each is imported through the
real CLI into a real database, and the test reads what the user sees.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import psycopg
import pytest
import xlsxwriter
from openpyxl import Workbook

from zhizao.ledger import parse_ledger, read_ledger
from zhizao.registry import Device
from zhizao.storage.connection import Conn
from zhizao.storage.registry import store_ledger

from .test_ledger_realworld import (
    RUICHI,
    error_rows,
    rows,
    summary_numbers,
    wide_console,  # noqa: F401 - the autouse fixture of those tests applies here too
    zhizao,
)

ENTERPRISE_HEADER = ["统一社会信用代码", "企业名称", "行政区划代码", "行业代码"]
ENTERPRISE = [RUICHI, "宁波瑞驰精密汽车零部件有限公司", "330206", "C3670"]
DEVICE_HEADER = ["统一社会信用代码", "设备编号", "设备名称", "设备类型", "车间", "产线"]


def device_rows(count: int = 5) -> list[list[object]]:
    return [
        [RUICHI, f"CNC-{n:02d}", f"立式加工中心 #{n}", "数控机床", "机加车间", "L1"]
        for n in range(1, count + 1)
    ]


def workbook_with(devices: list[list[object]]) -> Workbook:
    book = Workbook()
    enterprises = book.active
    assert enterprises is not None
    enterprises.title = "企业"
    enterprises.append(ENTERPRISE_HEADER)
    enterprises.append(ENTERPRISE)
    sheet = book.create_sheet("设备台账")
    sheet.append(DEVICE_HEADER)
    for device in devices:
        sheet.append(device)
    return book


def stored_devices(db_url: str) -> list[tuple[object, ...]]:
    return rows(
        db_url,
        "SELECT d.code, d.name, s.name, l.code FROM device d"
        " LEFT JOIN site s ON s.id = d.site_id LEFT JOIN line l ON l.id = d.line_id"
        " ORDER BY d.code",
    )


# ------------------------------------------------------------------ control characters


def test_a_nul_in_a_csv_cell_is_that_rows_error_and_the_others_are_stored(
    db_url: str, tmp_path: Path
) -> None:
    enterprises = write_enterprises(tmp_path)
    assert zhizao("registry", "import", str(enterprises), "--db-url", db_url)[0] == 0
    path = tmp_path / "devices.csv"
    lines = [",".join(DEVICE_HEADER)] + [",".join(map(str, row)) for row in device_rows(3)]
    lines[2] = lines[2].replace("立式加工中心 #2", "立式加工\x00中心 #2")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)

    assert code == 1, out  # some rows rejected, no traceback
    assert summary_numbers(out)[:3] == (2, 1, 1)
    assert error_rows(out) == [
        (
            "devices.csv",
            3,
            "设备名称",
            "立式加工<U+0000>中心 #2",
            "contains U+0000 (a control character), which is not text (often left by "
            "copying from another system); delete it",
        )
    ]
    assert [code for code, *_ in stored_devices(db_url)] == ["CNC-01", "CNC-03"]


def write_enterprises(tmp_path: Path) -> Path:
    path = tmp_path / "enterprises.csv"
    path.write_text(
        ",".join(ENTERPRISE_HEADER) + "\n" + ",".join(ENTERPRISE) + "\n", encoding="utf-8"
    )
    return path


@pytest.mark.parametrize(
    ("written", "shown", "code_point"),
    [
        ("CNC_x0000_02", "CNC<U+0000>02", "U+0000"),  # how Excel writes NUL in a cell
        ("立式加工中心_x001B_[31m", "立式加工中心<U+001B>[31m", "U+001B"),  # ESC
        ("立式加工中心_xD800_", "立式加工中心<U+D800>", "U+D800"),  # half a surrogate pair
    ],
)
def test_control_characters_excel_escapes_in_xlsx_are_row_errors(
    written: str, shown: str, code_point: str
) -> None:
    devices = device_rows(3)
    column = 1 if written.startswith("CNC") else 2
    devices[1][column] = written
    ledger = parse_ledger(xlsx_bytes(workbook_with(devices)), "台账.xlsx")

    assert [d.code for d in ledger.devices] == ["CNC-01", "CNC-03"]
    [error] = ledger.errors
    assert (error.sheet, error.row, error.column) == ("设备台账", 3, DEVICE_HEADER[column])
    assert error.value == shown
    assert code_point in error.reason


def test_an_escaped_underscore_stays_text() -> None:
    devices = device_rows(1)
    devices[0][2] = "加工中心 _x005F_x0041_"  # Excel's escape of the literal text _x0041_
    ledger = parse_ledger(xlsx_bytes(workbook_with(devices)), "台账.xlsx")
    assert ledger.errors == []
    assert ledger.devices[0].name == "加工中心 _x0041_"


async def test_a_ledger_built_in_code_with_a_nul_costs_only_its_row(conn: Conn) -> None:
    """The store's own defence: a model nobody validated (Device.model_construct, as
    other code may build one) that the database refuses is that row's error."""
    ledger = parse_ledger(xlsx_bytes(workbook_with(device_rows(3))), "台账.xlsx")
    bad = ledger.devices[1]
    unvalidated = Device.model_construct(**{**dict(bad), "name": "立式\x00加工中心"})
    ledger.devices[1] = unvalidated
    ledger.origins[unvalidated] = ledger.origins[bad]

    changes = await store_ledger(conn, ledger)

    assert changes.devices.inserted == 2
    [error] = ledger.errors
    assert (error.sheet, error.row, error.value) == ("设备台账", 3, "CNC-02")
    assert "the database refused this row" in error.reason
    cur = await conn.execute("SELECT code FROM device ORDER BY code")
    assert await cur.fetchall() == [("CNC-01",), ("CNC-03",)]


# ------------------------------------------------------------------ merged cells


def test_a_merged_workshop_cell_gives_every_row_of_the_range_its_workshop(
    db_url: str, tmp_path: Path
) -> None:
    devices = device_rows(6)
    for device in devices[1:5]:
        device[4] = None  # below the top-left cell of a merged range Excel keeps nothing
    devices[5][4] = "装配车间"
    book = workbook_with([])
    sheet = book["设备台账"]
    sheet.delete_rows(1)
    sheet.append(["宁波瑞驰 设备台账（2026年）"])
    sheet.merge_cells("A1:F1")  # a title across the sheet, above the header
    sheet.append(DEVICE_HEADER)
    for device in devices:
        sheet.append(device)
    sheet.merge_cells("E3:E7")  # 机加车间 over the first five devices
    path = tmp_path / "merged.xlsx"
    book.save(path)

    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)

    assert code == 0, out
    assert [(c, site) for c, _, site, _ in stored_devices(db_url)] == [
        ("CNC-01", "机加车间"),
        ("CNC-02", "机加车间"),
        ("CNC-03", "机加车间"),
        ("CNC-04", "机加车间"),
        ("CNC-05", "机加车间"),
        ("CNC-06", "装配车间"),
    ]


def test_a_merged_range_over_blank_rows_adds_no_rows() -> None:
    devices = device_rows(2)
    book = workbook_with(devices)
    sheet = book["设备台账"]
    sheet.merge_cells("E3:E9")  # rows 4-9 are empty apart from the merged range
    ledger = parse_ledger(xlsx_bytes(book), "台账.xlsx")
    assert ledger.rows_read["设备台账"] == 2
    assert ledger.errors == []


# ------------------------------------------------------------------ formulas and errors


def test_a_formula_without_a_computed_value_is_an_error_naming_cell_and_formula(
    db_url: str, tmp_path: Path
) -> None:
    devices = device_rows(3)
    devices[1][5] = "=VLOOKUP(B3,产线表!A:B,2,FALSE)"  # 产线: would be stored blank before
    book = workbook_with(devices)
    path = tmp_path / "formula.xlsx"
    book.save(path)  # openpyxl, like any program that does not calculate, stores no value

    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)

    assert code == 1, out
    [(sheet, row, column, value, reason)] = error_rows(out)
    assert (sheet, row, column, value) == ("设备台账", 3, "产线", "=VLOOKUP(B3,产线表!A:B,2,FALSE)")
    assert reason.startswith(
        "cell F3 holds the formula =VLOOKUP(B3,产线表!A:B,2,FALSE) without a computed value"
    )
    assert "Open it in Excel or WPS, save it" in reason
    assert [c for c, *_ in stored_devices(db_url)] == ["CNC-01", "CNC-03"]


def test_an_error_value_in_a_cell_is_that_rows_error() -> None:
    devices = device_rows(2)
    devices[0][2] = "#N/A"  # a lookup that failed in Excel: stored as an error value
    ledger = parse_ledger(xlsx_bytes(workbook_with(devices)), "台账.xlsx")
    [error] = ledger.errors
    assert (error.row, error.column, error.value) == (2, "设备名称", "#N/A")
    assert "cell C2 shows the error #N/A" in error.reason
    assert [d.code for d in ledger.devices] == ["CNC-02"]


def test_a_workbook_written_by_xlsxwriter(tmp_path: Path, db_url: str) -> None:
    """XlsxWriter writes shared strings, real date cells, merged ranges, and 0 as the
    value of every formula (asking Excel to recalculate on opening)."""
    path = tmp_path / "导出.xlsx"
    book = xlsxwriter.Workbook(str(path))
    enterprises = book.add_worksheet("企业")
    enterprises.write_row(0, 0, ENTERPRISE_HEADER)
    enterprises.write_row(1, 0, ENTERPRISE)
    sheet = book.add_worksheet("设备台账")
    day = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet.write_row(0, 0, [*DEVICE_HEADER, "投产日期", "标准节拍(秒)"])
    for index, device in enumerate(device_rows(4), start=1):
        sheet.write_row(index, 0, device[:4])
        # A spreadsheet date has no time zone: an aware datetime made naive.
        moment = datetime.datetime(2021, 3, index, tzinfo=datetime.UTC).replace(tzinfo=None)
        sheet.write_datetime(index, 6, moment, day)
        sheet.write_number(index, 7, 30 + index)
    sheet.merge_range("E2:E5", "机加车间")
    sheet.merge_range("F2:F3", "L1")
    sheet.write_string(3, 5, "L2")
    sheet.write_string(4, 5, "L2")
    sheet.write_formula(4, 7, "=H4*2")  # a computed cycle time: stored as 0 by XlsxWriter
    book.close()

    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)

    assert code == 1, out
    [(sheet_name, row, column, value, reason)] = error_rows(out)
    assert (sheet_name, row, column, value) == ("设备台账", 5, "标准节拍(秒)", "=H4*2")
    assert "cell H5 holds the formula =H4*2 without a computed value" in reason
    assert stored_devices(db_url) == [
        ("CNC-01", "立式加工中心 #1", "机加车间", "L1"),
        ("CNC-02", "立式加工中心 #2", "机加车间", "L1"),
        ("CNC-03", "立式加工中心 #3", "机加车间", "L2"),
    ]
    assert rows(db_url, "SELECT commissioned_on, ideal_cycle_time_s FROM device ORDER BY code") == [
        (datetime.date(2021, 3, 1), 31.0),
        (datetime.date(2021, 3, 2), 32.0),
        (datetime.date(2021, 3, 3), 33.0),
    ]


def test_a_saved_formula_value_is_read_as_excel_showed_it(tmp_path: Path) -> None:
    """A file saved by a spreadsheet program keeps each formula's last value: that is
    what is read (built here by editing the XML as Excel writes it)."""
    import zipfile

    source = tmp_path / "calc.xlsx"
    book = workbook_with(device_rows(1))
    book["设备台账"]["F2"] = '=UPPER("l1")'
    book.save(source)
    saved = tmp_path / "saved.xlsx"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(saved, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "xl/workbook.xml":
                data = re.sub(rb'\s*fullCalcOnLoad="1"', b"", data)
            if item.filename == "xl/worksheets/sheet2.xml":
                data = data.replace(b"<v />", b"<v>L1</v>").replace(b'r="F2"', b'r="F2" t="str"')
            new.writestr(item, data)
    ledger = read_ledger(saved)
    assert ledger.errors == []
    assert ledger.devices[0].line_code == "L1"


def xlsx_bytes(book: Workbook) -> bytes:
    import io

    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_the_database_sees_no_half_import_after_a_refused_row(db_url: str, tmp_path: Path) -> None:
    """The rows stored are committed; the summary counts what the database holds."""
    devices = device_rows(3)
    devices[2][2] = "加工中心\x07"  # BEL, from a terminal program's export
    path = tmp_path / "bell.csv"
    path.write_text(
        "\n".join(
            [",".join(ENTERPRISE_HEADER), ",".join(ENTERPRISE)]
        ) + "\n", encoding="utf-8",
    )  # fmt: skip
    assert zhizao("registry", "import", str(path), "--db-url", db_url)[0] == 0
    devices_csv = tmp_path / "devices.csv"
    devices_csv.write_text(
        "\n".join([",".join(DEVICE_HEADER)] + [",".join(map(str, r)) for r in devices]) + "\n",
        encoding="utf-8",
    )
    code, out = zhizao("registry", "import", str(devices_csv), "--db-url", db_url)
    assert code == 1, out
    assert "U+0007" in out
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM device").fetchone()
    assert stored == (summary_numbers(out)[0],) == (2,)
