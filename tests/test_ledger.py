"""Parsing of equipment-ledger files (zhizao.ledger): pure, no database."""

from __future__ import annotations

import importlib.util
import io
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from zhizao import codes
from zhizao.errors import InvalidValue, LedgerError
from zhizao.ledger import (
    Ledger,
    RowError,
    Table,
    parse_bool,
    parse_date,
    parse_device_type,
    parse_ledger,
    parse_minutes,
    parse_seconds,
    read_ledger,
    split_codes,
)
from zhizao.regions import zhejiang_regions
from zhizao.registry import DEVICE_TYPE_LABELS, Device, DeviceType

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_XLSX = ROOT / "zhizao" / "data" / "sample_ledger.xlsx"
SAMPLE_DEVICES_CSV = ROOT / "docs" / "samples" / "ledger-devices.csv"
SAMPLE_ENTERPRISES_CSV = ROOT / "docs" / "samples" / "ledger-enterprises.csv"
MIXED_CSV = Path(__file__).parent / "data" / "ledger_mixed.csv"
REGIONS_CSV = ROOT / "zhizao" / "data" / "regions_zhejiang.csv"

# Enterprises 1 and 2 of the sample ledger (宁波瑞驰, 慈溪宏拓).
RUICHI = "91330206MA2GR7K17L"
HONGTUO = "91330282MA28CX3P78"

# Hypothesis keeps no example database in the work tree: these tests are pure.
pure = settings(database=None, deadline=None)


def row_of(ledger: Ledger, model: Device) -> int:
    ref = ledger.origin(model)
    assert ref is not None
    return ref.row


def problems(items: list[RowError]) -> list[tuple[int, str, str]]:
    return [(e.row, e.column, e.reason) for e in items]


