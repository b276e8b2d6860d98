"""Every panel's SQL, expanded as Grafana expands it, runs against the world's database
under the role its dashboard logs in as, returns the columns the panel needs, and shows
the figures the KPI functions of zhizao.storage.kpi give for the same scope and period.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from dashboards.build import (
    CLUSTER_UID,
    ENTERPRISE_UID,
    LINE_UID,
    PROVINCE_UID,
    dashboards,
    to_json,
)
from dashboards.grafana_sql import expand
from tests.dashboards.conftest import World
from tests.dashboards.world import DAY, HOME, OTHER, day_range
from zhizao.networking import GroupBy, Method
from zhizao.storage.connection import connect
from zhizao.storage.kpi import (
    Level,
    OeeScope,
    nc_parts,
    networking_evidence,
    networking_parts,
    networking_rates,
    oee_by_shift,
    oee_for_days,
    oee_for_interval,
)

CLUSTER = "NB-AUTO-PARTS"
VARIABLES = {
    "enterprise": HOME,
    "line": "L1",
    "cluster": CLUSTER,
    "region": "330000",
    "scope": "all",
    "target": "0.8",
}
OEE = ["OEE", "A 时间开动率 availability", "P 性能开动率 performance", "Q 合格品率 quality"]
RATES = ["联网率 networking rate", "数控化率 NC rate"]
#: the columns each panel's visualisation and links use, by title
COLUMNS: dict[str, list[str]] = {
    "设备综合效率 OEE (A × P × Q)": OEE,
    "数据覆盖率 Data coverage": ["覆盖率 coverage"],
    "当前离线设备 Devices offline now": ["设备 device", "名称 name", "最后在线 last seen"],
    "设备状态时间线 Device state timeline": ["time", "metric", "状态 state"],
    "每小时产量 Parts per hour": ["time", "合格 good", "不良 reject"],
    "损失帕累托 Top losses (Pareto)": ["损失 loss", "时间 time"],
    "联网率与数控化率 Networking rate and NC rate": RATES,
    "产线 OEE OEE by line": ["line_code", "产线 line", *OEE],
    "班次 OEE OEE by shift": ["班次 shift", *OEE],
    "未联网设备 Devices not networked": [
        "设备 device", "名称 name", "产线 line", "最后在线 last seen"],
    "企业排名 Enterprises ranked by networking rate and OEE": [
        "credit_code", "企业 enterprise", *RATES, "OEE"],
    "趋势 Trend of networking rate and OEE": ["time", "联网率 networking rate", "OEE"],
    "联网率分布 Distribution of networking rates": [
        "联网率区间 networking-rate band", "企业数 enterprises"],
    "趋势与目标 Trend against the target": [
        "time", "联网率 networking rate", "数控化率 NC rate", "目标 target"],
    "按市 By city": ["code", "市 city", *RATES, "企业数 enterprises"],
    "按县(市、区) By county": ["code", "县(市、区) county", *RATES, "企业数 enterprises"],
    "按产业集群 By cluster": ["code", "产业集群 cluster", *RATES, "企业数 enterprises"],
    "按行业 By industry": ["code", "行业 industry", *RATES, "企业数 enterprises"],
    "差距最大的企业 Enterprises furthest behind": [
        "credit_code", "企业 enterprise", "县(市、区) county", *RATES, "差距 gap to target"],
}  # fmt: skip


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (uid, panel) for uid, board in dashboards().items() for panel in to_json(board)["panels"]
    ]


PANELS = _panels()


class Run:
    """Runs a panel's SQL in the world, as the role of its dashboard."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.conns: dict[str, psycopg.Connection[tuple[Any, ...]]] = {}

    def conn(self, uid: str, tenant: str = HOME) -> psycopg.Connection[tuple[Any, ...]]:
        role = self.world.role_of(None if uid in (CLUSTER_UID, PROVINCE_UID) else tenant)
        if role.name not in self.conns:
            self.conns[role.name] = psycopg.connect(
                make_conninfo(self.world.url, user=role.name, password=role.password),
                autocommit=True,
            )
        return self.conns[role.name]

    def __call__(
        self,
        uid: str,
        title: str,
        start: datetime | None = None,
        end: datetime | None = None,
        tenant: str = HOME,
        **variables: str,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        panel = next(p for u, p in PANELS if u == uid and p["title"] == title)
        first, last = day_range()
        text = expand(
            panel["targets"][0]["rawSql"], {**VARIABLES, **variables},
            time_from=start or first, time_to=end or last,
        )  # fmt: skip
        cur = self.conn(uid, tenant).execute(text.encode())
        assert cur.description is not None
        return [c.name for c in cur.description], cur.fetchall()

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


@pytest.fixture(scope="module")
def run(world: World) -> Iterator[Run]:
    runner = Run(world)
    yield runner
    runner.close()


@pytest.mark.parametrize(("uid", "panel"), PANELS, ids=[f"{u}:{p['title']}" for u, p in PANELS])
def test_every_panel_runs_under_its_role_and_returns_its_columns(
    run: Run, uid: str, panel: dict[str, Any]
) -> None:
    columns, rows = run(uid, panel["title"])
    assert columns == COLUMNS[panel["title"]]
    if panel["targets"][0]["format"] == "time_series":
        assert columns[0] == "time"
    # Data links name fields of the result.
    for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
        for field in re.findall(r"__data\.fields\.([A-Za-z_]+)", link["url"]):
            assert field in columns, (link["url"], columns)
    assert rows, "the world has data for every panel"


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _oee_row(row: tuple[Any, ...], report: Any) -> None:
    got = [None if v is None else float(v) for v in row]
    want = [report.oee, report.availability, report.performance, report.quality]
    assert all(_close(g, w) for g, w in zip(got, want, strict=True)), (got, want)


async def test_line_oee_losses_and_counts_equal_the_kpi_functions(world: World, run: Run) -> None:
    first, _ = day_range()
    conn = await connect(world.url)
    async with conn:
        report = await oee_for_interval(
            conn, OeeScope(Level.LINE, "L1", HOME), first, first + timedelta(days=1)
        )
    assert report.source == "rollup_device_hour"
    assert report.result.oee is not None
    assert 0 < report.result.oee < 1
    _, rows = run(LINE_UID, "设备综合效率 OEE (A × P × Q)")
    _oee_row(rows[0], report.result)
    _, rows = run(LINE_UID, "损失帕累托 Top losses (Pareto)")
    losses = report.result.losses
    shown = {name.split(" ", 1)[1]: float(s) for name, s in rows}
    assert _close(shown["breakdowns"], losses.breakdowns_s)
    assert _close(shown["setup"], losses.setup_s)
    assert _close(shown["idle"], losses.idle_s)
    assert _close(shown["micro-stops"], losses.micro_stops_s)
    assert _close(shown["speed loss"], losses.speed_loss_s)
    assert _close(shown["rejects"], losses.rejects_s)
    assert [float(s) for _, s in rows] == sorted((float(s) for _, s in rows), reverse=True)
    _, rows = run(LINE_UID, "每小时产量 Parts per hour")
    assert sum(int(r[1]) for r in rows) == report.result.components.good
    assert sum(int(r[2]) for r in rows) == report.result.components.reject
    assert len(rows) <= 24


async def test_enterprise_figures_equal_the_kpi_functions(world: World, run: Run) -> None:
    first, _ = day_range()
    end = first + timedelta(days=1)
    conn = await connect(world.url)
    async with conn:
        cur = await conn.execute(
            "SELECT l.code FROM line l JOIN enterprise e ON e.id = l.enterprise_id"
            " WHERE e.credit_code = %s AND EXISTS (SELECT 1 FROM device d"
            " WHERE d.line_id = l.id AND d.is_production_equipment)",
            (HOME,),
        )
        lines = [str(r[0]) for r in await cur.fetchall()]
        by_line = {
            code: (
                await oee_for_interval(conn, OeeScope(Level.LINE, code, HOME), first, end)
            ).result
            for code in lines
        }
        shifts = await oee_by_shift(conn, OeeScope(Level.ENTERPRISE, HOME), DAY)
        net = (await networking_parts(conn, DAY, DAY))[HOME]
        nc = (await nc_parts(conn, DAY))[HOME]
        evidence = await networking_evidence(conn, DAY, GroupBy.ENTERPRISE, HOME)
    _, rows = run(ENTERPRISE_UID, "产线 OEE OEE by line")
    shown = {r[0]: r[2:] for r in rows if r[0]}
    assert shown.keys() == by_line.keys() >= {"L1", "L2"}
    for code, result in by_line.items():
        _oee_row(shown[code], result)
    _, rows = run(ENTERPRISE_UID, "班次 OEE OEE by shift")
    assert [r[0] for r in rows] == [name for name, _ in shifts] == ["早班", "中班"]
    for row, (_, report) in zip(rows, shifts, strict=True):
        _oee_row(row[1:], report.result)
    _, rows = run(ENTERPRISE_UID, "联网率与数控化率 Networking rate and NC rate")
    assert _close(rows[0][0], net.rate)
    assert _close(rows[0][1], nc.rate)
    assert net.rate is not None
    assert 0 < net.rate < 1  # some of its devices are silent: the list below is not empty
    _, rows = run(ENTERPRISE_UID, "未联网设备 Devices not networked")
    silent = sorted(e.device for e in evidence if e.reason == "silent")
    assert sorted(r[0] for r in rows) == silent
    assert silent


async def test_cluster_figures_equal_the_kpi_functions(world: World, run: Run) -> None:
    conn = await connect(world.url)
    async with conn:
        parts = await networking_parts(conn, DAY, DAY)
        oee = {
            cc: (await oee_for_days(conn, OeeScope(Level.ENTERPRISE, cc), DAY, DAY)).result.oee
            for cc in (HOME, OTHER)
        }
        figures = await networking_rates(conn, DAY, DAY, GroupBy.CLUSTER)
    _, rows = run(CLUSTER_UID, "企业排名 Enterprises ranked by networking rate and OEE")
    shown = {r[0]: r for r in rows}
    assert {HOME, OTHER} <= shown.keys()
    for cc, row in shown.items():
        assert _close(row[2], parts[cc].rate), cc
    for cc in (HOME, OTHER):
        assert _close(shown[cc][4], oee[cc]), cc
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    _, rows = run(CLUSTER_UID, "趋势 Trend of networking rate and OEE")
    (day_row,) = [r for r in rows if r[0] == datetime(2026, 3, 2, tzinfo=day_range()[0].tzinfo)]
    cluster = next(f for f in figures if f.group == CLUSTER and f.method is Method.RATIO_OF_SUMS)
    assert _close(day_row[1], cluster.rate)
    _, rows = run(CLUSTER_UID, "联网率分布 Distribution of networking rates")
    assert sum(int(r[1]) for r in rows) == len(shown)


async def test_province_figures_equal_the_kpi_functions(world: World, run: Run) -> None:
    conn = await connect(world.url)
    async with conn:
        figures = {
            g: {
                f.group: f
                for f in await networking_rates(conn, DAY, DAY, g)
                if f.method is Method.RATIO_OF_SUMS
            }
            for g in (GroupBy.PROVINCE, GroupBy.CITY, GroupBy.COUNTY, GroupBy.CLUSTER,
                      GroupBy.INDUSTRY)
        }  # fmt: skip
        nc = await nc_parts(conn, DAY)
    _, rows = run(PROVINCE_UID, "联网率与数控化率 Networking rate and NC rate")
    assert _close(rows[0][0], figures[GroupBy.PROVINCE]["330000"].rate)
    total_nc = sum(p.numerator for p in nc.values()) / sum(p.denominator for p in nc.values())
    assert _close(rows[0][1], total_nc)
    for title, group_by in (
        ("按市 By city", GroupBy.CITY), ("按县(市、区) By county", GroupBy.COUNTY),
        ("按产业集群 By cluster", GroupBy.CLUSTER), ("按行业 By industry", GroupBy.INDUSTRY),
    ):  # fmt: skip
        _, rows = run(PROVINCE_UID, title)
        shown = {str(r[0]): r for r in rows}
        assert shown.keys() == figures[group_by].keys(), title
        for code, figure in figures[group_by].items():
            assert _close(shown[code][2], figure.rate), (title, code)
            assert shown[code][4] == figure.enterprises, (title, code)
    _, rows = run(PROVINCE_UID, "差距最大的企业 Enterprises furthest behind")
    rates = [r[3] for r in rows]
    assert rates == sorted(rates)
    assert all(_close(r[5], 0.8 - r[3]) for r in rows)
    # A city narrows every figure to its enterprises.
    _, rows = run(PROVINCE_UID, "差距最大的企业 Enterprises furthest behind", region="330200")
    assert {r[0] for r in rows} == {HOME, OTHER, "91330226MA2AH9D426"}
    _, rows = run(PROVINCE_UID, "趋势与目标 Trend against the target", target="0.9")
    assert {float(r[3]) for r in rows} == {0.9}


def _query_variables() -> list[tuple[str, dict[str, Any]]]:
    return [
        (uid, variable)
        for uid, board in dashboards().items()
        for variable in to_json(board)["templating"]["list"]
        if variable["type"] == "query"
    ]


@pytest.mark.parametrize(
    ("uid", "variable"), _query_variables(), ids=[f"{u}:{v['name']}" for u, v in _query_variables()]
)
def test_every_variable_query_runs_under_its_role(
    run: Run, uid: str, variable: dict[str, Any]
) -> None:
    first, last = day_range()
    text = expand(variable["query"], VARIABLES, time_from=first, time_to=last)
    cur = run.conn(uid).execute(text.encode())
    assert cur.description is not None
    assert [c.name for c in cur.description] == ["__value", "__text"]
    values = {str(r[0]).strip() for r in cur.fetchall()}
    expected = {
        "enterprise": {HOME},  # its own enterprise only, whatever the registry holds
        "line": {"L1", "L2"},
        "cluster": {CLUSTER},
        "region": {"330000", "330200"},
    }[variable["name"]]
    assert values >= expected
    if variable["name"] == "enterprise":
        assert values == {HOME}


ENTERPRISE_PANELS = [(u, p) for u, p in PANELS if u in (LINE_UID, ENTERPRISE_UID)]


@pytest.mark.parametrize(
    ("uid", "panel"), ENTERPRISE_PANELS, ids=[f"{u}:{p['title']}" for u, p in ENTERPRISE_PANELS]
)
def test_another_enterprise_choosing_this_one_in_the_variables_gets_nothing(
    run: Run, uid: str, panel: dict[str, Any]
) -> None:
    """OTHER's datasource with ``enterprise`` set to HOME (a URL anyone can edit): every
    panel comes back empty or without a figure."""
    _, rows = run(uid, panel["title"], tenant=OTHER)
    assert all(value is None for row in rows for value in row), rows
