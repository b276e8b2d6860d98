"""Bulk ledger upload (POST /api/v1/ledger/import): the CLI's importer over HTTP.

The report is compared with what ``zhizao registry import`` says of the same file on
a copy of the same registry; an engineer's upload is checked row by row for what it
stores and what it discloses.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from typer.testing import CliRunner

from tests.api.conftest import ApiClient
from tests.api.matrix import Case
from tests.api.test_registry import audit_rows, scalar
from tests.api.world import NB1, NB2, WZ
from tests.fix_db import RUN_ID, create_database, drop_database
from zhizao.cli import app as cli
from zhizao.cli.registry import import_ledger
from zhizao.codes import make_credit_code
from zhizao.settings import DatabaseSettings
from zhizao.storage.registry import summarise, table_counts

NB3 = make_credit_code("91330203MA2NB0003")
STRANGER = make_credit_code("91330782MA2DF3G63")  # valid, registered nowhere
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def device_csv(ent: str) -> bytes:
    return f"统一社会信用代码,设备编号,设备名称,设备类型\n{ent},X01,新设备,数控机床\n".encode()


CASES = [
    Case(
        "POST",
        "/api/v1/ledger/import",
        "writer",
        files=lambda p, e: {"file": ("设备台账.csv", device_csv(e), "text/csv")},
        note="an engineer's rows of another enterprise are row errors (tested below)",
    ),
]


def _xlsx(sheets: dict[str, list[list[Any]]]) -> bytes:
    workbook = Workbook()
    first = workbook.active
    assert first is not None
    workbook.remove(first)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _mixed_workbook() -> bytes:
    """A new enterprise with devices and an edge, a change to a known device, bad rows."""
    bad_credit = NB3[:-1] + ("0" if NB3[-1] != "0" else "1")
    return _xlsx(
        {
            "企业": [
                ["统一社会信用代码", "企业名称", "行政区划代码", "行业代码", "所属产业集群",
                 "是否规上"],
                [NB3, "宁波丁精密机械有限公司", "330203", "C3484", "宁波模具产业集群", "是"],
                [bad_credit, "校验位错误公司", "330203", "C3484", "", "否"],
            ],
            "设备台账": [
                ["统一社会信用代码", "设备编号", "设备名称", "设备类型", "产线", "是否数控",
                 "投产日期", "停用日期"],
                [NB3, "D01", "立式加工中心", "加工中心", "三号线", "是", "2024-03-01", None],
                [NB3, "D02", "注塑机", "注塑机", "L1", "否", "2024/3/1", "2024-02-01"],
                [NB1, "M01", "设备M01(大修后)", "数控机床", "L1", "是", None, None],
                [NB3, "D03", "冲床", "冲床", None, "否", "2024-13-01", None],
            ],
            "边缘网关": [
                ["网关编号", "统一社会信用代码", "服务设备"],
                ["edge-nb3", NB3, "D01"],
            ],
        }
    )  # fmt: skip


def _problems(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(p["sheet"], p["row"], p["column"], p["reason"]) for p in items]


async def _upload(
    client: Any, data: bytes, name: str = "设备台账.xlsx", **params: Any
) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/ledger/import", params=params, files={"file": (name, data, XLSX)}
    )
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


async def test_an_xlsx_upload_stores_the_rows_and_answers_what_the_cli_prints(
    api: ApiClient, api_db_url: str, api_world: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    data = _mixed_workbook()
    admin = api.as_("admin")

    dry = await _upload(admin, data, dry_run=True)
    assert dry["dry_run"] is True
    assert scalar(api_db_url, "SELECT count(*) FROM enterprise WHERE credit_code = %s", NB3) == 0
    report = await _upload(admin, data)
    assert report["dry_run"] is False
    assert {k: v for k, v in dry.items() if k != "dry_run"} == {
        k: v for k, v in report.items() if k != "dry_run"
    }

    summary = report["summary"]
    assert (summary["stored"], summary["rejected"], summary["problems"]) == (4, 3, 3)
    assert _problems(report["errors"]) == [
        ("企业", 3, "统一社会信用代码", report["errors"][0]["reason"]),
        ("设备台账", 3, "停用日期", "is before 投产日期 2024-03-01"),
        ("设备台账", 5, "投产日期", report["errors"][2]["reason"]),
    ]
    assert "check character" in report["errors"][0]["reason"]
    assert report["errors"][2]["value"] == "2024-13-01"
    devices = next(t for t in report["tables"] if t["table"] == "devices")
    assert (devices["read"], devices["stored"], devices["rejected"]) == (4, 2, 2)
    assert (devices["inserted"], devices["updated"]) == (1, 1)
    (line,) = report["new_places"]  # named, not coded: the code is derived from the name
    assert (line["kind"], line["name"], line["derived"]) == ("line", "三号线", True)
    assert line["code"].startswith("L-")
    d01 = (await admin.get(f"/api/v1/enterprises/{NB3}/devices/D01")).json()
    assert (d01["is_nc"], d01["edge_ids"], d01["commissioned_on"]) == (
        True,
        ["edge-nb3"],
        "2024-03-01",
    )
    nb3 = (await admin.get(f"/api/v1/enterprises/{NB3}")).json()
    assert (nb3["cluster_codes"], nb3["tags_label"]) == (["NB-MOLD"], "规上")
    m01 = (await admin.get(f"/api/v1/enterprises/{NB1}/devices/M01")).json()
    assert m01["name"] == "设备M01(大修后)"

    # The CLI, given the same file and a copy of the same registry, says the same.
    name = f"zhizao_t_{RUN_ID}_cli_{uuid.uuid4().hex[:6]}"
    cli_url = create_database(name, template=api_world[0])
    try:
        path = tmp_path / "设备台账.xlsx"
        path.write_bytes(data)
        ledger, changes = await import_ledger(DatabaseSettings(url=cli_url), path)
        assert str(summarise(ledger, changes)) == summary["text"]
        assert [(e.sheet, e.row, e.column, e.reason) for e in ledger.errors] == _problems(
            report["errors"]
        )
        assert [(t.table.value, t.read, t.stored, t.rejected, t.inserted, t.updated,
                 t.unchanged) for t in table_counts(ledger, changes)] == [
            (t["table"], t["read"], t["stored"], t["rejected"], t["inserted"], t["updated"],
             t["unchanged"]) for t in report["tables"]
        ]  # fmt: skip
        # And prints it: the second import of the same file changes nothing, as here.
        printed = await asyncio.to_thread(
            CliRunner().invoke, cli, ["registry", "import", str(path), "--db-url", cli_url]
        )
        again = await _upload(admin, data)
        assert printed.exit_code == 1  # rows were rejected
        assert again["summary"]["text"] in " ".join(printed.output.split())
        assert again["summary"]["stored"] == summary["stored"]
    finally:
        drop_database(name)

    imports = audit_rows(api_db_url, "ledger")
    assert [
        (r["actor"], r["action"], r["object_key"], r["detail"]["dry_run"]) for r in imports
    ] == [
        ("admin", "import", "设备台账.xlsx", True),
        ("admin", "import", "设备台账.xlsx", False),
        ("admin", "import", "设备台账.xlsx", False),
    ]
    assert imports[1]["detail"]["summary"] == {
        "stored": 4, "rejected": 3, "problems": 3, "warnings": summary["warnings"]
    }  # fmt: skip


async def test_an_engineer_s_upload_rejects_the_rows_of_other_enterprises_only(
    api: ApiClient, api_db_url: str
) -> None:
    data = _xlsx(
        {
            "企业": [
                ["统一社会信用代码", "企业名称", "行政区划代码", "行业代码"],
                [NB1, "宁波甲模具有限公司", "330203", "C35"],
            ],
            "设备台账": [
                ["统一社会信用代码", "设备编号", "设备名称", "设备类型"],
                [NB1, "X01", "新加工中心", "数控机床"],
                [NB2, "X02", "别人的设备", "数控机床"],  # exists, outside the scope
                [STRANGER, "X03", "谁的设备", "数控机床"],  # exists nowhere
                [WZ, "X04", "别人的设备", "数控机床"],
            ],
            "边缘网关": [
                ["网关编号", "统一社会信用代码", "服务设备"],
                ["edge-wz", NB1, "X01"],  # another enterprise's gateway id
                ["edge-nb1-x", NB1, "X01"],
            ],
        }
    )
    report = await _upload(api.as_("eng_nb1"), data)

    rows = [(e["sheet"], e["row"], e["value"]) for e in report["errors"]]
    assert rows == [
        ("企业", 2, NB1),
        ("设备台账", 3, NB2),
        ("设备台账", 4, STRANGER),
        ("设备台账", 5, WZ),
        ("边缘网关", 2, "edge-wz"),
    ]
    reasons = [e["reason"] for e in report["errors"]]
    assert reasons[0].startswith("only an admin imports enterprises")
    # Whether the enterprise exists (NB2, WZ) or not (STRANGER), the same words.
    assert reasons[1] == reasons[2] == reasons[3]
    assert reasons[1].startswith("is not an enterprise this import may change")
    assert reasons[4] == "edge id is registered to another enterprise"
    assert (report["summary"]["stored"], report["summary"]["rejected"]) == (2, 5)
    assert "温州" not in str(report)
    assert "宁波乙" not in str(report)
    assert scalar(api_db_url, "SELECT count(*) FROM device WHERE code LIKE 'X%%'") == 1
    assert (
        scalar(
            api_db_url,
            "SELECT e.credit_code FROM edge_gateway g JOIN enterprise e ON e.id = g.enterprise_id"
            " WHERE g.edge_id = 'edge-wz'",
        )
        == WZ
    )
    x01 = (await api.as_("eng_nb1").get(f"/api/v1/enterprises/{NB1}/devices/X01")).json()
    assert x01["edge_ids"] == ["edge-nb1-x"]


async def test_a_file_that_cannot_be_read_is_a_problem_naming_the_file(api: ApiClient) -> None:
    admin = api.as_("admin")
    for name, data, words in (
        ("台账.xls", b"\xd0\xcf\x11\xe0", "the old .xls format is not supported"),
        ("台账.txt", b"a,b\n", "unknown ledger format"),
        ("台账.xlsx", b"not a zip", "not a readable .xlsx workbook"),
    ):
        answer = await admin.post(
            "/api/v1/ledger/import", files={"file": (name, data, "application/octet-stream")}
        )
        assert answer.status_code == 422, (name, answer.text)
        (problem,) = answer.json()["errors"]
        assert problem["field"] == "body.file"
        assert words in problem["rule"]
    missing = await admin.post("/api/v1/ledger/import", data={"other": "x"})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "body.file"
