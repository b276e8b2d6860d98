"""The four dashboards, built with the Grafana foundation SDK (pinned build for Grafana
11.6: docs/dashboards.md).

产线 Line → 企业 Enterprise → 产业集群 Cluster → 全省 Province, each with a fixed UID, Chinese
and English titles, a unit and a datasource on every panel, and links that drill down
(province → cluster → enterprise → line). The SQL is in :mod:`dashboards.panels_sql`.

Line and enterprise dashboards choose their datasource with the variable ``ds``: one
datasource per enterprise, logging in as that enterprise's role (:mod:`dashboards.roles`),
so what a viewer can query is decided by PostgreSQL. Cluster and province dashboards use
the aggregate datasource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import (
    barchart,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import BigValueGraphMode, GraphDrawStyle, VisibilityMode

from dashboards import panels_sql as q
from dashboards.query import POSTGRES_TYPE, Format, PostgresQueryBuilder, register

GRAFANA_VERSION = "11.6"
ZONE = "Asia/Shanghai"
TAG = "zhizao"

#: UIDs: fixed, so links, provisioning and the golden files never move.
LINE_UID = "zhizao-line"
ENTERPRISE_UID = "zhizao-enterprise"
CLUSTER_UID = "zhizao-cluster"
PROVINCE_UID = "zhizao-province"

AGGREGATE_DS_UID = "zhizao-agg"
ENTERPRISE_DS_PREFIX = "zhizao-e-"  # + credit code
#: datasource names of the enterprises start so; the ``ds`` variable lists only them
ENTERPRISE_DS_NAME = "zhizao 企业 "

ENTERPRISE_DS = model.DataSourceRef(type_val=POSTGRES_TYPE, uid="${ds}")
AGGREGATE_DS = model.DataSourceRef(type_val=POSTGRES_TYPE, uid=AGGREGATE_DS_UID)

GREEN, YELLOW, RED, BLUE, GREY = "green", "#EAB839", "red", "blue", "#8e8e8e"


def enterprise_ds_uid(credit_code: str) -> str:
    return ENTERPRISE_DS_PREFIX + credit_code


class _Panel(Protocol):
    def title(self, title: str) -> Self: ...
    def with_target(self, target: cogbuilder.Builder[Any]) -> Self: ...
    def datasource(self, datasource: model.DataSourceRef) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def span(self, w: int) -> Self: ...
    def height(self, h: int) -> Self: ...
    def description(self, description: str) -> Self: ...


@dataclass(frozen=True)
class Level:
    """One dashboard as provisioned: where it goes and what it logs in as."""

    uid: str
    folder_uid: str
    folder_title: str
    aggregate: bool  # logs in as the aggregate role (else an enterprise's)


LEVELS = (
    Level(LINE_UID, "zhizao-line", "智造 产线 Line", aggregate=False),
    Level(ENTERPRISE_UID, "zhizao-enterprise", "智造 企业 Enterprise", aggregate=False),
    Level(CLUSTER_UID, "zhizao-cluster", "智造 产业集群 Cluster", aggregate=True),
    Level(PROVINCE_UID, "zhizao-province", "智造 全省 Province", aggregate=True),
)


def _sql(ref: str, text: str, ds: model.DataSourceRef, fmt: Format) -> PostgresQueryBuilder:
    return PostgresQueryBuilder().ref_id(ref).raw_sql(text).format(fmt).datasource(ds)


P = TypeVar("P", bound=_Panel)


def _panel(
    builder: P,
    title: str,
    sql: str,
    *,
    ds: model.DataSourceRef,
    unit: str,
    w: int,
    h: int = 8,
    fmt: Format = Format.TABLE,
    description: str | None = None,
) -> P:
    out = (
        builder.title(title)
        .datasource(ds)
        .with_target(_sql("A", sql, ds, fmt))
        .unit(unit)
        .span(w)
        .height(h)
    )
    return out if description is None else out.description(description)


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=v, color=c) for v, c in steps])
    )


#: OEE: below 60 % red, to 85 % (world class) yellow, then green
OEE_THRESHOLDS = ((None, RED), (0.6, YELLOW), (0.85, GREEN))
#: networking rate: Zhejiang's pilots aim at 80 % and more
RATE_THRESHOLDS = ((None, RED), (0.5, YELLOW), (0.8, GREEN))


def _last_value() -> common_builders.ReduceDataOptions:
    """Stat panels show the one row of their query (Grafana's default when unset)."""
    return common_builders.ReduceDataOptions().values(False).calcs(["lastNotNull"])


def _link(title: str, url: str) -> dash.DashboardLink:
    return dash.DashboardLink(title).type(model.DashboardLinkType.LINK).url(url)


def _drill(uid: str, query: str) -> str:
    return f"/d/{uid}/?{query}&${{__url_time_range}}"


def _dashboard_links() -> list[cogbuilder.Builder[model.DashboardLink]]:
    return [
        dash.DashboardLink("智造看板 zhizao dashboards")
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(True)
        .include_vars(False)
        .keep_time(True)
    ]


def _base(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .timezone(ZONE)
        .week_start("monday")
        .time("now/d", "now/d")
        .refresh("1m")
        .readonly()
        .links(_dashboard_links())
    )


def _ds_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("ds")
        .label("数据源 datasource")
        .type(POSTGRES_TYPE)
        .regex(f"/^{ENTERPRISE_DS_NAME}/")
    )


