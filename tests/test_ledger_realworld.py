"""Ledgers as enterprises write them, imported through ``zhizao registry import``.

The files are built here the way a factory office or a survey form keeps them: a
title above the header, Chinese headers of other templates than ours, lines and
workshops by name, clusters by name, auxiliary equipment, machine names for types,
several mistakes in one row. Each is imported through the real CLI into a real
PostgreSQL database, and the tests read what a user reads: the output and the
registry's rows.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import psycopg
import pytest
from openpyxl import Workbook
from typer.testing import CliRunner

from zhizao.cli import app
from zhizao.cli import common as cli_common
from zhizao.codes import make_credit_code

RUICHI = "91330206MA2GR7K17L"  # 宁波瑞驰 (北仑区), registered by the test's first file
HONGTUO = "91330282MA28CX3P78"  # 慈溪宏拓
STRANGER = make_credit_code("91330782MA2DF3G63")  # a valid code nobody registered

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at 80 columns off a terminal; a wide console keeps a message on one
    line, as on the screen of the office PC that runs the import. The private
    ``_width`` and not the ``width`` property: undoing the property would set the
    width it read (80 off a terminal) for good, and later tests' COLUMNS would not
    count."""
    monkeypatch.setattr(cli_common.console, "_width", 400)
    monkeypatch.setattr(cli_common.err_console, "_width", 400)


def zhizao(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--log-json", *args])
    return result.exit_code, result.output


def rows(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(query.encode(), params).fetchall())


def summary_numbers(out: str) -> tuple[int, int, int, int]:
    match = re.search(
        r"存储 (\d+) 行 rows stored · 拒绝 (\d+) 行 rows rejected · (\d+) 个错误 problems"
        r" · (\d+) 条警告 warnings",
        out,
    )
    assert match is not None, out
    stored, rejected, problems, warnings = (int(g) for g in match.groups())
    return stored, rejected, problems, warnings


def error_rows(out: str) -> list[tuple[str, int, str, str, str]]:
    """The rows of the errors table: (sheet, row, column, value, reason)."""
    found = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[1].isdigit():
            found.append((cells[0], int(cells[1]), cells[2], cells[3], cells[4]))
    return found


def warnings_of(out: str) -> list[str]:
    return [line.removeprefix("warning: ") for line in out.splitlines() if "warning: " in line]


def derived(prefix: str, name: str) -> str:
    """The code a line or site named without code gets, computed here from the rule
    in docs/registry-import.md: the first 8 hex digits of SHA-256 of the name."""
    return f"{prefix}-{hashlib.sha256(name.encode()).hexdigest()[:8].upper()}"


def register_clusters(db_url: str, tmp_path: Path) -> None:
    """The registry already knows the Ningbo auto-parts cluster."""
    path = tmp_path / "clusters.csv"
    path.write_text(
        "集群编号,集群名称,行政区划代码,行业代码\nNB-AUTO-PARTS,宁波汽车零部件产业集群,330200,C3670\n",
        encoding="utf-8",
    )
    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)
    assert code == 0, out


# ------------------------------------------------------------------ the survey workbook

ENTERPRISE_HEADER = ["序号", "统一社会信用代码（必填）", "企业名称", "所在区县代码", "所属行业代码",
                     "所属产业集群", "是否规上", "是否重点企业", "联系人"]  # fmt: skip
DEVICE_HEADER = ["序号", "统一社会信用代码", "资产编号", "设备名称", "设备型号", "设备类别", "车间",
                 "产线", "产线编号", "是否生产设备", "是否数控", "理想节拍(秒)", "投用日期",
                 "停用日期"]  # fmt: skip