def excel_time(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A date-time as a spreadsheet cell holds it: without a time zone."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC).replace(tzinfo=None)


def xlsx_bytes(workbook: Workbook) -> bytes:
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# ------------------------------------------------------------------ the mixed file


def test_mixed_file_keeps_every_good_row_and_reports_each_bad_one() -> None:
    ledger = read_ledger(MIXED_CSV, known_enterprises={RUICHI, HONGTUO})

    assert [(row_of(ledger, d), d.enterprise, d.code) for d in ledger.devices] == [
        (2, RUICHI, "CNC-301"),
        (3, RUICHI, "RB-301"),
        (7, HONGTUO, "3D-01"),  # an unknown type, but the row says it is production equipment
        (9, HONGTUO, "CA-02"),
        (10, HONGTUO, "AC-02"),
        (12, HONGTUO, "VMC-02"),
        (14, RUICHI, "CNC-302"),  # after the blank row 13, still numbered as Excel shows it
    ]
    wrong_check = RUICHI[:-1] + "M"
    assert [(e.row, e.column, e.value) for e in ledger.errors] == [
        (4, "统一社会信用代码", wrong_check),
        (5, "设备编号", "CNC-301"),
        (6, "停用日期", "2020-12-31"),
        (8, "投产日期", "2023-02-30"),
        (11, "统一社会信用代码", "91330782MA2DF3G636"),
    ]
    reasons = [e.reason for e in ledger.errors]
    assert reasons[0] == "check character is 'M', GB 32100 gives 'L'"
    assert reasons[1] == "duplicate device code of this enterprise, first in row 2"
    # The kernel's rule names its field; the user reads the header of the file.
    assert reasons[2] == "is before 投产日期 2021-05-01"
    assert reasons[3].startswith("is not a calendar day")
    assert reasons[4] == "is not in the registry"
    assert all(e.source == str(MIXED_CSV) and e.sheet == "ledger_mixed.csv" for e in ledger.errors)
    # The unknown type is kept as 其他 with a warning naming the value.
    assert [(w.row, w.column, w.value) for w in ledger.warnings] == [(7, "设备类型", "3D打印机")]
    assert ledger.warnings[0].reason.startswith("is not a known device type; stored as 其他")
    printer = next(d for d in ledger.devices if d.code == "3D-01")
    assert (printer.device_type, printer.is_production_equipment) == (DeviceType.OTHER, True)
    # 备注 is a column ledgers keep for people: recognised and listed as not used.
    assert ledger.sheets[0].unused == ("备注",)
    assert ledger.rows_read == {"ledger_mixed.csv": 12}
    assert ledger.rows_by_table[Table.DEVICES] == 12
    assert ledger.rejected_rows[Table.DEVICES] == 5


def test_mixed_file_cells_are_converted_the_way_a_user_wrote_them() -> None:
    ledger = read_ledger(MIXED_CSV, known_enterprises={RUICHI, HONGTUO})
    by_code = {d.code: d for d in ledger.devices}

    robot = by_code["RB-301"]  # 2024/3/1, Y/N, enum value as device type
    assert robot.device_type is DeviceType.INDUSTRIAL_ROBOT
    assert robot.commissioned_on == date(2024, 3, 1)
    assert (robot.is_production_equipment, robot.is_nc, robot.key_process) == (True, True, False)
    assert robot.ideal_cycle_time_s is None

    lathe = by_code["CA-02"]  # not NC, decommissioned
    assert lathe.device_type is DeviceType.OTHER
    assert not lathe.is_nc
    assert lathe.decommissioned_on == date(2025, 6, 30)
    assert not lathe.in_service_on(date(2025, 7, 1))

    compressor = by_code["AC-02"]  # auxiliary: no line, not production equipment
    assert compressor.device_type is DeviceType.COMPRESSOR
    assert compressor.line_code is None
    assert not compressor.is_production_equipment

    centre = by_code["VMC-02"]  # 2024年3月1日, ✓, "120秒", a synonym as type
    assert centre.device_type is DeviceType.CNC_MACHINE_TOOL
    assert centre.commissioned_on == date(2024, 3, 1)
    assert (centre.is_production_equipment, centre.is_nc, centre.key_process) == (True, True, False)
    assert centre.ideal_cycle_time_s == 120.0

    assert by_code["CNC-302"].ideal_cycle_time_s == 180.5  # header written 标准节拍（秒）


def test_without_a_registry_the_enterprise_check_is_skipped_and_said_so() -> None:
    ledger = read_ledger(MIXED_CSV)

    assert [e.row for e in ledger.errors] == [4, 5, 6, 8]
    assert 11 in {row_of(ledger, d) for d in ledger.devices}
    assert problems(ledger.warnings)[0] == (
        0,
        "",
        "references to enterprises not checked: the file has no enterprises table "
        "and no list of those in the registry was given",
    )


# ------------------------------------------------------------------ the sample ledger


def test_sample_workbook_parses_without_errors_or_warnings() -> None:
    ledger = read_ledger(SAMPLE_XLSX)

    assert ledger.errors == []
    assert ledger.warnings == []
    assert ledger.rows_read == {"clusters": 4, "企业": 8, "设备台账": 63, "边缘网关": 7}
    assert (
        len(ledger.clusters),
        len(ledger.enterprises),
        len(ledger.devices),
        len(ledger.edges),
    ) == (
        4,
        8,
        63,
        7,
    )
    assert {c.code for c in ledger.clusters} == {
        "NB-AUTO-PARTS",
        "TZ-HY-MOULD",
        "SX-KQ-TEXTILE",
        "WZ-YQ-ELECTRIC",
    }


def test_sample_workbook_is_a_realistic_zhejiang_ledger() -> None:
    ledger = read_ledger(SAMPLE_XLSX)
    counties = {r.code for r in zhejiang_regions() if r.level is codes.RegionLevel.COUNTY}

    for enterprise in ledger.enterprises:
        # Credit codes are registered in the enterprise's own county.
        assert enterprise.credit_code[2:8] == enterprise.region_code
        assert enterprise.region_code in counties
        assert enterprise.industry_code.startswith("C")  # manufacturing
    tags = {(e.above_designated_size, e.key_enterprise) for e in ledger.enterprises}
    assert {(True, True), (True, False), (False, False)} <= tags
    assert any(len(e.cluster_codes) > 1 for e in ledger.enterprises)

    devices = ledger.devices
    today = date(2026, 11, 24)
    assert any(not d.is_nc and d.is_production_equipment for d in devices)
    assert any(not d.is_production_equipment and d.line_code is None for d in devices)
    assert any(d.decommissioned_on is not None for d in devices)
    assert any(
        d.commissioned_on and d.commissioned_on > today - timedelta(days=120) for d in devices
    )
    assert {d.device_type for d in devices} >= {
        DeviceType.CNC_MACHINE_TOOL,
        DeviceType.INDUSTRIAL_ROBOT,
        DeviceType.INJECTION_MOULDING,
        DeviceType.LOOM,
    }

    # One edge per enterprise but one, which has none at all; each edge serves only
    # its enterprise's in-ledger devices, and some devices are served by none (not
    # networked yet).
    with_edge = sorted(g.enterprise for g in ledger.edges)
    assert len(with_edge) == len(set(with_edge)) == len(ledger.enterprises) - 1
    served = {(g.enterprise, code) for g in ledger.edges for code in g.device_codes}
    assert served <= {(d.enterprise, d.code) for d in devices}
    unserved = [d for d in devices if (d.enterprise, d.code) not in served]
    assert unserved
    assert all(d.decommissioned_on is None for d in devices if (d.enterprise, d.code) in served)


def test_first_sample_enterprise_is_the_demo_factory() -> None:
    ledger = read_ledger(SAMPLE_XLSX)
    first = ledger.enterprises[0]
    devices = [d for d in ledger.devices if d.enterprise == first.credit_code]
    (edge,) = [g for g in ledger.edges if g.enterprise == first.credit_code]

    assert first.credit_code == RUICHI
    assert first.above_designated_size
    assert first.key_enterprise
    assert len(devices) == 12
    lines = {d.line_code for d in devices if d.line_code}
    assert lines == {"L1", "L2"}
    for line in lines:
        kinds = {d.device_type for d in devices if d.line_code == line}
        assert kinds == {DeviceType.CNC_MACHINE_TOOL, DeviceType.INDUSTRIAL_ROBOT}
    on_lines = {d.code for d in devices if d.line_code}
    assert on_lines <= set(edge.device_codes)
    assert all(d.ideal_cycle_time_s for d in devices if d.line_code)


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_sample_ledger", ROOT / "scripts" / "make_sample_ledger.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_samples_are_what_the_generator_writes() -> None:
    generator = _load_generator()
    written = generator.outputs()

    for path in (SAMPLE_DEVICES_CSV, SAMPLE_ENTERPRISES_CSV, MIXED_CSV):
        assert written[path] == path.read_bytes(), f"regenerate {path.name}"
    # The xlsx bytes depend on the openpyxl version; its content must not.
    fresh = parse_ledger(written[SAMPLE_XLSX], "fresh.xlsx")
    committed = read_ledger(SAMPLE_XLSX)
    for table in ("clusters", "enterprises", "devices", "edges"):
        assert getattr(fresh, table) == getattr(committed, table)
    # Regenerating is deterministic, so a second run would change nothing.
    assert generator.outputs() == written


# ------------------------------------------------------------------ headers


def test_chinese_and_english_sample_files_give_identical_models() -> None:
    workbook = read_ledger(SAMPLE_XLSX)
    registry = {e.credit_code for e in workbook.enterprises}
    devices = read_ledger(SAMPLE_DEVICES_CSV, known_enterprises=registry)
    enterprises = read_ledger(
        SAMPLE_ENTERPRISES_CSV, known_clusters={c.code for c in workbook.clusters}
    )

    assert (devices.errors, devices.warnings) == ([], [])
    assert (enterprises.errors, enterprises.warnings) == ([], [])
    assert devices.devices == workbook.devices
    assert enterprises.enterprises == workbook.enterprises


DEVICE_HEADERS = {
    "chinese": ["统一社会信用代码", "设备编号", "设备名称", "设备类型", "厂区", "产线", "生产设备",
                "数控设备", "关键工序", "标准节拍(秒)", "投产日期", "停用日期"],
    "english": ["enterprise", "code", "name", "device_type", "site", "line",
                "is_production_equipment", "is_nc", "key_process", "ideal_cycle_time_s",
                "commissioned_on", "decommissioned_on"],
    "untidy": [" 统一社会信用代码 ", "*设备编号", "设备名称", "设备类型", "厂区", "产线",
               "生产设备", "数控设备", "关键工序", "标准节拍 （秒）", "投产日期", "停用日期"],
    "shouting": ["ENTERPRISE", "Device Code", "Device Name", "Device-Type", "SITE", "Line",
                 "Is Production Equipment", "IS_NC", "Key Process", "Ideal Cycle Time S",
                 "Commissioned On", "Decommissioned On"],
}  # fmt: skip


@pytest.mark.parametrize("style", sorted(DEVICE_HEADERS))
def test_header_spelling_does_not_change_the_models(style: str) -> None:
    rows = [
        [RUICHI, "CNC-1", "立式加工中心", "数控机床", "BL1", "L1", "是", "是", "否", "90",
         "2024-03-01", ""],
        [RUICHI, "AC-1", "空压机", "air_compressor", "BL1", "", "否", "否", "否", "",
         "2019/3/1", "2026年6月30日"],
    ]  # fmt: skip
    text = "\n".join(",".join(row) for row in [DEVICE_HEADERS[style], *rows])
    reference = "\n".join(",".join(row) for row in [DEVICE_HEADERS["english"], *rows])

    ledger = parse_ledger(text.encode(), "devices.csv")
    expected = parse_ledger(reference.encode(), "devices.csv")

    assert ledger.errors == []
    assert [w for w in ledger.warnings if w.row] == []  # every header was understood
    assert ledger.devices == expected.devices
    assert len(ledger.devices) == 2


def test_csv_saved_by_chinese_excel_in_gbk_is_read() -> None:
    text = f"统一社会信用代码,设备编号,设备名称,设备类型\n{RUICHI},CK-1,数控车床,数控机床\n"
    ledger = parse_ledger(text.encode("gbk"), "设备台账.csv")

    assert [d.name for d in ledger.devices] == ["数控车床"]


# ------------------------------------------------------------------ xlsx built here


def test_xlsx_with_real_excel_dates_a_title_row_and_a_bad_row() -> None:
    workbook = Workbook()
    notes = workbook.active
    assert notes is not None
    notes.title = "说明"
    notes.append(["填表说明：日期请用 Excel 日期格式"])
    sheet = workbook.create_sheet("设备")
    sheet.append(["宁波瑞驰设备台账（2026年）"])  # a title above the header
    sheet.append(
        ["统一社会信用代码", "设备编号", "设备名称", "设备类型", "数控设备", "投产日期", "停用日期"]
    )
    sheet.append([RUICHI, "CNC-1", "加工中心", "数控机床", True, excel_time(2024, 3, 1), None])
    sheet.append([RUICHI, "CNC-2", "加工中心", "数控机床", "也许", excel_time(2024, 3, 2), None])
    sheet.append(
        [RUICHI, 330206, "编号是数字", "数控机床", 1, 45352, excel_time(2025, 1, 1, 8, 30)]
    )
    sheet["F3"].number_format = "yyyy/m/d"

    ledger = parse_ledger(xlsx_bytes(workbook), "upload.xlsx", known_enterprises={RUICHI})

    assert problems(ledger.errors) == [
        (4, "数控设备", "must be 是/否, Y/N, yes/no, true/false, 1/0 or ✓"),
    ]
    assert ledger.errors[0].value == "也许"
    assert ledger.errors[0].sheet == "设备"
    first, numeric = ledger.devices
    assert first.commissioned_on == date(2024, 3, 1)
    assert first.is_nc is True
    assert numeric.code == "330206"  # Excel stored the code as a number
    assert numeric.commissioned_on == date(2024, 3, 1)  # a serial number in a general cell
    assert numeric.decommissioned_on == date(2025, 1, 1)
    # The sheet that is no table is reported, not silently skipped.
    assert [(w.sheet, w.row) for w in ledger.warnings] == [("说明", 0)]
    assert "not a ledger table" in ledger.warnings[0].reason
    assert [(s.name, s.table, s.header_row, s.rows) for s in ledger.sheets] == [
        ("说明", None, 1, 0),
        ("设备", Table.DEVICES, 2, 3),
    ]


def test_xlsx_sheets_are_recognised_by_english_names_and_cross_checked() -> None:
    stranger = codes.make_credit_code("91330782MA2DF3G63")
    workbook = Workbook()
    enterprises = workbook.active
    assert enterprises is not None
    enterprises.title = "enterprises"
    enterprises.append(["credit_code", "name", "region_code", "industry_code", "clusters"])
    enterprises.append([RUICHI, "宁波瑞驰", "330206", "C3670", "NB-AUTO-PARTS"])
    enterprises.append([RUICHI.lower(), "同一家企业", "330206", "C3670", ""])
    enterprises.append([HONGTUO, "慈溪宏拓", "330282", "C3670", "NB-AUTO-PARTS、TZ-HY-MOULD"])
    devices = workbook.create_sheet("devices")
    devices.append(["enterprise", "code", "name", "device_type"])
    devices.append([RUICHI, "CNC-1", "加工中心", "cnc_machine_tool"])
    devices.append([HONGTUO, "CNC-1", "加工中心", "cnc_machine_tool"])
    devices.append([stranger, "CNC-1", "加工中心", "cnc_machine_tool"])
    edges = workbook.create_sheet("edges")
    edges.append(["edge_id", "enterprise", "devices"])
    edges.append(["EDGE-1", RUICHI, "CNC-1;CNC-9"])
    edges.append(["EDGE-2", RUICHI, "CNC-1"])
    edges.append(["EDGE-2", RUICHI, ""])

    ledger = parse_ledger(xlsx_bytes(workbook), "x.xlsx", known_clusters={"NB-AUTO-PARTS"})

    assert [(e.sheet, e.row, e.column, e.reason) for e in ledger.errors] == [
        ("enterprises", 3, "credit_code", "duplicate credit code, first in row 2"),
        ("devices", 4, "enterprise", "is not in the enterprises of this file"),
        ("edges", 2, "devices", "not devices of this enterprise in this file: CNC-9"),
        ("edges", 4, "edge_id", "duplicate edge id, first in row 3"),
    ]
    # An unregistered cluster costs the enterprise that membership only.
    assert [e.credit_code for e in ledger.enterprises] == [RUICHI, HONGTUO]
    assert [e.cluster_codes for e in ledger.enterprises] == [("NB-AUTO-PARTS",)] * 2
    assert [(w.sheet, w.row, w.column, w.value) for w in ledger.warnings] == [
        ("enterprises", 4, "clusters", "TZ-HY-MOULD")
    ]
    assert ledger.warnings[0].reason.startswith(
        "cluster is neither the code nor the name of a cluster in the registry;"
        " the enterprise is stored without this membership"
    )
    assert [(d.enterprise, d.code) for d in ledger.devices] == [
        (RUICHI, "CNC-1"),
        (HONGTUO, "CNC-1"),
    ]
    assert [(g.edge_id, g.device_codes) for g in ledger.edges] == [("EDGE-2", ("CNC-1",))]


def test_device_of_an_enterprise_whose_row_is_bad_names_that_row() -> None:
    workbook = Workbook()
    enterprises = workbook.active
    assert enterprises is not None
    enterprises.title = "企业"
    enterprises.append(["统一社会信用代码", "企业名称", "行政区划代码", "行业代码"])
    enterprises.append([RUICHI, "宁波瑞驰", "330206", "X99"])
    devices = workbook.create_sheet("设备台账")
    devices.append(["统一社会信用代码", "设备编号", "设备名称", "设备类型"])
    devices.append([RUICHI, "CNC-1", "加工中心", "数控机床"])

    ledger = parse_ledger(xlsx_bytes(workbook), "x.xlsx")

    assert [(e.sheet, e.row, e.column) for e in ledger.errors] == [
        ("企业", 2, "行业代码"),
        ("设备台账", 2, "统一社会信用代码"),
    ]
    assert ledger.errors[0].reason.startswith("must be a GB/T 4754 section letter")
    assert ledger.errors[1].reason == "is in sheet '企业' row 2, but that row has errors"


def test_a_row_with_several_bad_cells_gets_one_message_per_cell() -> None:
    text = (
        "统一社会信用代码,设备编号,设备名称,设备类型,数控设备,投产日期\n"
        f"{RUICHI[:-1]}M,CNC 1,,车床,maybe,2024-13-01\n"
    )
    ledger = parse_ledger(text.encode(), "devices.csv")

    assert [(e.row, e.column) for e in ledger.errors] == [
        (2, "统一社会信用代码"),
        (2, "设备编号"),
        (2, "设备名称"),
        (2, "设备类型"),
        (2, "数控设备"),
        (2, "投产日期"),
    ]
    assert ledger.errors[2].reason == "is required; the cell is empty"
    assert ledger.devices == []


def test_fields_of_tells_the_upsert_which_columns_the_file_gave() -> None:
    text = (
        "统一社会信用代码,设备编号,设备名称,设备类型,停用日期\n"
        f"{RUICHI},CNC-101,立式加工中心,数控机床,2026-11-30\n"
    )
    ledger = parse_ledger(text.encode(), "stop.csv")
    (device,) = ledger.devices

    assert ledger.fields_of(device) == frozenset(
        {"enterprise", "code", "name", "device_type", "decommissioned_on"}
    )
    assert device.decommissioned_on == date(2026, 11, 30)
    assert ledger.origin(device) is not None


def test_an_import_for_one_enterprise_refuses_rows_of_others_alike() -> None:
    """What an enterprise engineer uploads: another enterprise's rows are errors in the
    same words whether that enterprise is in the file, in the registry or nowhere."""
    unknown = codes.make_credit_code("91330782MA2DF3G63")
    workbook = Workbook()
    enterprises = workbook.active
    assert enterprises is not None
    enterprises.title = "企业"
    enterprises.append(["统一社会信用代码", "企业名称", "行政区划代码", "行业代码"])
    enterprises.append([RUICHI, "宁波瑞驰", "330206", "C3670"])
    enterprises.append([HONGTUO, "慈溪宏拓", "330282", "C3670"])
    devices = workbook.create_sheet("设备台账")
    devices.append(["统一社会信用代码", "设备编号", "设备名称", "设备类型"])
    devices.append([RUICHI, "CNC-1", "加工中心", "数控机床"])
    devices.append([HONGTUO, "CNC-1", "加工中心", "数控机床"])  # in the file
    devices.append([unknown, "CNC-1", "加工中心", "数控机床"])  # nowhere
    edges = workbook.create_sheet("边缘网关")
    edges.append(["网关编号", "统一社会信用代码", "服务设备"])
    edges.append(["EDGE-1", RUICHI, "CNC-1"])
    edges.append(["EDGE-2", HONGTUO, "CNC-1"])

    ledger = parse_ledger(
        xlsx_bytes(workbook),
        "mine.xlsx",
        known_enterprises={RUICHI},
        only_enterprises={RUICHI},
    )

    assert [(e.sheet, e.row, e.column) for e in ledger.errors] == [
        ("企业", 2, "统一社会信用代码"),
        ("企业", 3, "统一社会信用代码"),
        ("设备台账", 3, "统一社会信用代码"),
        ("设备台账", 4, "统一社会信用代码"),
        ("边缘网关", 3, "统一社会信用代码"),
    ]
    assert ledger.errors[0].reason.startswith("only an admin imports enterprises")
    foreign = {e.reason for e in ledger.errors[2:]}
    assert len(foreign) == 1
    assert foreign.pop().startswith("is not an enterprise this import may change")
    # The enterprise's own devices and edges are kept, though its row is not.
    assert ledger.enterprises == []
    assert [(d.enterprise, d.code) for d in ledger.devices] == [(RUICHI, "CNC-1")]
    assert [g.edge_id for g in ledger.edges] == ["EDGE-1"]


# ------------------------------------------------------------------ unreadable files


def test_missing_required_column_raises_naming_it() -> None:
    text = f"统一社会信用代码,设备编号,设备名称,投产日期\n{RUICHI},CNC-1,加工中心,2024-03-01\n"
    with pytest.raises(
        LedgerError, match=r"devices\.csv \(devices\) has no column 设备类型 \(device_type\)"
    ):
        parse_ledger(text.encode(), "devices.csv")

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "设备台账"
    sheet.append(["设备编号", "设备名称", "设备类型"])
    with pytest.raises(
        LedgerError, match=r"sheet '设备台账' \(devices\) has no column 统一社会信用代码"
    ):
        parse_ledger(xlsx_bytes(workbook), "ledger.xlsx")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("ledger.txt", b"code,name\n", "unknown ledger format '.txt'"),
        ("ledger.xls", b"\xd0\xcf\x11\xe0", "old .xls format"),
        ("ledger.xlsx", b"PK\x03\x04 not really a zip", "not a readable .xlsx workbook"),
        ("ledger.csv", b"", "the file is empty"),
        ("ledger.csv", b"foo,bar\n1,2\n", "cannot tell which ledger table"),
        ("ledger.csv", "设备编号,设备名称,name\n".encode(), "both mean 设备名称 \\(name\\)"),
    ],
)
def test_unreadable_files_raise_ledger_error(name: str, data: bytes, message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        parse_ledger(data, name)


def test_missing_file_raises_ledger_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot read the file"):
        read_ledger(tmp_path / "nope.xlsx")


def test_workbook_without_any_table_raises(tmp_path: Path) -> None:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["随便", "写点"])
    path = tmp_path / "empty.xlsx"
    path.write_bytes(xlsx_bytes(workbook))
    with pytest.raises(LedgerError, match="no sheet is a ledger table"):
        read_ledger(path)


