"""Write the sample equipment ledger (设备台账) and its CSV exports, deterministically.

    .venv/bin/python scripts/make_sample_ledger.py [--check]

Outputs (all from the data below, so they always agree):

- ``zhizao/data/sample_ledger.xlsx``: sheets clusters (English headers), 企业,
  设备台账 and 边缘网关 (Chinese headers); what ``zhizao demo`` imports and what a
  user copies to start a ledger of their own.
- ``docs/samples/ledger-enterprises.csv`` and ``docs/samples/ledger-devices.csv``:
  the same enterprises and devices with English headers and values.
- ``tests/data/ledger_mixed.csv``: a devices file with one deliberate mistake per
  bad row, between good rows, for the parser tests.

The enterprises are fictitious, placed in real Zhejiang clusters (宁波汽车零部件,
台州黄岩模具, 绍兴柯桥纺织, 温州乐清电气). Credit codes are built the way GB 32100 and
GB 11714 say (county code, organisation code with its own check digit, credit check
character), so they pass validation without belonging to anyone. Enterprise 1 is the
demo factory the simulator animates: two machining lines of CNC machine tools and
robots behind one edge gateway.

The xlsx is byte-for-byte reproducible: openpyxl stamps the save time into
``docProps/core.xml`` and the zip entries, and both are pinned here. ``--check``
rewrites nothing and exits 1 when a committed file differs from what would be written.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import zipfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from zhizao.codes import CREDIT_ALPHABET, make_credit_code
from zhizao.ledger import read_ledger
from zhizao.registry import DeviceType

ROOT = Path(__file__).resolve().parent.parent
XLSX = ROOT / "zhizao" / "data" / "sample_ledger.xlsx"
ENTERPRISES_CSV = ROOT / "docs" / "samples" / "ledger-enterprises.csv"
DEVICES_CSV = ROOT / "docs" / "samples" / "ledger-devices.csv"
MIXED_CSV = ROOT / "tests" / "data" / "ledger_mixed.csv"

#: The timestamp written into the workbook, so that regenerating changes no byte.
PINNED_TIME = datetime(2026, 1, 1)  # noqa: DTZ001 - openpyxl stores naive UTC
_ZIP_TIME = (2026, 1, 1, 0, 0, 0)


def org_code(body: str) -> str:
    """A GB 11714 organisation code: 8 characters and their check character."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(char, 36) * weight for char, weight in zip(body, weights, strict=True))
    check = 11 - total % 11
    return body + {10: "X", 11: "0"}.get(check, str(check))


def credit_code(county: str, org_body: str) -> str:
    """A GB 32100 credit code of a company (91) registered in ``county``."""
    prefix = "91" + county + org_code(org_body)
    if any(char not in CREDIT_ALPHABET for char in prefix):
        raise ValueError(f"{prefix} has characters outside the GB 32100 alphabet")
    return make_credit_code(prefix)


@dataclass(frozen=True)
class ClusterRow:
    code: str
    name: str
    region_code: str
    industry_code: str


@dataclass(frozen=True)
class EnterpriseRow:
    credit_code: str
    name: str
    region_code: str
    industry_code: str
    clusters: tuple[str, ...]
    above_designated_size: bool
    key_enterprise: bool
    time_zone: str | None


@dataclass(frozen=True)
class DeviceRow:
    enterprise: str
    code: str
    name: str
    device_type: DeviceType
    site: str | None
    line: str | None
    production: bool
    nc: bool
    key_process: bool
    cycle_s: float | None
    commissioned: date | None
    decommissioned: date | None
    networked: bool  # served by the enterprise's edge gateway


@dataclass(frozen=True)
class EdgeRow:
    edge_id: str
    enterprise: str
    name: str
    devices: tuple[str, ...]