def _enterprise_variable() -> dash.QueryVariable:
    return (
        dash.QueryVariable("enterprise")
        .label("企业 enterprise")
        .datasource(ENTERPRISE_DS)
        .query("SELECT credit_code AS __value, name AS __text FROM enterprise ORDER BY name")
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
    )


def _state_mappings() -> list[model.ValueMapping]:
    labels = {
        "RUNNING": ("运行 running", GREEN),
        "IDLE": ("待机 idle", YELLOW),
        "SETUP": ("换型调整 setup", BLUE),
        "UNPLANNED_STOP": ("故障停机 unplanned stop", RED),
        "PLANNED_STOP": ("计划停机 planned stop", GREY),
        "OFFLINE": ("离线 offline", "#4a4a4a"),
    }
    return [
        model.ValueMap(
            options={
                str(i): model.ValueMappingResult(text=labels[s][0], color=labels[s][1], index=i)
                for i, s in enumerate(q.STATES)
            }
        )
    ]


def line_dashboard() -> dash.Dashboard:
    ds = ENTERPRISE_DS
    return (
        _base(
            LINE_UID,
            "产线 Line — 智造 zhizao",
            "设备状态、OEE 与损失 / device states, OEE and losses of one line",
        )
        .with_variable(_ds_variable())
        .with_variable(_enterprise_variable())
        .with_variable(
            dash.QueryVariable("line")
            .label("产线 line")
            .datasource(ds)
            .query(
                "SELECT l.code AS __value, l.name AS __text FROM line l"
                " JOIN enterprise e ON e.id = l.enterprise_id"
                " WHERE e.credit_code = ${enterprise:sqlstring} ORDER BY l.code"
            )
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        )
        .link(
            _link(
                "企业 Enterprise",
                _drill(ENTERPRISE_UID, "var-ds=${ds}&var-enterprise=${enterprise}"),
            )
        )
        .with_panel(
            _panel(
                stat.Panel(),
                "设备综合效率 OEE (A × P × Q)",
                q.LINE_OEE,
                ds=ds,
                unit="percentunit",
                w=12,
                h=6,
            )
            .reduce_options(_last_value())
            .thresholds(_thresholds(*OEE_THRESHOLDS))
            .graph_mode(BigValueGraphMode.NONE)
            .min(0)
            .max(1)
        )
        .with_panel(
            _panel(
                stat.Panel(),
                "数据覆盖率 Data coverage",
                q.LINE_COVERAGE,
                ds=ds,
                unit="percentunit",
                w=4,
                h=6,
                description="1 − 计划时间内离线 / 计划开动时间 (1 − offline / planned busy time)",
            )
            .reduce_options(_last_value())
            .thresholds(_thresholds((None, RED), (0.9, YELLOW), (0.98, GREEN)))
            .min(0)
            .max(1)
        )
        .with_panel(
            _panel(
                table.Panel(),
                "当前离线设备 Devices offline now",
                q.LINE_OFFLINE_NOW,
                ds=ds,
                unit="dateTimeAsIso",
                w=8,
                h=6,
            )
        )
        .with_panel(
            _panel(
                statetimeline.Panel(),
                "设备状态时间线 Device state timeline",
                q.LINE_STATE_TIMELINE,
                ds=ds,
                unit="none",
                w=24,
                h=9,
                fmt=Format.TIME_SERIES,
            )
            .mappings(_state_mappings())
            .show_value(VisibilityMode.NEVER)
        )
        .with_panel(
            _panel(
                timeseries.Panel(),
                "每小时产量 Parts per hour",
                q.LINE_COUNTS_PER_HOUR,
                ds=ds,
                unit="short",
                w=12,
                h=8,
                fmt=Format.TIME_SERIES,
            ).draw_style(GraphDrawStyle.BARS)
        )
        .with_panel(
            _panel(
                barchart.Panel(),
                "损失帕累托 Top losses (Pareto)",
                q.LINE_LOSSES,
                ds=ds,
                unit="s",
                w=12,
                h=8,
            ).x_field("损失 loss")
        )
    )