SURVEY_DEVICES = [
    # 资产编号, 名称, 型号, 类别, 车间, 产线, 产线编号, 生产设备, 数控, 节拍, 投用日期
    ["ZC-001", "250T冲床", "JH21-250", "冲床", "冲压车间", "三号线", "L3", "", "否", 6,
     "2020-01-01"],
    ["ZC-002", "160T冲床", "JH21-160", "冲床", "冲压车间", "三号线", "", "", "否", 5,
     "2020-01-01"],
    ["ZC-003", "数控折弯机", "WE67K", "折弯机", "冲压车间", "三号线", "", "", "是", 40,
     "2021-03-01"],
    ["ZS-001", "注塑机 海天MA1600", "MA1600", "注塑成型机", "注塑车间", "注塑一线", "", "", "是",
     35, "2022-05-01"],
    ["ZP-001", "焊接专机", "HJ-2", "焊接专机", "装配车间", "装配二线", "", "是", "否", 90,
     "2023-01-01"],
    ["ZP-002", "AGV小车", "AGV-300", "AGV小车", "装配车间", "装配二线", "", "", "否", "",
     "2023-01-01"],
    ["ZP-003", "三坐标测量机", "Global S", "三坐标", "装配车间", "", "", "", "是", "",
     "2023-01-01"],
    ["FZ-001", "螺杆空压机", "GA37", "空压机", "动力车间", "", "", "", "否", "", "2019-01-01"],
    ["FZ-002", "冷却塔", "LBCM-100", "冷却塔", "动力车间", "", "", "", "否", "", "2019-01-01"],
    ["FZ-003", "10T行车", "LD-10", "行车", "冲压车间", "", "", "", "否", "", "2019-01-01"],
    ["FZ-004", "叉车 (上料)", "CPD30", "叉车", "装配车间", "装配二线", "", "是", "否", "",
     "2021-01-01"],
]  # fmt: skip
DEVICES: list[list[object]] = [[RUICHI, *row, None] for row in SURVEY_DEVICES]


def survey_workbook(path: Path, devices: list[list[object]] = DEVICES) -> Path:
    workbook = Workbook()
    clusters = workbook.active
    assert clusters is not None
    clusters.title = "产业集群"
    clusters.append(["集群编号", "集群名称", "所在区县代码", "行业代码"])
    clusters.append(["TZ-HY-MOULD", "台州黄岩模具产业集群", "331003", "C3525"])
    enterprises = workbook.create_sheet("企业信息")
    enterprises.append(["2026年 宁波市规上工业企业设备联网情况调查表"])  # a title above the header
    enterprises.append(ENTERPRISE_HEADER)
    enterprises.append([1, RUICHI, "宁波瑞驰精密汽车零部件有限公司", "330206", "C3670",
                        "宁波汽车零部件产业集群", "是", "是", "张工"])  # fmt: skip
    enterprises.append([2, HONGTUO, "慈溪宏拓汽车配件有限公司", "330282", "C3670",
                        "台州黄岩模具产业集群、宁波模具产业集群", "否", "否", "李工"])  # fmt: skip
    sheet = workbook.create_sheet("设备明细")
    sheet.append(["宁波瑞驰 设备台账（2026年11月）"])
    sheet.append(DEVICE_HEADER)
    for number, device in enumerate(devices, start=1):
        sheet.append([number, *device])
    workbook.save(path)
    return path