# ------------------------------------------------------------------ regions


def test_zhejiang_regions_are_complete_and_well_formed() -> None:
    regions = zhejiang_regions()
    by_code = {r.code: r for r in regions}

    assert len(by_code) == len(regions) == 102
    assert by_code["330000"].name == "浙江省"
    levels = [r.level for r in regions]
    assert levels.count(codes.RegionLevel.CITY) == 11
    assert levels.count(codes.RegionLevel.COUNTY) == 90
    for region in regions:
        assert codes.validate_region_code(region.code) == region.code
        assert region.parent_code is None or region.parent_code in by_code
    hangzhou = {r.code for r in regions if r.parent_code == "330100"}
    assert hangzhou == {"330102", "330105", "330106", "330108", "330109", "330110", "330111",
                        "330112", "330113", "330114", "330122", "330127", "330182"}  # fmt: skip
    assert by_code["330383"].name == "龙港市"
    assert by_code["331083"].name == "玉环市"


def test_region_list_is_itself_a_ledger_file() -> None:
    ledger = read_ledger(REGIONS_CSV)

    assert ledger.errors == []
    assert ledger.regions == zhejiang_regions()


# ------------------------------------------------------------------ cell parsing

TRUE_SPELLINGS = ["是", "Y", "y", "yes", "YES", "true", "True", "1", "✓", "√", 1, 1.0, True]
FALSE_SPELLINGS = ["否", "N", "n", "no", "No", "false", "FALSE", "0", "✗", 0, 0.0, False]