def enterprise_dashboard() -> dash.Dashboard:
    ds = ENTERPRISE_DS
    to_line = _drill(
        LINE_UID, "var-ds=${ds}&var-enterprise=${enterprise}&var-line=${__data.fields.line_code}"
    )
    return (
        _base(
            ENTERPRISE_UID,
            "企业 Enterprise — 智造 zhizao",
            "产线与班次 OEE、联网率与数控化率 / OEE by line and shift, networking and NC rates",
        )
        .with_variable(_ds_variable())
        .with_variable(_enterprise_variable())
        .with_panel(
            _panel(
                stat.Panel(),
                "联网率与数控化率 Networking rate and NC rate",
                q.ENTERPRISE_RATES,
                ds=ds,
                unit="percentunit",
                w=12,
                h=6,
                description="联网率:期间联网设备·天 / 在役生产设备·天;数控化率:期末在役设备"
                " / networking: networked device-days / in-service device-days;"
                " NC: on the period's last day",
            )
            .reduce_options(_last_value())
            .thresholds(_thresholds(*RATE_THRESHOLDS))
            .min(0)
            .max(1)
        )
        .with_panel(
            _panel(
                stat.Panel(),
                "数据覆盖率 Data coverage",
                q.ENTERPRISE_COVERAGE,
                ds=ds,
                unit="percentunit",
                w=12,
                h=6,
            )
            .reduce_options(_last_value())
            .thresholds(_thresholds((None, RED), (0.9, YELLOW), (0.98, GREEN)))
            .min(0)
            .max(1)
        )
        .with_panel(
            _panel(
                table.Panel(),
                "产线 OEE OEE by line",
                q.ENTERPRISE_OEE_BY_LINE,
                ds=ds,
                unit="percentunit",
                w=12,
                h=8,
            )
            .data_links([_link("产线 Line ${__data.fields.line_code}", to_line)])
            .thresholds(_thresholds(*OEE_THRESHOLDS))
        )
        .with_panel(
            _panel(
                table.Panel(),
                "班次 OEE OEE by shift",
                q.ENTERPRISE_OEE_BY_SHIFT,
                ds=ds,
                unit="percentunit",
                w=12,
                h=8,
                description="按企业班次日历,每小时计入其开始时所在的班次"
                " / hours go to the enterprise calendar's shift they start in",
            ).thresholds(_thresholds(*OEE_THRESHOLDS))
        )
        .with_panel(
            _panel(
                table.Panel(),
                "未联网设备 Devices not networked",
                q.ENTERPRISE_NOT_NETWORKED,
                ds=ds,
                unit="dateTimeAsIso",
                w=24,
                h=8,
                description="期末一天未联网的在役生产设备及最后在线时间"
                " / in-service production devices not networked on the period's last day",
            )
        )
    )


def _cluster_variable() -> dash.QueryVariable:
    return (
        dash.QueryVariable("cluster")
        .label("产业集群 cluster")
        .datasource(AGGREGATE_DS)
        .query("SELECT code AS __value, name AS __text FROM dash_cluster ORDER BY code")
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
    )


def cluster_dashboard() -> dash.Dashboard:
    ds = AGGREGATE_DS
    to_enterprise = _drill(
        ENTERPRISE_UID,
        f"var-ds={ENTERPRISE_DS_PREFIX}${{__data.fields.credit_code}}"
        "&var-enterprise=${__data.fields.credit_code}",
    )
    return (
        _base(
            CLUSTER_UID,
            "产业集群 Cluster — 智造 zhizao",
            "集群内企业的联网率、OEE 排名与分布"
            " / enterprises of a cluster ranked, trends, distribution",
        )
        .with_variable(_cluster_variable())
        .link(_link("全省 Province", _drill(PROVINCE_UID, "var-region=330000")))
        .with_panel(
            _panel(
                table.Panel(),
                "企业排名 Enterprises ranked by networking rate and OEE",
                q.CLUSTER_RANKING,
                ds=ds,
                unit="percentunit",
                w=24,
                h=10,
            )
            .data_links([_link("企业 Enterprise ${__data.fields.credit_code}", to_enterprise)])
            .thresholds(_thresholds(*RATE_THRESHOLDS))
        )
        .with_panel(
            _panel(
                timeseries.Panel(),
                "趋势 Trend of networking rate and OEE",
                q.CLUSTER_TREND,
                ds=ds,
                unit="percentunit",
                w=14,
                h=8,
                fmt=Format.TIME_SERIES,
            )
            .min(0)
            .max(1)
        )
        .with_panel(
            _panel(
                barchart.Panel(),
                "联网率分布 Distribution of networking rates",
                q.CLUSTER_DISTRIBUTION,
                ds=ds,
                unit="short",
                w=10,
                h=8,
            ).x_field("联网率区间 networking-rate band")
        )
    )