def test_a_survey_workbook_with_names_stores_every_row(db_url: str, tmp_path: Path) -> None:
    register_clusters(db_url, tmp_path)
    path = survey_workbook(tmp_path / "设备联网调查表.xlsx")

    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)

    assert code == 0, out
    # 1 cluster + 2 enterprises + 11 devices, nothing rejected.
    assert summary_numbers(out)[:3] == (14, 0, 0)
    assert error_rows(out) == []
    devices = rows(
        db_url,
        "SELECT d.code, d.device_type, d.is_production_equipment, d.is_nc,"
        " d.ideal_cycle_time_s, s.name, s.code, l.name, l.code FROM device d"
        " LEFT JOIN site s ON s.id = d.site_id LEFT JOIN line l ON l.id = d.line_id"
        " ORDER BY d.code",
    )
    press_shop, assembly = derived("S", "冲压车间"), derived("S", "装配车间")
    moulding, power = derived("S", "注塑车间"), derived("S", "动力车间")
    line2, moulding1 = derived("L", "装配二线"), derived("L", "注塑一线")
    assert devices == [
        # Auxiliary types are not production equipment unless the row says so (the
        # forklift feeding the assembly line is).
        ("FZ-001", "air_compressor", False, False, None, "动力车间", power, None, None),
        ("FZ-002", "cooling_tower", False, False, None, "动力车间", power, None, None),
        ("FZ-003", "crane", False, False, None, "冲压车间", press_shop, None, None),
        ("FZ-004", "forklift", True, False, None, "装配车间", assembly, "装配二线", line2),
        ("ZC-001", "press", True, False, 6.0, "冲压车间", press_shop, "三号线", "L3"),
        # 三号线 without its 产线编号 is the same line L3 as the row above.
        ("ZC-002", "press", True, False, 5.0, "冲压车间", press_shop, "三号线", "L3"),
        ("ZC-003", "press_brake", True, True, 40.0, "冲压车间", press_shop, "三号线", "L3"),
        ("ZP-001", "other", True, False, 90.0, "装配车间", assembly, "装配二线", line2),
        ("ZP-002", "agv", True, False, None, "装配车间", assembly, "装配二线", line2),
        ("ZP-003", "test_equipment", True, True, None, "装配车间", assembly, None, None),
        ("ZS-001", "injection_moulding_machine", True, True, 35.0, "注塑车间", moulding,
         "注塑一线", moulding1),
    ]  # fmt: skip
    # Clusters by name: one registered, one defined in the file, one nobody knows.
    memberships = rows(
        db_url,
        "SELECT e.credit_code, c.code FROM enterprise_cluster ec"
        " JOIN enterprise e ON e.id = ec.enterprise_id JOIN cluster c ON c.id = ec.cluster_id"
        " ORDER BY 1, 2",
    )
    assert memberships == [(RUICHI, "NB-AUTO-PARTS"), (HONGTUO, "TZ-HY-MOULD")]
    assert rows(db_url, "SELECT above_designated_size, key_enterprise FROM enterprise"
                " ORDER BY credit_code") == [(True, True), (False, False)]  # fmt: skip
    warnings = warnings_of(out)
    assert (
        "企业信息 row 4, 所属产业集群: '宁波模具产业集群' cluster is neither the code nor the name"
        " of a cluster in this file or the registry; the enterprise is stored without this"
        " membership. Register the cluster (a clusters / 产业集群 sheet) and import again"
    ) in warnings
    assert (
        "设备明细 row 7, 设备类别: '焊接专机' is not a known device type; stored as 其他 (other)"
        " with 是否生产设备 是. Use one of the types in docs/registry-import.md to classify it"
    ) in warnings
    assert len(warnings) == summary_numbers(out)[3] == 2
    assert "设备明细: 未使用的列 columns not used: 序号, 设备型号" in out
    assert f"新建 new 产线 line 装配二线 → {line2} (code derived from the name)" in out


def test_a_reimport_maps_names_to_the_same_lines_and_sites(db_url: str, tmp_path: Path) -> None:
    register_clusters(db_url, tmp_path)
    path = survey_workbook(tmp_path / "台账.xlsx")
    assert zhizao("registry", "import", str(path), "--db-url", db_url)[0] == 0
    places = (
        "SELECT 'line', id, code, name FROM line UNION ALL SELECT 'site', id, code, name FROM site"
    )
    before = sorted(rows(db_url, places))
    stamp = rows(db_url, "SELECT max(updated_at) FROM device")

    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)

    assert code == 0, out
    assert sorted(rows(db_url, places)) == before
    assert rows(db_url, "SELECT max(updated_at) FROM device") == stamp
    assert "新建 new" not in out  # no line or site created the second time

    # A later file of another template spells the line with a space, and gives
    # 注塑一线 its code now: same lines, same ids.
    later = tmp_path / "设备台账.csv"
    later.write_text(
        "统一社会信用代码,设备编号,设备名称,设备类型,生产车间,生产线名称,生产线编号\n"
        f"{RUICHI},ZP-009,焊接机器人,机器人,装配车间,装配 二线,\n"
        f"{RUICHI},ZS-002,注塑机 #2,注塑机,注塑车间,注塑一线,ZS1\n",
        encoding="gbk",  # as Excel saves a CSV on a Chinese Windows
    )
    code, out = zhizao("registry", "import", str(later), "--db-url", db_url)

    assert code == 0, out
    lines = dict(rows(db_url, "SELECT d.code, l.id FROM device d JOIN line l ON l.id = d.line_id"))
    assert lines["ZP-009"] == lines["ZP-001"]
    assert lines["ZS-002"] == lines["ZS-001"]
    # The line first named alone took the code the later file gave it.
    assert rows(db_url, "SELECT code, name FROM line WHERE id = %s", lines["ZS-001"]) == [
        ("ZS1", "注塑一线")
    ]
    assert rows(db_url, "SELECT count(*) FROM line") == [(3,)]