CLUSTERS = (
    ClusterRow("NB-AUTO-PARTS", "宁波汽车零部件产业集群", "330200", "C3670"),
    ClusterRow("TZ-HY-MOULD", "台州黄岩模具产业集群", "331003", "C3525"),
    ClusterRow("SX-KQ-TEXTILE", "绍兴柯桥纺织产业集群", "330603", "C17"),
    ClusterRow("WZ-YQ-ELECTRIC", "温州乐清电气产业集群", "330382", "C382"),
)

RUICHI = credit_code("330206", "MA2GR7K1")  # 1: the demo factory, Beilun
HONGTUO = credit_code("330282", "MA28CX3P")
HENGJING = credit_code("330226", "MA2AH9D4")
JINGCHENG = credit_code("331003", "MA29T6W8")
HENGDA = credit_code("331003", "14802736")
JINHUA = credit_code("330603", "MA2BK4N5")
MEILUN = credit_code("330603", "MA2JE1L7")
HENGCHI = credit_code("330382", "MA2CL8Q2")

ENTERPRISES = (
    EnterpriseRow(
        RUICHI, "宁波瑞驰精密汽车零部件有限公司", "330206", "C3670",
        ("NB-AUTO-PARTS",), True, True, "Asia/Shanghai",
    ),
    EnterpriseRow(
        HONGTUO, "慈溪宏拓汽车配件有限公司", "330282", "C3670",
        ("NB-AUTO-PARTS",), True, False, "Asia/Shanghai",
    ),
    EnterpriseRow(
        HENGJING, "宁海县恒精压铸有限公司", "330226", "C3392",
        ("NB-AUTO-PARTS",), False, False, None,
    ),
    EnterpriseRow(
        JINGCHENG, "台州黄岩精诚模塑有限公司", "331003", "C3525",
        ("TZ-HY-MOULD", "NB-AUTO-PARTS"), True, True, "Asia/Shanghai",
    ),
    EnterpriseRow(
        HENGDA, "台州市黄岩恒达模具有限公司", "331003", "C3525",
        ("TZ-HY-MOULD",), False, False, None,
    ),
    EnterpriseRow(
        JINHUA, "绍兴柯桥锦华纺织有限公司", "330603", "C1751",
        ("SX-KQ-TEXTILE",), True, False, "Asia/Shanghai",
    ),
    EnterpriseRow(
        MEILUN, "绍兴柯桥美纶针织有限公司", "330603", "C1761",
        ("SX-KQ-TEXTILE",), False, False, None,
    ),
    EnterpriseRow(
        HENGCHI, "乐清市恒驰电气有限公司", "330382", "C3823",
        ("WZ-YQ-ELECTRIC",), True, True, "Asia/Shanghai",
    ),
)  # fmt: skip


#: Device type keys used in the tables below.
_TYPES = {
    "cnc": DeviceType.CNC_MACHINE_TOOL,
    "robot": DeviceType.INDUSTRIAL_ROBOT,
    "moulding": DeviceType.INJECTION_MOULDING,
    "loom": DeviceType.LOOM,
    "knitting": DeviceType.KNITTING_MACHINE,
    "press": DeviceType.PRESS,
    "laser": DeviceType.LASER_CUTTER,
    "diecast": DeviceType.DIE_CASTING,
    "plc": DeviceType.PLC_LINE,
    "test": DeviceType.TEST_EQUIPMENT,
    "conveyor": DeviceType.CONVEYOR,
    "air": DeviceType.COMPRESSOR,
    "other": DeviceType.OTHER,
}