@pure
@given(flag=st.booleans(), data=st.data())
def test_boolean_cells_round_trip(flag: bool, data: st.DataObject) -> None:
    spelling = data.draw(st.sampled_from(TRUE_SPELLINGS if flag else FALSE_SPELLINGS))
    padding = data.draw(st.sampled_from(["", " ", "\u3000"]))  # the ideographic space too
    cell = f"{padding}{spelling}{padding}" if isinstance(spelling, str) else spelling
    assert parse_bool(cell) is flag


def _date_spellings(day: date) -> list[object]:
    return [
        day,
        excel_time(day.year, day.month, day.day),
        day.isoformat(),
        f"{day.year}/{day.month}/{day.day}",
        f"{day.year}.{day.month}.{day.day}",
        f"{day.year}年{day.month}月{day.day}日",
        f"{day.year}年{day.month:02d}月{day.day:02d}日",
        f"{day:%Y%m%d}",
        f"{day.isoformat()} 00:00:00",
        (day - date(1899, 12, 30)).days,  # an Excel serial number in a general cell
    ]


@pure
@given(day=st.dates(min_value=date(1980, 1, 1), max_value=date(2099, 12, 31)), data=st.data())
def test_date_cells_round_trip(day: date, data: st.DataObject) -> None:
    cell = data.draw(st.sampled_from(_date_spellings(day)))
    assert parse_date(cell) == day


