"""The networking-rate report (设备联网率统计报表) through the API and the CLI: every figure
in the XLSX, read back with openpyxl, equals the KPI endpoint's for the same scope and
period; nothing of an enterprise outside the caller's scope appears in any format.

The world's day of facts (tests/api/test_kpi.py) is Monday 2026-03-02.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from tests.api.conftest import ApiClient
from tests.api.matrix import Case
from tests.api.test_kpi import day_conn
from tests.api.world import NB1, NB2, NB_MOLD, WZ, WZ_SHOE
from zhizao.errors import InvalidValue
from zhizao.report import _ranks, parse_period
from zhizao.storage.connection import Conn

_R = "/api/v1/reports/networking"
_K = "/api/v1/kpi"
_COUNTY = {NB1: "330203", WZ: "330302"}
MONTH = "2026-03"
SCOPES = ("all", "above_designated_size", "key_enterprise")
_SCOPE_ZH = {"all": "全部企业", "above_designated_size": "规上企业", "key_enterprise": "重点企业"}

__all__ = ["day_conn"]

_C = "/api/v1/reports/cluster"
_CLUSTER = {NB1: NB_MOLD, WZ: WZ_SHOE}

CASES = [
    Case("GET", _R, "summary", url=lambda e: f"{_R}?period={MONTH}&region={_COUNTY[e]}"),
    Case("GET", f"{_C}/{{code}}", "summary", url=lambda e: f"{_C}/{_CLUSTER[e]}?period={MONTH}"),
]


def _stored(value: float | None) -> float | None:
    """A figure as an XLSX cell holds it: openpyxl writes 16 significant digits (Excel
    itself keeps 15), so the 17th digit of a double does not survive the file."""
    return None if value is None else float(f"{value:.16g}")


def _sheet(book: Any, title: str) -> list[dict[str, Any]]:
    rows = list(book[title].iter_rows(values_only=True))
    header = rows[0]
    return [dict(zip(header, row, strict=True)) for row in rows[2:]]


async def _xlsx(api: ApiClient, persona: str, query: str) -> Any:
    answer = await api.as_(persona).get(f"{_R}?{query}&format=xlsx")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert "filename*=UTF-8''" in answer.headers["content-disposition"]
    return openpyxl.load_workbook(io.BytesIO(answer.content))


async def _api(api: ApiClient, persona: str, url: str) -> Any:
    answer = await api.as_(persona).get(url)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ratio(items: list[dict[str, Any]], group: str, method: str = "ratio_of_sums") -> Any:
    [item] = [i for i in items if i["group"] == group and i["method"] == method]
    return item


@pytest.mark.parametrize("persona", ["admin", "analyst_ningbo"])
async def test_every_figure_in_the_workbook_equals_the_kpi_endpoint_s(
    api: ApiClient, day_conn: Conn, persona: str
) -> None:
    book = await _xlsx(api, persona, f"period={MONTH}")
    assert book.sheetnames[0] == "封面 Cover"
    sheets = {"按地市": "city", "按区县": "county", "按产业集群": "cluster",
              "按行业大类": "industry"}  # fmt: skip
    compared = 0
    for title, group_by in sheets.items():
        assert book[title].freeze_panes == "A3"
        rows = _sheet(book, title)
        for scope in SCOPES:
            kpi = await _api(api, persona, f"{_K}/networking?period=month&date=2026-03-01"
                                           f"&group_by={group_by}&scope={scope}")  # fmt: skip
            before = await _api(api, persona, f"{_K}/networking?period=month&date=2026-02-01"
                                              f"&group_by={group_by}&scope={scope}")  # fmt: skip
            mine = [r for r in rows if r["企业范围"] == _SCOPE_ZH[scope]]
            assert {r["分组代码"] for r in mine} == {i["group"] for i in kpi["items"]}
            for row in mine:
                ratio = _ratio(kpi["items"], row["分组代码"])
                mean = _ratio(kpi["items"], row["分组代码"], "mean_of_enterprise_rates")
                was = _ratio(before["items"], row["分组代码"])
                assert row["联网设备·日"] == ratio["numerator"]
                assert row["在役生产设备·日"] == ratio["denominator"]
                assert row["企业数"] == ratio["enterprises"]
                assert row["联网率(合计口径)"] == _stored(ratio["rate"])
                assert row["联网率(企业平均口径)"] == _stored(mean["rate"])
                assert row["上期联网率"] == _stored(was["rate"])
                if ratio["rate"] is not None and was["rate"] is not None:
                    assert row["变化(百分点)"] == pytest.approx((ratio["rate"] - was["rate"]) * 100)
                compared += 1
    assert compared >= 8
    # The enterprises' sheet: the endpoint grouped by enterprise.
    by_enterprise = await _api(api, persona, f"{_K}/networking?period=month&date=2026-03-01"
                                             "&group_by=enterprise")  # fmt: skip
    for row in _sheet(book, "企业"):
        item = _ratio(by_enterprise["items"], row["统一社会信用代码"])
        assert (row["联网设备·日"], row["在役生产设备·日"]) == (item["numerator"],
                                                                 item["denominator"])  # fmt: skip
        assert row["联网率"] == _stored(item["rate"])
    # The NC rate on the period's last day, both variants.
    nc_rows = _sheet(book, "数控化率")
    for kind, key_process in (("数控化率", "false"), ("关键工序数控化率", "true")):
        nc = await _api(api, persona, f"{_K}/nc?date=2026-03-31&group_by=city"
                                      f"&key_process={key_process}")  # fmt: skip
        mine = [r for r in nc_rows if r["指标"] == kind and r["分组维度"] == "按地市"
                and r["企业范围"] == "全部企业"]  # fmt: skip
        assert {r["分组代码"] for r in mine} == {i["group"] for i in nc["items"]}
        for row in mine:
            item = _ratio(nc["items"], row["分组代码"])
            assert (row["数控设备"], row["在役生产设备"], row["数控化率(合计口径)"]) == (
                item["numerator"], item["denominator"], _stored(item["rate"]))  # fmt: skip


async def test_a_regional_analyst_s_report_holds_nothing_of_another_region(
    api: ApiClient, day_conn: Conn
) -> None:
    book = await _xlsx(api, "analyst_ningbo", f"period={MONTH}")
    cells = [str(v) for ws in book.worksheets for row in ws.iter_rows(values_only=True)
             for v in row if v is not None]  # fmt: skip
    assert not [c for c in cells if WZ in c or "330300" in c or "温州" in c]
    assert {r["统一社会信用代码"] for r in _sheet(book, "企业")} == {NB1, NB2}
    cover = {row[0]: row[2] for row in book["封面 Cover"].iter_rows(values_only=True)}
    assert cover["权限范围"].startswith("仅含调用者权限范围内的企业")
    as_json = (await api.as_("analyst_ningbo").get(f"{_R}?period={MONTH}")).text
    as_csv = (await api.as_("analyst_ningbo").get(f"{_R}?period={MONTH}&format=csv"
                                                  "&table=devices")).text  # fmt: skip
    for text in (as_json, as_csv):
        assert WZ not in text
        assert "温州" not in text
    # NB2's P02 is silent all month: listed, never seen.
    devices = list(csv.reader(io.StringIO(as_csv.lstrip("\ufeff"))))
    assert [NB2, "P02"] in [row[:2] for row in devices[1:]]
    # WZ's county is out of reach: the same 404 as a missing one.
    refused = await api.as_("analyst_ningbo").get(f"{_R}?period={MONTH}&region=330302")
    assert refused.status_code == 404


async def test_csv_opens_in_excel_and_every_download_is_audited(
    api: ApiClient, day_conn: Conn
) -> None:
    answer = await api.as_("analyst_zj").get(f"{_R}?period=2026-Q1&format=csv&table=county")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.content.startswith(b"\xef\xbb\xbf")  # the BOM
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert rows[0][0] == "分组代码 group code"
    quarter = await _api(api, "analyst_zj", f"{_K}/networking?period=custom&start=2026-01-01"
                                            "&end=2026-03-31&group_by=county")  # fmt: skip
    lucheng = [r for r in rows[1:] if r[0] == "330302" and r[2] == "全部企业"]
    assert [float(lucheng[0][6])] == [_ratio(quarter["items"], "330302")["rate"]]
    log = await _api(api, "admin", "/api/v1/audit?action=export")
    [entry] = [e for e in log["items"] if e["actor"] == "analyst_zj"]
    assert entry["object_key"] == "networking 2026-Q1"
    assert entry["detail"]["format"] == "csv"


async def test_periods_are_read_as_people_write_them(api: ApiClient) -> None:
    assert parse_period("2026-10").label == "2026-10"
    q4 = parse_period("2026-Q4")
    assert (q4.first.isoformat(), q4.last.isoformat(), q4.previous().label) == (
        "2026-10-01",
        "2026-12-31",
        "2026-Q3",
    )
    assert parse_period("2026q1").previous().label == "2025-Q4"
    assert parse_period("2026").previous().label == "2025"
    days = parse_period("2026-10-01..2026-10-15")
    assert (days.days, days.previous().label) == (15, "2026-09-16..2026-09-30")
    assert parse_period("2026-03").previous().last.isoformat() == "2026-02-28"
    for bad in ("2026-13", "2026-10-15..2026-10-01", "last month", "2026-02-30..2026-03-01"):
        with pytest.raises(InvalidValue):
            parse_period(bad)
    answer = await api.as_("admin").get(f"{_R}?period=2026-13")
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert (error["field"], error["value"]) == ("query.period", "2026-13")


def test_the_cli_writes_the_same_workbook(api_db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "联网率.xlsx"
    done = subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "report", "networking", "--period", MONTH,
         "--region", "330200", "--format", "xlsx", "--out", str(out), "--db-url", api_db_url],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "写入 wrote" in done.stderr
    book = openpyxl.load_workbook(out)
    assert {r["统一社会信用代码"] for r in _sheet(book, "企业")} == {NB1, NB2}
    cover = {row[0]: row[2] for row in book["封面 Cover"].iter_rows(values_only=True)}
    assert cover["地区"] == "330200 宁波市"
    assert cover["统计期间"] == "2026年3月 (2026-03-01 – 2026-03-31)"
    bad = subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "report", "networking", "--period", "2026-3-40",
         "--format", "json", "--db-url", api_db_url],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--period" in bad.stderr


@pytest.mark.parametrize("persona", ["admin", "op_nb_mold"])
async def test_the_cluster_report_equals_the_kpi_endpoints(
    api: ApiClient, day_conn: Conn, persona: str
) -> None:
    answer = await api.as_(persona).get(f"{_C}/{NB_MOLD}?period={MONTH}&format=xlsx")
    assert answer.status_code == 200, answer.text
    book = openpyxl.load_workbook(io.BytesIO(answer.content))
    assert book.sheetnames == ["封面 Cover", "企业排名", "月度趋势"]
    ranked = _sheet(book, "企业排名")
    rates = await _api(api, persona, f"{_K}/networking?period=month&date=2026-03-01"
                                     f"&group_by=enterprise&cluster={NB_MOLD}")  # fmt: skip
    assert {r["统一社会信用代码"] for r in ranked} == {i["group"] for i in rates["items"]}
    for row in ranked:
        cc = row["统一社会信用代码"]
        item = _ratio(rates["items"], cc)
        oee = (await _api(api, persona, f"{_K}/oee?level=enterprise&code={cc}&period=month"
                                        "&date=2026-03-01"))["result"]  # fmt: skip
        assert (row["联网设备·日"], row["在役生产设备·日"], row["设备联网率"]) == (
            item["numerator"], item["denominator"], _stored(item["rate"]))  # fmt: skip
        assert (row["OEE"], row["时间开动率 A"], row["性能开动率 P"], row["合格品率 Q"]) == (
            _stored(oee["oee"]), _stored(oee["availability"]), _stored(oee["performance"]),
            _stored(oee["quality"]))  # fmt: skip
        assert row["数据覆盖率"] == _stored(1 - oee["offline_s"] / oee["planned_busy_s"])
        assert row["有数据天数"] == 1  # the world's one day of facts
        assert (row["联网率排名"], row["OEE排名"]) == (1, 1)
    # The trend: twelve months up to the period's, each the series endpoints' point.
    trend = _sheet(book, "月度趋势")
    assert [r["月份"] for r in trend][:2] == ["2025-04", "2025-05"]
    assert [r["月份"] for r in trend][-1] == "2026-03"
    span = "period=custom&start=2025-04-01&end=2026-03-31&every=month"
    net = await _api(api, persona, f"{_K}/networking/series?{span}&cluster={NB_MOLD}"
                                   "&group_by=cluster")  # fmt: skip
    oee_series = await _api(api, persona, f"{_K}/oee/series?level=cluster&code={NB_MOLD}&{span}")
    assert len(trend) == len(net["points"]) == len(oee_series["points"]) == 12
    for row, point, oee_point in zip(trend, net["points"], oee_series["points"], strict=True):
        item = _ratio(point["items"], NB_MOLD)
        assert (row["联网设备·日"], row["在役生产设备·日"], row["设备联网率"]) == (
            item["numerator"], item["denominator"], _stored(item["rate"]))  # fmt: skip
        assert row["OEE"] == _stored(oee_point["result"]["oee"])
    # JSON and CSV carry the same; another cluster of the operator's is out of reach.
    data = await _api(api, persona, f"{_C}/{NB_MOLD}?period={MONTH}")
    assert _stored(data["enterprises"][0]["networking_rate"]) == ranked[0]["设备联网率"]
    if persona == "op_nb_mold":
        assert (await api.as_(persona).get(f"{_C}/{WZ_SHOE}?period={MONTH}")).status_code == 404
    bad = await api.as_(persona).get(f"{_C}/{NB_MOLD}?period=March")
    assert bad.status_code == 422


def test_ties_share_a_rank_and_enterprises_without_a_figure_have_none() -> None:
    assert _ranks({"a": 0.5, "b": 0.9, "c": 0.5, "d": None, "e": 0.1}) == {
        "b": 1, "a": 2, "c": 2, "e": 4}  # fmt: skip


def test_the_cli_writes_the_cluster_report(api_db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "集群.xlsx"
    done = subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "report", "cluster", NB_MOLD, "--period", MONTH,
         "--format", "xlsx", "--out", str(out), "--db-url", api_db_url],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cover = {row[0]: row[2] for row in openpyxl.load_workbook(out)["封面 Cover"].iter_rows(
        values_only=True)}  # fmt: skip
    assert cover["产业集群"].startswith(NB_MOLD)
    missing = subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "report", "cluster", "NO-SUCH", "--period", MONTH,
         "--format", "json", "--db-url", api_db_url],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "NO-SUCH" in missing.stderr


async def test_names_that_look_like_formulas_stay_text(api: ApiClient, day_conn: Conn) -> None:
    """A hostile ledger name never becomes a formula in the workbook or in Excel's
    reading of the CSV (OWASP: CSV injection)."""
    await day_conn.execute("UPDATE enterprise SET name = '=HYPERLINK(\"http://x\",\"点击\")'"
                           " WHERE credit_code = %s", (NB2,))  # fmt: skip
    await day_conn.execute("UPDATE device SET name = '@SUM(1+1)' WHERE code = 'P02'")
    await day_conn.commit()
    book = await _xlsx(api, "admin", f"period={MONTH}")
    [row] = [r for r in book["企业"].iter_rows(min_row=3) if r[0].value == NB2]
    assert row[1].value == '=HYPERLINK("http://x","点击")'
    assert row[1].data_type == "s"  # text, not a formula
    devices = (await api.as_("admin").get(f"{_R}?period={MONTH}&format=csv&table=devices")).text
    rows = list(csv.reader(io.StringIO(devices.lstrip("\ufeff"))))
    assert [NB2, "P02", "'@SUM(1+1)"] in [r[:3] for r in rows]
    enterprises = (await api.as_("admin").get(f"{_R}?period={MONTH}&format=csv"
                                              "&table=enterprises")).text  # fmt: skip
    assert "'=HYPERLINK" in enterprises