# One device a line: code | name | type | site | line | flags | cycle s | in | out
# (commissioned and decommissioned dates).
# Flags: P production equipment, N numerically controlled (数控), K key process,
# E served by the enterprise's edge gateway (networked).
_DEVICE_TABLES = {
    # 1 宁波瑞驰, the demo factory: L1 machines housings, L2 turns shafts; robots
    # load and deburr; a CMM beside the lines; the compressor reports over MQTT through
    # the same edge (auxiliary: in no rate, but its edge must serve it to send its data).
    RUICHI: """
    CNC-101 | 立式加工中心 VMC850 #1 | cnc      | BL1 | L1 | PNKE | 180 | 2019-04-15 |
    CNC-102 | 立式加工中心 VMC850 #2 | cnc      | BL1 | L1 | PNKE | 180 | 2019-04-15 |
    CNC-103 | 卧式加工中心 HMC500    | cnc      | BL1 | L1 | PNKE | 240 | 2021-06-01 |
    CNC-104 | 数控钻攻中心 T600      | cnc      | BL1 | L1 | PN-E |  95 | 2022-03-10 |
    RB-101  | 六轴上下料机器人 L1    | robot    | BL1 | L1 | PN-E | 180 | 2021-06-01 |
    CNC-201 | 数控车床 CK6150 #1     | cnc      | BL1 | L2 | PNKE |  75 | 2020-09-01 |
    CNC-202 | 数控车床 CK6150 #2     | cnc      | BL1 | L2 | PNKE |  75 | 2020-09-01 |
    CNC-203 | 车铣复合中心 TMX-200   | cnc      | BL1 | L2 | PNKE | 150 | 2026-09-20 |
    RB-201  | 六轴上下料机器人 L2    | robot    | BL1 | L2 | PN-E |  75 | 2020-09-01 |
    RB-202  | 去毛刺机器人           | robot    | BL1 | L2 | PN-E |  60 | 2023-05-18 |
    CMM-01  | 三坐标测量机           | test     | BL1 |    | PN-E |     | 2019-08-01 |
    AC-01   | 螺杆空压机 37kW        | air      | BL1 |    | ---E |     | 2019-03-01 |
    """,
    # 2 慈溪宏拓: turned parts; the old manual lathe left service at the end of 2025.
    HONGTUO: """
    CK-01   | 数控车床 CK6140 #1     | cnc      | CX1 | L1 | PNKE |  55 | 2018-05-20 |
    CK-02   | 数控车床 CK6140 #2     | cnc      | CX1 | L1 | PNKE |  55 | 2018-05-20 |
    CK-03   | 数控车床 CK6140 #3     | cnc      | CX1 | L1 | PN-E |  55 | 2020-11-02 |
    VMC-01  | 立式加工中心 V650      | cnc      | CX1 | L1 | PNKE | 120 | 2022-07-15 |
    CA-01   | 普通车床 CA6140        | other    | CX1 | L1 | P--- |     | 2009-03-01 | 2025-12-31
    PR-01   | 开式冲床 J23-63        | press    | CX1 |    | P--- |   4 | 2012-06-01 |
    QC-01   | 影像测量仪             | test     | CX1 |    | PN-- |     | 2021-01-10 |
    """,
    # 3 宁海恒精: aluminium die casting of housings.
    HENGJING: """
    DC-01   | 冷室压铸机 DCC800 #1   | diecast  | NH1 | L1 | PNKE |  65 | 2017-10-10 |
    DC-02   | 冷室压铸机 DCC800 #2   | diecast  | NH1 | L1 | PNKE |  65 | 2019-04-01 |
    DC-03   | 冷室压铸机 DCC400      | diecast  | NH1 | L1 | P-K- |  45 | 2013-07-01 |
    RB-01   | 喷涂取件机器人         | robot    | NH1 | L1 | PN-E |  65 | 2019-04-01 |
    CNC-01  | 去浇口加工中心         | cnc      | NH1 |    | PN-- |  90 | 2020-05-12 |
    AC-01   | 螺杆空压机 55kW        | air      | NH1 |    | ---- |     | 2017-09-01 |
    """,
    # 4 黄岩精诚模塑: a mould shop (MJ) and injection moulding of lamp housings (ZS).
    JINGCHENG: """
    HSM-01  | 高速加工中心 #1        | cnc      | HY1 | MJ | PNKE |     | 2018-03-05 |
    HSM-02  | 高速加工中心 #2        | cnc      | HY1 | MJ | PNKE |     | 2022-08-22 |
    EDM-01  | 数控电火花成型机       | cnc      | HY1 | MJ | PNK- |     | 2016-11-11 |
    WEDM-01 | 慢走丝线切割机         | cnc      | HY1 | MJ | PN-E |     | 2020-04-01 |
    IM-01   | 注塑机 1600吨          | moulding | HY1 | ZS | PNKE |  45 | 2019-06-18 |
    IM-02   | 注塑机 800吨           | moulding | HY1 | ZS | PNKE |  35 | 2019-06-18 |
    IM-03   | 注塑机 530吨           | moulding | HY1 | ZS | PN-E |  28 | 2026-10-08 |
    IM-04   | 注塑机 280吨           | moulding | HY1 | ZS | P--- |  22 | 2011-05-01 | 2024-06-30
    RB-01   | 注塑取件机器人         | robot    | HY1 | ZS | PN-E |  45 | 2019-06-18 |
    """,
    # 5 黄岩恒达: a small mould shop; only its CNCs are connected so far.
    HENGDA: """
    CNC-01  | 立式加工中心 VMC1160   | cnc      | HD1 |    | PNKE |     | 2016-04-01 |
    CNC-02  | 数控铣床 XK7132        | cnc      | HD1 |    | PN-E |     | 2021-09-09 |
    XM-01   | 普通铣床 X6132         | other    | HD1 |    | P--- |     | 2008-05-01 |
    IM-01   | 试模注塑机 250吨       | moulding | HD1 |    | PN-- |  30 | 2014-10-01 |
    AC-01   | 活塞空压机             | air      | HD1 |    | ---- |     | 2008-05-01 |
    """,
    # 6 柯桥锦华: air-jet looms are connected, the old water-jet looms not yet.
    JINHUA: """
    PJ-01   | 喷气织机 #1            | loom     | KQ1 | ZZ | PNKE |     | 2020-03-01 |
    PJ-02   | 喷气织机 #2            | loom     | KQ1 | ZZ | PNKE |     | 2020-03-01 |
    PJ-03   | 喷气织机 #3            | loom     | KQ1 | ZZ | PNKE |     | 2021-07-15 |
    PJ-04   | 喷气织机 #4            | loom     | KQ1 | ZZ | PNKE |     | 2021-07-15 |
    PJ-05   | 喷气织机 #5            | loom     | KQ1 | ZZ | PNKE |     | 2026-10-15 |
    PS-01   | 喷水织机 #1            | loom     | KQ1 | ZZ | P-K- |     | 2012-05-01 |
    PS-02   | 喷水织机 #2            | loom     | KQ1 | ZZ | P-K- |     | 2012-05-01 |
    ZJ-01   | 分条整经机             | other    | KQ1 | ZJ | PN-E |     | 2020-03-01 |
    YB-01   | 验布机                 | test     | KQ1 |    | P--- |     | 2015-01-01 |
    AC-01   | 离心空压机             | air      | KQ1 |    | ---- |     | 2020-02-15 |
    """,
    # 7 柯桥美纶: circular knitting; no edge gateway at all yet (NC machines, none
    # networked: the board and the rates show an enterprise not connected).
    MEILUN: """
    DY-01   | 单面大圆机 #1          | knitting | ML1 | ZZ | PNK- |     | 2022-02-20 |
    DY-02   | 单面大圆机 #2          | knitting | ML1 | ZZ | PNK- |     | 2022-02-20 |
    DY-03   | 双面大圆机             | knitting | ML1 | ZZ | P-K- |     | 2014-08-01 |
    DY-04   | 提花大圆机             | knitting | ML1 | ZZ | P--- |     | 2013-03-01 |
    AC-01   | 螺杆空压机 22kW        | air      | ML1 |    | ---- |     | 2013-03-01 |
    """,
    # 8 乐清恒驰: miniature circuit breakers, from stamping to test.
    HENGCHI: """
    CY-01   | 高速冲床 #1            | press    | YQ1 | CY | PN-E | 0.5 | 2018-09-01 |
    CY-02   | 高速冲床 #2            | press    | YQ1 | CY | P--- | 0.5 | 2010-06-01 |
    ZS-01   | 注塑机 外壳 #1         | moulding | YQ1 | ZS | PN-E |  30 | 2019-02-25 |
    ZS-02   | 注塑机 外壳 #2         | moulding | YQ1 | ZS | PN-E |  30 | 2019-02-25 |
    JG-01   | 光纤激光切割机         | laser    | YQ1 |    | PN-E |     | 2021-04-12 |
    ZP-01   | 断路器自动装配线       | plc      | YQ1 | ZP | PNKE |   6 | 2023-03-15 |
    HJ-01   | 焊接机器人             | robot    | YQ1 | ZP | PNKE |   6 | 2023-03-15 |
    JC-01   | 断路器特性测试台       | test     | YQ1 | ZP | PNKE |   6 | 2023-03-15 |
    SS-01   | 倍速链输送线           | conveyor | YQ1 | ZP | -N-- |     | 2023-03-15 |
    """,
}