@pure
@given(
    cell=st.one_of(
        st.none(),
        st.text(),
        st.integers(),
        st.just(10**400),  # beyond any float
        st.floats(),
        st.booleans(),
        st.dates(),
    )
)
def test_cell_parsers_fail_only_with_a_rule(cell: object) -> None:
    # Whatever a user types, a parser returns a value or names the rule it broke:
    # never an unexpected exception that would abort the whole file.
    for parse in (
        parse_bool,
        parse_date,
        parse_seconds,
        parse_minutes,
        parse_device_type,
        split_codes,
    ):
        try:
            parse(cell)
        except InvalidValue as exc:
            rule = exc.rule
        else:
            rule = "ok"
        assert rule


@pure
@given(kind=st.sampled_from(list(DeviceType)), data=st.data())
def test_device_type_accepts_value_name_and_chinese_label(
    kind: DeviceType, data: st.DataObject
) -> None:
    spelling = data.draw(
        st.sampled_from([kind.value, kind.name, DEVICE_TYPE_LABELS[kind], kind.value.upper()])
    )
    assert parse_device_type(f" {spelling} ") is kind


@pure
@given(
    items=st.lists(
        st.from_regex(r"[A-Z][A-Z0-9\-]{0,10}", fullmatch=True), min_size=1, max_size=5, unique=True
    ),
    separator=st.sampled_from([";", "；", "、", ",", "，", " ; "]),
)
def test_code_lists_split_on_any_separator(items: list[str], separator: str) -> None:
    assert split_codes(separator.join(items)) == tuple(items)


