"""zhizao.xlsx on workbooks written part by part, as Excel, WPS and other programs do.

openpyxl cannot write some of what real files hold (a locale date format without its
definition, shared formulas, the 1904 date system with a cached value, a DTD), so
these workbooks are assembled from their XML parts here.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime

import pytest

from zhizao.errors import LedgerError
from zhizao.xlsx import Formula, Workbook

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/></Types>'
)
PACKAGE_RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
WORKBOOK_RELS = (
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="worksheets/sheet1.xml"/>'
    '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/styles" Target="styles.xml"/>'
    '<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>'
)
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def workbook(sheet_data: str, *, strings: list[str] = (), workbook_pr: str = "",
             styles: str = "", prefix: str = "", before: str = "") -> bytes:  # fmt: skip
    """A workbook of one sheet 设备台账 whose <sheetData> is ``sheet_data``."""
    p = f"{prefix}:" if prefix else ""
    ns = f'xmlns{":" + prefix if prefix else ""}="{MAIN}"'
    parts = {
        "[Content_Types].xml": CONTENT_TYPES,
        "_rels/.rels": PACKAGE_RELS,
        "xl/_rels/workbook.xml.rels": WORKBOOK_RELS,
        "xl/workbook.xml": f'<{p}workbook {ns} xmlns:r="{REL}">{workbook_pr}<{p}sheets>'
        f'<{p}sheet name="设备台账" sheetId="1" r:id="rId1"/></{p}sheets></{p}workbook>',
        "xl/styles.xml": f'<styleSheet xmlns="{MAIN}">{styles}</styleSheet>',
        "xl/sharedStrings.xml": f'<sst xmlns="{MAIN}">'
        + "".join(f"<si><t>{s}</t></si>" for s in strings)
        + "</sst>",
        "xl/worksheets/sheet1.xml": f"{before}<{p}worksheet {ns}><{p}sheetData>{sheet_data}"
        f"</{p}sheetData></{p}worksheet>",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def rows(data: bytes) -> list[tuple[int, tuple[object, ...]]]:
    book = Workbook(data)
    try:
        return [row for sheet in book.sheets() for row in sheet.rows]
    finally:
        book.close()


# A spreadsheet date-time has no time zone.
MARCH_1 = datetime(2024, 3, 1, tzinfo=UTC).replace(tzinfo=None)


def test_a_chinese_locale_date_format_without_a_definition_is_a_date() -> None:
    # numFmtId 57 is yyyy"年"m"月" in Chinese Excel, which writes no <numFmt> for it.
    styles = '<cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="57"/></cellXfs>'
    data = workbook('<row r="1"><c r="A1" s="1"><v>45352</v></c></row>', styles=styles)
    assert rows(data) == [(1, (MARCH_1,))]


def test_the_1904_date_system() -> None:
    styles = '<cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14"/></cellXfs>'
    data = workbook(
        '<row r="1"><c r="A1" s="1"><v>43890</v></c></row>',
        styles=styles,
        workbook_pr='<workbookPr date1904="1"/>',
    )
    assert rows(data) == [(1, (MARCH_1,))]


def test_shared_formulas_without_values_name_their_own_formula() -> None:
    data = workbook(
        '<row r="2"><c r="B2"><f t="shared" ref="B2:B3" si="0">A2*2</f></c></row>'
        '<row r="3"><c r="B3"><f t="shared" si="0"/></c></row>'
    )
    assert rows(data) == [
        (2, (None, Formula("B2", "=A2*2"))),
        (3, (None, Formula("B3", "=A3*2"))),
    ]


def test_a_computed_value_is_read_and_a_prefix_changes_nothing() -> None:
    data = workbook(
        '<x:row r="1"><x:c r="A1" t="s"><x:v>0</x:v></x:c>'
        '<x:c r="B1" t="str"><x:f>UPPER("l1")</x:f><x:v>L1</x:v></x:c>'
        '<x:c r="C1" t="b"><x:v>1</x:v></x:c><x:c r="E1"><x:v>12.5</x:v></x:c></x:row>',
        strings=["设备_x000D_编号"],
        prefix="x",
    )
    assert rows(data) == [(1, ("设备\r编号", "L1", True, None, 12.5))]


def test_a_dtd_is_refused() -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol">]>'
    with pytest.raises(LedgerError, match="DTD"):
        rows(workbook('<row r="1"><c r="A1" t="s"><v>0</v></c></row>', strings=["a"],
                      before=bomb))  # fmt: skip


def test_a_reference_to_a_missing_shared_string_is_refused() -> None:
    with pytest.raises(LedgerError, match="shared string '7'"):
        rows(workbook('<row r="1"><c r="A1" t="s"><v>7</v></c></row>', strings=["a"]))


def test_overlapping_merged_ranges_are_refused() -> None:
    # <mergeCells> follows <sheetData>: closed and reopened (empty) around it here.
    merged = workbook(
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>0</v></c></row>'
        '<row r="2"><c r="A2" t="s"><v>0</v></c><c r="B2" t="s"><v>0</v></c></row>'
        '</sheetData><mergeCells><mergeCell ref="A1:B2"/><mergeCell ref="A1:B2"/>'
        '<mergeCell ref="A1:B2"/></mergeCells><sheetData>',
        strings=["车间"],
    )
    with pytest.raises(LedgerError, match="merged ranges overlap"):
        rows(merged)