def _optional(text: str) -> str | None:
    return text or None


def _devices() -> tuple[DeviceRow, ...]:
    rows = []
    for enterprise, table in _DEVICE_TABLES.items():
        for line in filter(None, (raw.strip() for raw in table.splitlines())):
            code, name, kind, site, prod_line, flags, cycle, start, end = (
                cell.strip() for cell in line.split("|")
            )
            rows.append(
                DeviceRow(
                    enterprise, code, name, _TYPES[kind], _optional(site), _optional(prod_line),
                    production="P" in flags, nc="N" in flags, key_process="K" in flags,
                    cycle_s=float(cycle) if cycle else None,
                    commissioned=date.fromisoformat(start) if start else None,
                    decommissioned=date.fromisoformat(end) if end else None,
                    networked="E" in flags,
                )
            )  # fmt: skip
    return tuple(rows)


DEVICES = _devices()

_EDGE_NAMES = {
    RUICHI: ("EDGE-RC-01", "北仑一厂边缘网关"),
    HONGTUO: ("EDGE-HT-01", "机加车间边缘网关"),
    HENGJING: ("EDGE-HJ-01", "压铸车间边缘网关"),
    JINGCHENG: ("EDGE-JC-01", "模具注塑边缘网关"),
    HENGDA: ("EDGE-HD-01", "车间边缘网关"),
    JINHUA: ("EDGE-JH-01", "织造车间边缘网关"),
    HENGCHI: ("EDGE-HC-01", "断路器车间边缘网关"),
}