def test_blank_cells_are_none() -> None:
    for parse in (parse_bool, parse_date, parse_seconds, parse_device_type, split_codes):
        assert parse(None) is None
        assert parse("  ") is None


def test_row_error_reads_well() -> None:
    error = RowError("a.xlsx", "设备台账", 7, "投产日期", "2023-02-30", "is not a calendar day")
    assert str(error) == "设备台账 row 7, 投产日期: '2023-02-30' is not a calendar day"
    assert isinstance(Ledger().rows_read, dict)


# ------------------------------------------------------------------ ledgers as written


def _devices_csv(header: str, *rows: str) -> Ledger:
    return parse_ledger("\n".join([header, *rows]).encode(), "设备台账.csv")


@pytest.mark.parametrize(
    ("written", "kind", "production"),
    [
        ("加工中心", "cnc_machine_tool", True),
        ("卧式注塑机", "injection_moulding_machine", True),
        ("注塑成型机", "injection_moulding_machine", True),
        ("数控折弯机", "press_brake", True),
        ("光纤激光切割机", "laser_cutter", True),
        ("三坐标", "test_equipment", True),
        ("AGV小车", "agv", True),
        ("包装机", "packaging_machine", True),
        ("其它", "other", True),
        ("辅助设备", "auxiliary_equipment", False),
        ("螺杆空压机", "air_compressor", False),
        ("冷却塔", "cooling_tower", False),
        ("行车", "crane", False),
        ("叉车", "forklift", False),
        ("模温机", "auxiliary_equipment", False),
    ],
)
def test_device_types_as_ledgers_write_them(written: str, kind: str, production: bool) -> None:
    ledger = _devices_csv(
        "统一社会信用代码,设备编号,设备名称,设备类型,是否生产设备",
        f"{RUICHI},D-1,设备,{written},",  # 是否生产设备 empty: the type decides
        f"{RUICHI},D-2,设备,{written},是",  # the row says otherwise
    )

    assert ledger.errors == []
    # The enum values as stored in the registry's device_type column.
    assert [(d.device_type.value, d.is_production_equipment) for d in ledger.devices] == [
        (kind, production),
        (kind, True),
    ]


def test_an_unknown_type_is_other_only_when_the_row_says_what_it_is() -> None:
    ledger = _devices_csv(
        "统一社会信用代码,设备编号,设备名称,设备类型,是否生产设备",
        f"{RUICHI},D-1,金属3D打印机,3D打印机,是",
        f"{RUICHI},D-2,清洗线,超声波清洗线,否",
        f"{RUICHI},D-3,不知道,某某机,",
    )

    assert [(d.code, d.device_type, d.is_production_equipment) for d in ledger.devices] == [
        ("D-1", DeviceType.OTHER, True),
        ("D-2", DeviceType.OTHER, False),
    ]
    assert [(w.row, w.value) for w in ledger.warnings if w.row] == [
        (2, "3D打印机"),
        (3, "超声波清洗线"),
    ]
    assert [(e.row, e.column, e.value) for e in ledger.errors] == [(4, "设备类型", "某某机")]
    assert ledger.errors[0].reason.endswith("or fill in 是否生产设备 to store it as 其他")


SURVEY_HEADERS = {
    "ours": "统一社会信用代码,设备编号,设备名称,设备类型,车间,产线,产线编号,生产设备,数控设备,"
    "关键工序,标准节拍(秒),投产日期,停用日期",
    "eam": "企业统一社会信用代码,设备编码,资产名称,设备分类,所属车间,所属产线,产线代码,"
    "是否为生产设备,是否数控设备,是否关键工序设备,理论节拍,投用日期,报废日期",
    "survey": "社会信用代码（必填）,机台编号,设备名称,设备类别,使用车间,线体,生产线编号,"
    "是否属于生产设备,是否数控,关键工序,节拍时间(秒),开始使用日期,退役日期",
    "english": "enterprise_credit_code,equipment_no,equipment_name,equipment_type,workshop,"
    "line_name,line_id,production_equipment,cnc,key_process,cycle_time(s),commissioning_date,"
    "decommissioning_date",
}


