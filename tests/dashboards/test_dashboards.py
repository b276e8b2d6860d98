"""The dashboards as code: golden JSON, stable UIDs, the SDK reads them back, and every
panel has a Chinese and English title, a unit and a datasource; links drill down.

A change of a dashboard changes its golden file, reviewed in the diff. To regenerate:
``ZHIZAO_UPDATE_GOLDEN=1 .venv/bin/pytest tests/dashboards/test_dashboards.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

from dashboards.build import (
    CLUSTER_UID,
    ENTERPRISE_UID,
    LINE_UID,
    PROVINCE_UID,
    dashboards,
    to_json,
)
from dashboards.query import POSTGRES_TYPE, PostgresQuery, register

GOLDEN = Path(__file__).parent / "golden"
UIDS = [LINE_UID, ENTERPRISE_UID, CLUSTER_UID, PROVINCE_UID]
CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]{2,}")
#: what cluster and province panels may read ("p": a CTE of their own)
AGGREGATES = {"dash_enterprise", "dash_enterprise_day", "dash_enterprise_cluster", "dash_region",
              "dash_cluster", "p"}  # fmt: skip


def _json(uid: str) -> dict[str, Any]:
    return to_json(dashboards()[uid])


def _text(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("uid", UIDS)
def test_each_dashboard_matches_its_golden_file(uid: str) -> None:
    path = GOLDEN / f"{uid}.json"
    text = _text(_json(uid))
    if os.environ.get("ZHIZAO_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"regenerate {path} and review the diff"


def test_uids_are_fixed_and_builds_repeat_exactly() -> None:
    first, second = dashboards(), dashboards()
    assert list(first) == UIDS
    for uid in UIDS:
        assert first[uid].uid == uid
        assert to_json(first[uid]) == to_json(second[uid])


@pytest.mark.parametrize("uid", UIDS)
def test_the_sdk_reads_each_dashboard_back_with_typed_queries(uid: str) -> None:
    register()
    data = _json(uid)
    back = Dashboard.from_json(data)
    assert to_json(back) == data
    panels = [p for p in back.panels or [] if isinstance(p, Panel)]
    assert len(panels) == len(data["panels"])
    for panel in panels:
        assert panel.targets
        for target in panel.targets:
            assert isinstance(target, PostgresQuery)
            assert target.raw_sql.lstrip().upper().startswith(("SELECT", "WITH"))


@pytest.mark.parametrize("uid", UIDS)
def test_every_panel_has_both_titles_a_unit_and_a_datasource(uid: str) -> None:
    data = _json(uid)
    assert CJK.search(data["title"])
    assert LATIN.search(data["title"])
    assert data["timezone"] == "Asia/Shanghai"
    assert data["panels"]
    for panel in data["panels"]:
        title = panel["title"]
        assert CJK.search(title), title
        assert LATIN.search(title), title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        source = panel["datasource"]
        assert source["type"] == POSTGRES_TYPE, title
        assert source["uid"], title
        for target in panel["targets"]:
            assert target["datasource"] == source, title
    for variable in data["templating"]["list"]:
        assert CJK.search(variable["label"]), variable["name"]
        assert LATIN.search(variable["label"]), variable["name"]


def _link_targets(uid: str) -> set[str]:
    data = _json(uid)
    urls = [link.get("url", "") for link in data.get("links", [])]
    for panel in data["panels"]:
        urls += [link["url"] for link in panel["fieldConfig"]["defaults"].get("links", [])]
    return {m for url in urls for m in re.findall(r"^/d/([a-z-]+)/", url)}


def test_links_drill_down_from_province_to_line() -> None:
    assert CLUSTER_UID in _link_targets(PROVINCE_UID)
    assert ENTERPRISE_UID in _link_targets(PROVINCE_UID)  # the enterprises furthest behind
    assert ENTERPRISE_UID in _link_targets(CLUSTER_UID)
    assert LINE_UID in _link_targets(ENTERPRISE_UID)
    assert ENTERPRISE_UID in _link_targets(LINE_UID)  # and back up


def test_enterprise_dashboards_pick_an_enterprise_datasource_and_the_others_the_aggregate() -> None:
    for uid in (LINE_UID, ENTERPRISE_UID):
        data = _json(uid)
        assert {p["datasource"]["uid"] for p in data["panels"]} == {"${ds}"}
        (ds,) = [v for v in data["templating"]["list"] if v["name"] == "ds"]
        assert ds["type"] == "datasource"
        assert ds["query"] == POSTGRES_TYPE
    for uid in (CLUSTER_UID, PROVINCE_UID):
        data = _json(uid)
        assert {p["datasource"]["uid"] for p in data["panels"]} == {"zhizao-agg"}
        for panel in data["panels"]:
            sql = panel["targets"][0]["rawSql"]
            tables = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_]+)", sql))
            assert tables <= AGGREGATES, (panel["title"], tables)


def test_no_secret_is_in_a_dashboard() -> None:
    for uid in UIDS:
        text = json.dumps(_json(uid)).lower()
        assert "password" not in text
        assert "securejsondata" not in text