EDGES = tuple(
    EdgeRow(
        edge_id,
        enterprise,
        name,
        tuple(d.code for d in DEVICES if d.enterprise == enterprise and d.networked),
    )
    for enterprise, (edge_id, name) in _EDGE_NAMES.items()
)


# ----------------------------------------------------------------------------- xlsx


def _yes(flag: bool) -> str:
    return "是" if flag else "否"


def _sheet(workbook: Workbook, title: str, headers: list[str], rows: list[list[object]]) -> None:
    sheet = workbook.create_sheet(title)
    sheet.append(headers)
    for row in rows:
        sheet.append(row)
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
    for cell in sheet[1]:
        cell.font, cell.fill = bold, fill
    sheet.freeze_panes = "A2"
    for index, header in enumerate(headers, start=1):
        values = [header, *(row[index - 1] for row in rows)]
        # Wide characters take about two columns of width.
        width = max(sum(2 if ord(ch) > 0x2E80 else 1 for ch in str(v or "")) for v in values)
        sheet.column_dimensions[get_column_letter(index)].width = min(max(width + 2, 8), 48)
        for cell in sheet[get_column_letter(index)][1:]:
            if isinstance(cell.value, date):
                cell.number_format = "yyyy-mm-dd"
            elif isinstance(cell.value, str):
                # Text format keeps Excel from turning codes such as 330206 into numbers.
                cell.number_format = "@"