@pytest.mark.parametrize("template", sorted(SURVEY_HEADERS))
def test_header_wordings_of_other_templates_give_the_same_devices(template: str) -> None:
    rows = (
        f"{RUICHI},CY-1,250T冲床,冲床,冲压车间,三号线,L3,是,否,是,6,2020-01-01,",
        f"{RUICHI},CY-2,行车,行车,冲压车间,,,,否,否,,2019/3/1,2026年6月30日",
    )
    ledger = _devices_csv(SURVEY_HEADERS[template], *rows)
    reference = _devices_csv(SURVEY_HEADERS["ours"], *rows)

    assert (ledger.errors, [w for w in ledger.warnings if w.row]) == ([], [])
    assert ledger.devices == reference.devices
    press, crane = ledger.devices
    assert (press.site_name, press.line_code, press.line_name) == ("冲压车间", "L3", "三号线")
    assert (crane.is_production_equipment, crane.line_code) == (False, None)


def test_a_cycle_time_in_minutes_is_read_as_minutes() -> None:
    ledger = _devices_csv(
        "统一社会信用代码,设备编号,设备名称,设备类型,节拍(分钟)",
        f"{RUICHI},D-1,注塑机,注塑机,1.5",
        f"{RUICHI},D-2,注塑机,注塑机,2分钟",
    )
    assert [d.ideal_cycle_time_s for d in ledger.devices] == [90.0, 120.0]


def test_asset_number_is_the_code_only_without_a_device_code_column() -> None:
    alone = _devices_csv("统一社会信用代码,资产编号,设备名称,设备类型", f"{RUICHI},ZC-1,冲床,冲床")
    beside = _devices_csv(
        "统一社会信用代码,设备编号,资产编号,设备名称,设备类型", f"{RUICHI},CY-1,ZC-1,冲床,冲床"
    )

    assert [d.code for d in alone.devices] == ["ZC-1"]
    assert [d.code for d in beside.devices] == ["CY-1"]
    assert beside.sheets[0].unused == ("资产编号",)
    assert [w for w in beside.warnings if w.row] == []  # no "unknown column"


def test_a_workshop_of_a_plant_is_the_site_named_after_both() -> None:
    ledger = _devices_csv(
        "统一社会信用代码,设备编号,设备名称,设备类型,厂区,车间,车间编号,产线",
        f"{RUICHI},D-1,冲床,冲床,一厂,冲压车间,,三号线",
        f"{RUICHI},D-2,冲床,冲床,一厂,冲压车间,CY,L3",
        f"{RUICHI},D-3,空压机,空压机,一厂,,,",
    )
    assert [(d.site_code, d.site_name, d.line_code, d.line_name) for d in ledger.devices] == [
        (None, "一厂 冲压车间", None, "三号线"),
        ("CY", "一厂 冲压车间", "L3", None),
        (None, "一厂", None, None),
    ]


def test_clusters_resolve_by_code_or_name_in_the_file_and_the_registry() -> None:
    workbook = Workbook()
    clusters = workbook.active
    assert clusters is not None
    clusters.title = "产业集群"
    clusters.append(["集群编号", "集群名称", "行政区划代码", "行业代码"])
    clusters.append(["TZ-HY-MOULD", "台州黄岩模具产业集群", "331003", "C3525"])
    clusters.append(["TZ-BAD", "坏集群", "331003", "X"])  # a row with an error
    enterprises = workbook.create_sheet("企业")
    enterprises.append(["统一社会信用代码", "企业名称", "行政区划代码", "行业代码", "所属产业集群"])
    enterprises.append([RUICHI, "瑞驰", "330206", "C3670", "宁波汽车零部件产业集群；TZ-HY-MOULD"])
    enterprises.append([HONGTUO, "宏拓", "330282", "C3670", "台州黄岩模具产业集群 坏集群 宁波模具"])

    ledger = parse_ledger(
        xlsx_bytes(workbook),
        "x.xlsx",
        known_clusters={"NB-AUTO-PARTS": "宁波汽车零部件产业集群", "NB-MOULD": "宁波 模具"},
    )

    assert [(e.credit_code, e.cluster_codes) for e in ledger.enterprises] == [
        (RUICHI, ("NB-AUTO-PARTS", "TZ-HY-MOULD")),
        (HONGTUO, ("TZ-HY-MOULD", "NB-MOULD")),  # 宁波模具 = 宁波 模具 (spaces ignored)
    ]
    # The bad cluster row is an error of its own; naming it costs a warning only.
    assert [(e.sheet, e.row) for e in ledger.errors] == [("产业集群", 3)]
    assert [(w.sheet, w.row, w.value) for w in ledger.warnings] == [("企业", 3, "坏集群")]
    assert "坏集群" not in ledger.warnings[0].reason  # the value is shown once, by RowError


def test_a_registry_without_cluster_names_still_resolves_codes() -> None:
    text = (
        "统一社会信用代码,企业名称,行政区划代码,行业代码,产业集群\n"
        f"{RUICHI},瑞驰,330206,C3670,NB-AUTO-PARTS、宁波汽车零部件产业集群\n"
    )
    ledger = parse_ledger(text.encode(), "企业.csv", known_clusters={"NB-AUTO-PARTS"})

    assert [e.cluster_codes for e in ledger.enterprises] == [("NB-AUTO-PARTS",)]
    assert [w.value for w in ledger.warnings] == ["宁波汽车零部件产业集群"]