# ------------------------------------------------------------------ every problem at once


def test_every_problem_of_every_row_is_reported_in_one_import(db_url: str, tmp_path: Path) -> None:
    register_clusters(db_url, tmp_path)
    bad: list[list[object]] = [
        *DEVICES[:2],
        # An enterprise nobody registered, an NC flag that is no flag, and a
        # decommissioning before the commissioning: three problems of one row.
        [STRANGER, "X-1", "数控车床", "CK6150", "数控车床", "冲压车间", "", "", "是", "也许", "",
         "2024-05-01", "2023-12-31"],
        # An unknown type without 是否生产设备, a name typed as the line code, a cycle
        # time that is no number and a day that does not exist.
        [RUICHI, "X-2", "3D打印机", "M290", "3D打印机", "装配车间", "装配二线", "装配二线", "",
         "否", "快", "2024-13-01", ""],
        # A code with a space in it, and again the dates the wrong way round.
        [RUICHI, "X 3", "数控车床", "CK6150", "数控车床", "冲压车间", "", "", "是", "是", "",
         "2024-05-01", "2023-01-01"],
    ]  # fmt: skip
    path = survey_workbook(tmp_path / "台账.xlsx", bad)

    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)

    assert code == 1
    assert error_rows(out) == [
        ("设备明细", 5, "统一社会信用代码", STRANGER,
         "is neither in this file nor in the registry"),
        ("设备明细", 5, "是否数控", "也许", "must be 是/否, Y/N, yes/no, true/false, 1/0 or ✓"),
        ("设备明细", 5, "停用日期", "2023-12-31", "is before 投用日期 2024-05-01"),
        ("设备明细", 6, "设备类别", "3D打印机",
         "is not a device type; use one of 数控机床、工业机器人、注塑机、织机、针织机、冲压机、"
         "焊接设备、激光切割机、压铸机、PLC控制产线、检测设备、输送设备、空压机、折弯机、包装机、"
         "AGV、辅助设备、冷却塔、起重设备、叉车、其他 or the English value; or fill in 是否生产设备"
         " to store it as 其他"),
        ("设备明细", 6, "产线编号", "装配二线",
         "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit; a name"
         " such as 三号线 goes into the name column (产线 / 车间 / 厂区)"),
        ("设备明细", 6, "理想节拍(秒)", "快",
         "must be a number of seconds, e.g. 45, 12.5, 45秒 or 1分30秒"),
        ("设备明细", 6, "投用日期", "2024-13-01",
         "is not a calendar day (month must be in 1..12)"),
        ("设备明细", 7, "资产编号", "X 3",
         "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"),
        ("设备明细", 7, "停用日期", "2023-01-01", "is before 投用日期 2024-05-01"),
    ]  # fmt: skip
    # 1 cluster + 2 enterprises + 2 good devices stored; 3 rows with 9 problems.
    assert summary_numbers(out)[:3] == (5, 3, 9)
    assert "3 行被拒绝 rows rejected (others were stored), 9 个错误 problems" in out
    assert rows(db_url, "SELECT code FROM device ORDER BY code") == [("ZC-001",), ("ZC-002",)]
    devices_line = re.search(r"设备 devices\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)", out)
    assert devices_line is not None
    assert devices_line.groups() == ("5", "2", "3")  # read, stored, rejected


# ------------------------------------------------------------------ other wordings