def build_workbook() -> bytes:
    workbook = Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    _sheet(
        workbook,
        "clusters",
        ["code", "name", "region_code", "industry_code"],
        [[c.code, c.name, c.region_code, c.industry_code] for c in CLUSTERS],
    )
    _sheet(
        workbook,
        "企业",
        [
            "统一社会信用代码",
            "企业名称",
            "行政区划代码",
            "行业代码",
            "所属产业集群",
            "规上企业",
            "重点企业",
            "时区",
        ],
        [
            [
                e.credit_code,
                e.name,
                e.region_code,
                e.industry_code,
                "；".join(e.clusters),
                _yes(e.above_designated_size),
                _yes(e.key_enterprise),
                e.time_zone,
            ]
            for e in ENTERPRISES
        ],
    )
    _sheet(
        workbook,
        "设备台账",
        [
            "统一社会信用代码",
            "设备编号",
            "设备名称",
            "设备类型",
            "厂区",
            "产线",
            "生产设备",
            "数控设备",
            "关键工序",
            "标准节拍（秒）",
            "投产日期",
            "停用日期",
        ],
        [
            [
                d.enterprise,
                d.code,
                d.name,
                d.device_type.label_zh,
                d.site,
                d.line,
                _yes(d.production),
                _yes(d.nc),
                _yes(d.key_process),
                d.cycle_s,
                d.commissioned,
                d.decommissioned,
            ]
            for d in DEVICES
        ],
    )
    _sheet(
        workbook, "边缘网关", ["网关编号", "统一社会信用代码", "名称", "服务设备"],
        [[g.edge_id, g.enterprise, g.name, "、".join(g.devices)] for g in EDGES],
    )  # fmt: skip
    workbook.properties.creator = "zhizao scripts/make_sample_ledger.py"
    workbook.properties.created = PINNED_TIME
    buffer = io.BytesIO()
    workbook.save(buffer)
    return _pin_zip(buffer.getvalue())


def _pin_zip(data: bytes) -> bytes:
    """The same workbook with the save time replaced by :data:`PINNED_TIME`."""
    stamp = PINNED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "docProps/core.xml":
                content = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                    rb"\g<1>" + stamp + rb"\g<2>",
                    content,
                )
            pinned = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            pinned.compress_type = zipfile.ZIP_DEFLATED
            pinned.external_attr = 0o644 << 16
            target.writestr(pinned, content)
    return out.getvalue()


# ----------------------------------------------------------------------------- csv