def test_an_unknown_region_is_reported_with_the_rows_other_problems() -> None:
    text = (
        "统一社会信用代码,企业名称,行政区划代码,行业代码,是否规上\n"
        f"{RUICHI},瑞驰,110105,C3670,也许\n"
    )
    ledger = parse_ledger(text.encode(), "企业.csv", known_regions={"330206"})

    assert [(e.column, e.reason) for e in ledger.errors] == [
        ("行政区划代码", "region is not in the registry"),
        ("是否规上", "must be 是/否, Y/N, yes/no, true/false, 1/0 or ✓"),
    ]
    assert ledger.rejected_rows[Table.ENTERPRISES] == 1


def test_notes_in_headers_are_read_past_unless_they_name_a_unit() -> None:
    ledger = _devices_csv(
        "统一社会信用代码（必填）,设备编号(必填),设备名称(全称),设备类型,投产日期(yyyy-mm-dd),"
        "标准节拍(毫秒)",
        f"{RUICHI},D-1,冲床,冲床,2024-03-01,6000",
    )

    (device,) = ledger.devices
    assert (device.code, device.commissioned_on) == ("D-1", date(2024, 3, 1))
    assert device.ideal_cycle_time_s is None  # milliseconds are not taken for seconds
    assert [(w.column, w.reason) for w in ledger.warnings if w.row] == [
        (
            "标准节拍(毫秒)",
            "unknown column for devices, ignored;"
            " did you mean '标准节拍(秒)' (ideal_cycle_time_s)?",
        )
    ]


def test_survey_totals_of_an_enterprise_are_not_taken_for_the_ledger() -> None:
    text = (
        "统一社会信用代码,企业名称,行政区划代码,行业代码,设备总数,联网设备数,设备联网率\n"
        f"{RUICHI},瑞驰,330206,C3670,120,80,66.7%\n"
    )
    ledger = parse_ledger(text.encode(), "企业.csv")

    assert len(ledger.enterprises) == 1
    assert [(w.column, w.reason.split(":")[0]) for w in ledger.warnings if w.row] == [
        ("设备总数", "is not read"),
        ("联网设备数", "is not read"),
        ("设备联网率", "is not read"),
    ]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("45", 45.0),
        ("45秒", 45.0),
        ("12.5 s", 12.5),
        ("1分30秒", 90.0),
        ("1.5分钟", 90.0),
        ("2min 30s", 150.0),
        ("3分", 180.0),
    ],
)
def test_cycle_times_are_read_as_ledgers_type_them(written: str, seconds: float) -> None:
    ledger = _devices_csv(
        "统一社会信用代码,设备编号,设备名称,设备类型,标准节拍（秒）",
        f"{RUICHI},D-1,冲床,冲床,{written}",
    )
    assert (ledger.errors, [d.ideal_cycle_time_s for d in ledger.devices]) == ([], [seconds])


def test_a_cycle_time_that_names_its_unit_overrides_a_minutes_column() -> None:
    ledger = _devices_csv(
        "统一社会信用代码,设备编号,设备名称,设备类型,节拍(分钟)",
        f"{RUICHI},D-1,冲床,冲床,90秒",
        f"{RUICHI},D-2,冲床,冲床,500ms",
    )
    assert [d.ideal_cycle_time_s for d in ledger.devices] == [90.0]
    assert [(e.row, e.value) for e in ledger.errors] == [(3, "500ms")]


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("330302", "330302"),
        ("鹿城区", "330302"),
        ("温州市鹿城区", "330302"),
        ("浙江省温州市鹿城区", "330302"),
        ("乐清市", "330382"),
        ("温州乐清", "330382"),
        ("杭州市上城区", "330102"),
    ],
)
def test_a_region_column_may_name_the_division(written: str, code: str) -> None:
    text = f"统一社会信用代码,企业名称,所在地区,行业代码\n{RUICHI},瑞驰,{written},C3670\n"
    ledger = parse_ledger(text.encode(), "企业.csv")

    assert ledger.errors == []
    assert [e.region_code for e in ledger.enterprises] == [code]


def test_a_region_name_outside_the_province_is_an_error_naming_the_cell() -> None:
    text = (
        "统一社会信用代码,企业名称,所在地区,行业代码,是否规上\n"
        f"{RUICHI},瑞驰,北京市朝阳区,C3670,也许\n"
    )
    ledger = parse_ledger(text.encode(), "企业.csv")

    assert [(e.row, e.column, e.value) for e in ledger.errors] == [
        (2, "所在地区", "北京市朝阳区"),
        (2, "是否规上", "也许"),
    ]
    assert "GB/T 2260" in ledger.errors[0].reason


def test_a_region_code_column_wins_over_a_region_name_column() -> None:
    text = (
        "统一社会信用代码,企业名称,所在地区,行政区划代码,行业代码\n"
        f"{RUICHI},瑞驰,宁波市北仑区,330206,C3670\n"
    )
    ledger = parse_ledger(text.encode(), "企业.csv")

    assert (ledger.errors, [e.region_code for e in ledger.enterprises]) == ([], ["330206"])
    assert ledger.sheets[0].unused == ("所在地区",)


def test_workshop_line_and_plant_headers_of_another_template() -> None:
    ledger = _devices_csv(
        "统一社会信用代码,设备编号,设备名称,设备类型,所在厂区,所在车间,所在产线",
        f"{RUICHI},D-1,冲床,冲床,一厂,冲压车间,三号线",
    )
    assert [w for w in ledger.warnings if w.row] == []
    assert [(d.site_name, d.line_name) for d in ledger.devices] == [("一厂 冲压车间", "三号线")]