def test_headers_close_to_known_ones_get_a_did_you_mean(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "设备台账.csv"
    path.write_text(
        "统一社会信用代码,设备编号,设备名称,设备类型,投产日起,是否生产设备,节拍(毫秒),是否联网,"
        "设备形号\n"
        f"{RUICHI},CNC-1,加工中心,加工中心,2024-03-01,是,45000,是,VMC850\n",
        encoding="utf-8",
    )
    enterprises = tmp_path / "企业.csv"
    enterprises.write_text(
        "统一社会信用代码,企业名称,行政区划代码,行业代码,是否规上企\n"
        f"{RUICHI},宁波瑞驰,330206,C3670,是\n",
        encoding="utf-8",
    )

    assert zhizao("registry", "import", str(enterprises), "--db-url", db_url)[0] == 0
    code, out = zhizao("registry", "import", str(path), "--db-url", db_url)
    _, enterprise_out = zhizao("registry", "import", str(enterprises), "--db-url", db_url)

    assert code == 0, out
    assert warnings_of(out) == [
        "设备台账.csv row 1, 投产日起: unknown column for devices, ignored;"
        " did you mean '投产日期' (commissioned_on)?",
        "设备台账.csv row 1, 节拍(毫秒): unknown column for devices, ignored;"
        " did you mean '节拍(秒)' (ideal_cycle_time_s)?",
        "设备台账.csv row 1, 是否联网: is not read: a device counts as networked when an edge"
        " gateway sends its data (服务设备 of the 边缘网关 sheet), not by a flag in the ledger",
        "设备台账.csv row 1, 设备形号: unknown column for devices, ignored;"
        " did you mean '设备型号'? That column is not used by the registry",
    ]
    assert warnings_of(enterprise_out) == [
        "企业.csv row 1, 是否规上企: unknown column for enterprises, ignored;"
        " did you mean '是否规上企业' (above_designated_size)?"
    ]
    # A cycle time in milliseconds is not taken for seconds.
    assert rows(db_url, "SELECT ideal_cycle_time_s, commissioned_on FROM device") == [(None, None)]


def test_an_english_csv_with_bom_from_excel_is_read(db_url: str, tmp_path: Path) -> None:
    enterprises = tmp_path / "companies.csv"
    enterprises.write_text(
        "Credit Code,Company Name,Region Code,Industry Code,Cluster,Above Designated Size,"
        "Key Enterprise\n"
        f"{RUICHI},Ningbo Ruichi,330206,C3670,宁波汽车零部件产业集群,Y,N\n",
        encoding="utf-8-sig",
    )
    devices = tmp_path / "equipment.csv"
    devices.write_text(
        "Credit Code,Asset No,Equipment Name,Equipment Type,Workshop,Line Name,"
        "Production Equipment,CNC,Cycle Time (min),Commissioning Date,Remarks\r\n"
        f"{RUICHI},A-100,Press 250t,Press,Stamping,Line 3,,no,0.1,2024/3/1,new\r\n"
        f"{RUICHI},A-101,Compressor,Air Compressor,Utilities,,,no,,2019/3/1,\r\n"
        f"{RUICHI},A-102,Laser,Fiber Laser Cutter,Stamping,Line 3,yes,yes,1.5,2024/3/1,\r\n",
        encoding="utf-8-sig",
    )
    register_clusters(db_url, tmp_path)

    code, out = zhizao("registry", "import", str(enterprises), "--db-url", db_url)
    assert code == 0, out
    code, out = zhizao("registry", "import", str(devices), "--db-url", db_url)

    assert code == 0, out
    assert rows(
        db_url,
        "SELECT d.code, d.device_type, d.is_production_equipment, d.ideal_cycle_time_s,"
        " s.name, l.name, l.code FROM device d LEFT JOIN site s ON s.id = d.site_id"
        " LEFT JOIN line l ON l.id = d.line_id ORDER BY d.code",
    ) == [
        # "Line 3" is a name (a code has no space): its code is derived from the name
        # as compared, without spaces and case ("line3").
        ("A-100", "press", True, 6.0, "Stamping", "Line 3", derived("L", "line3")),
        ("A-101", "air_compressor", False, None, "Utilities", None, None),
        ("A-102", "other", True, 90.0, "Stamping", "Line 3", derived("L", "line3")),
    ]
    assert rows(
        db_url,
        "SELECT c.code FROM enterprise_cluster ec JOIN cluster c ON c.id = ec.cluster_id",
    ) == [("NB-AUTO-PARTS",)]
    assert warnings_of(out) == [
        "equipment.csv row 4, Equipment Type: 'Fiber Laser Cutter' is not a known device type;"
        " stored as 其他 (other) with Production Equipment 是. Use one of the types in"
        " docs/registry-import.md to classify it"
    ]
    assert summary_numbers(out) == (3, 0, 0, 1)
    assert "equipment.csv: 未使用的列 columns not used: Remarks" in out