def _csv(headers: list[str], rows: list[list[object]]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(headers)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    # A BOM makes Excel open UTF-8 Chinese text correctly; the parser accepts both.
    return ("\ufeff" + text.getvalue()).encode("utf-8")


def _flag(flag: bool) -> str:
    return "true" if flag else "false"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def build_enterprises_csv() -> bytes:
    return _csv(
        ["credit_code", "name", "region_code", "industry_code", "clusters",
         "above_designated_size", "key_enterprise", "time_zone"],
        [
            [e.credit_code, e.name, e.region_code, e.industry_code, ";".join(e.clusters),
             _flag(e.above_designated_size), _flag(e.key_enterprise), e.time_zone]
            for e in ENTERPRISES
        ],
    )  # fmt: skip


def build_devices_csv() -> bytes:
    return _csv(
        ["enterprise", "code", "name", "device_type", "site", "line",
         "is_production_equipment", "is_nc", "key_process", "ideal_cycle_time_s",
         "commissioned_on", "decommissioned_on"],
        [
            [d.enterprise, d.code, d.name, d.device_type.value, d.site, d.line,
             _flag(d.production), _flag(d.nc), _flag(d.key_process), _number(d.cycle_s),
             d.commissioned.isoformat() if d.commissioned else None,
             d.decommissioned.isoformat() if d.decommissioned else None]
            for d in DEVICES
        ],
    )  # fmt: skip


def _bad_check_character(code: str) -> str:
    """The same code with a wrong last character (a typo in the check character)."""
    wrong = CREDIT_ALPHABET[(CREDIT_ALPHABET.index(code[-1]) + 1) % len(CREDIT_ALPHABET)]
    return code[:-1] + wrong


#: Not in the sample: a valid code that no registry knows.
STRANGER = credit_code("330782", "MA2DF3G6")


#: The mixed file, one line per row from row 2 on. Columns as in _MIXED_HEADERS; the
#: first names the enterprise: RUICHI, HONGTUO, STRANGER, or BADCHECK (RUICHI with a
#: wrong check character). The comment says what is wrong with the row, if anything.
_MIXED_ROWS = """
RUICHI|CNC-301|立式加工中心 #3|数控机床|BL1|L3|是|是|是|180|2024-03-01||新增
RUICHI|RB-301|码垛机器人|industrial_robot|BL1|L3|Y|Y|N||2024/3/1||
BADCHECK|CNC-302|立式加工中心 #4|数控机床|BL1|L3|是|是|否|180|2024-03-01||# check
RUICHI|CNC-301|立式加工中心 #3b|数控机床|BL1|L3|是|是|否|180|2024-03-01||# twice
HONGTUO|CK-09|数控车床 #9|数控机床|CX1|L1|是|是|否|55|2021-05-01|2020-12-31|# order
HONGTUO|3D-01|金属3D打印机|3D打印机|CX1||是|是|否||2023-01-01||# type
HONGTUO|CK-10|数控车床 #10|数控机床|CX1|L1|是|是|否|55|2023-02-30||# date
HONGTUO|CA-02|普通车床 CA6150|其他|CX1|L1|是|否|否||2010-01-01|2025-06-30|
HONGTUO|AC-02|储气罐空压机|空压机|CX1||N|N|N||2019-01-01||辅助设备
STRANGER|CNC-01|数控车床|数控机床|||是|是|否|60|2022-01-01||# unknown
HONGTUO|VMC-02|立式加工中心 #2|加工中心|CX1|L1|✓|✓||120秒|2024年3月1日||
-
RUICHI|CNC-302|立式加工中心 #4|数控机床|BL1|L3|是|是|否|180.5|2024-03-01||
"""
_MIXED_HEADERS = [
    " 统一社会信用代码", "设备编号 ", "设备名称", "设备类型", "厂区", "产线", "生产设备",
    "数控设备", "关键工序", "标准节拍（秒）", "投产日期", "停用日期", "备注",
]  # fmt: skip


def build_mixed_csv() -> bytes:
    """Devices with one mistake per bad row ("-" is a blank row), for the parser tests."""
    enterprises = {
        "RUICHI": RUICHI,
        "HONGTUO": HONGTUO,
        "STRANGER": STRANGER,
        "BADCHECK": _bad_check_character(RUICHI),
    }
    rows: list[list[object]] = []
    for line in filter(None, (raw.strip() for raw in _MIXED_ROWS.splitlines())):
        if line == "-":
            rows.append([])
            continue
        cells = [cell.strip() for cell in line.split("|")]
        if cells[-1].startswith("#"):
            cells[-1] = ""  # what is wrong is for the reader of this script, not the file
        rows.append([enterprises[cells[0]], *cells[1:]])
    return _csv(_MIXED_HEADERS, rows)


# ----------------------------------------------------------------------------- main


def outputs() -> dict[Path, bytes]:
    return {
        XLSX: build_workbook(),
        ENTERPRISES_CSV: build_enterprises_csv(),
        DEVICES_CSV: build_devices_csv(),
        MIXED_CSV: build_mixed_csv(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    files = outputs()
    if args.check:
        stale = [
            path for path, data in files.items() if not path.exists() or path.read_bytes() != data
        ]
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}")
        return 1 if stale else 0
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    ledger = read_ledger(XLSX)
    if ledger.errors:
        for error in ledger.errors:
            print(error, file=sys.stderr)
        return 1
    print(
        f"wrote {len(files)} files: {len(ledger.enterprises)} enterprises, "
        f"{len(ledger.devices)} devices, {len(ledger.edges)} edges"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