def province_dashboard() -> dash.Dashboard:
    ds = AGGREGATE_DS
    to_cluster = _drill(CLUSTER_UID, "var-cluster=${__data.fields.code}")
    to_enterprise = _drill(
        ENTERPRISE_UID,
        f"var-ds={ENTERPRISE_DS_PREFIX}${{__data.fields.credit_code}}"
        "&var-enterprise=${__data.fields.credit_code}",
    )
    by = [
        ("按市 By city", q.PROVINCE_BY_CITY, None),
        ("按县(市、区) By county", q.PROVINCE_BY_COUNTY, None),
        ("按产业集群 By cluster", q.PROVINCE_BY_CLUSTER, to_cluster),
        ("按行业 By industry", q.PROVINCE_BY_INDUSTRY, None),
    ]
    board = (
        _base(
            PROVINCE_UID,
            "全省 Province — 智造 zhizao",
            "设备联网率与数控化率:按地区、集群、行业,对照目标 / networking and NC rates by"
            " region, cluster and industry against the target",
        )
        .with_variable(
            dash.QueryVariable("region")
            .label("地区 region")
            .datasource(ds)
            .query("SELECT code AS __value, name AS __text FROM dash_region ORDER BY code")
            .current(model.VariableOption(text="浙江省", value="330000", selected=True))
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        )
        .with_variable(
            dash.CustomVariable("scope")
            .label("企业范围 enterprise scope")
            .values("全部 all : all, 规上 above designated size : above, 重点 key : key")
            .current(model.VariableOption(text="全部 all", value="all", selected=True))
        )
        .with_variable(
            dash.TextBoxVariable("target")
            .label("目标联网率 target networking rate")
            .default_value("0.8")
        )
        .with_panel(
            _panel(
                stat.Panel(),
                "联网率与数控化率 Networking rate and NC rate",
                q.PROVINCE_RATES,
                ds=ds,
                unit="percentunit",
                w=8,
                h=8,
            )
            .reduce_options(_last_value())
            .thresholds(_thresholds(*RATE_THRESHOLDS))
            .min(0)
            .max(1)
        )
        .with_panel(
            _panel(
                timeseries.Panel(),
                "趋势与目标 Trend against the target",
                q.PROVINCE_TREND,
                ds=ds,
                unit="percentunit",
                w=16,
                h=8,
                fmt=Format.TIME_SERIES,
            )
            .min(0)
            .max(1)
        )
    )
    for title, sql, link in by:
        panel = _panel(table.Panel(), title, sql, ds=ds, unit="percentunit", w=12, h=8)
        panel = panel.thresholds(_thresholds(*RATE_THRESHOLDS))
        if link is not None:
            panel = panel.data_links([_link("产业集群 Cluster ${__data.fields.code}", link)])
        board = board.with_panel(panel)
    return board.with_panel(
        _panel(
            table.Panel(),
            "差距最大的企业 Enterprises furthest behind",
            q.PROVINCE_BEHIND,
            ds=ds,
            unit="percentunit",
            w=24,
            h=10,
        )
        .data_links([_link("企业 Enterprise ${__data.fields.credit_code}", to_enterprise)])
        .thresholds(_thresholds(*RATE_THRESHOLDS))
    )


BUILDERS = {
    LINE_UID: line_dashboard,
    ENTERPRISE_UID: enterprise_dashboard,
    CLUSTER_UID: cluster_dashboard,
    PROVINCE_UID: province_dashboard,
}


def dashboards() -> dict[str, model.Dashboard]:
    """Every dashboard, by UID, as the SDK's model."""
    register()
    return {uid: make().build() for uid, make in BUILDERS.items()}


def to_json(board: model.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON (plain dicts and lists, ready for json.dumps)."""
    import json

    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    data: dict[str, Any] = json.loads(json.dumps(board, cls=JSONEncoder))
    return data
