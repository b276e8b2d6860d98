"""The registry's top through the API: regions, clusters, enterprises, sites, lines.

Who may do what is the matrix's (``CASES``); these tests assert what a user of each
role sees: the rows, the totals, the errors and the audit trail.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.api.conftest import ApiClient
from tests.api.matrix import Case
from tests.api.world import NB1, NB2, NB_MOLD, WZ, WZ_SHOE
from zhizao.codes import make_credit_code

CLUSTER_OF = {NB1: NB_MOLD, WZ: WZ_SHOE}
NEW_ENTERPRISE = make_credit_code("91330203MA2NB0003")


def with_sites(db_url: str) -> None:
    """A site W1 in NB1 and in WZ (the seeded world has none)."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO site (enterprise_id, code, name)"
            " SELECT id, 'W1', '一号车间' FROM enterprise WHERE credit_code = ANY(%s)",
            ([NB1, WZ],),
        )


def _ent(ent: str, rest: str = "") -> str:
    return f"/api/v1/enterprises/{ent}{rest}"


CASES = [
    # Regions are public reference data: every authenticated user reads them.
    Case("GET", "/api/v1/regions", "list"),
    Case(
        "GET",
        "/api/v1/regions/{code}",
        "self",
        url=lambda e: "/api/v1/regions/330203",
        note="reference data: the same for every authenticated user",
    ),
    Case(
        "POST",
        "/api/v1/regions",
        "admin",
        ok=201,
        body=lambda p, e: {"code": "320000", "name": "江苏省"},
    ),
    Case(
        "PATCH",
        "/api/v1/regions/{code}",
        "admin",
        url=lambda e: "/api/v1/regions/330203",
        body=lambda p, e: {"name": "海曙"},
    ),
    Case("GET", "/api/v1/clusters", "list"),
    Case(
        "GET",
        "/api/v1/clusters/{code}",
        "summary",
        url=lambda e: f"/api/v1/clusters/{CLUSTER_OF[e]}",
    ),
    Case(
        "POST",
        "/api/v1/clusters",
        "admin",
        ok=201,
        body=lambda p, e: {
            "code": "NB-PUMP",
            "name": "宁波泵阀产业集群",
            "region_code": "330203",
            "industry_code": "C34",
        },
    ),
    Case(
        "PATCH",
        "/api/v1/clusters/{code}",
        "admin",
        url=lambda e: f"/api/v1/clusters/{NB_MOLD}",
        body=lambda p, e: {"name": "宁波模具集群"},
    ),
    Case("GET", "/api/v1/enterprises", "list", item_enterprise=lambda item: item["credit_code"]),
    Case("GET", "/api/v1/enterprises/{credit_code}", "summary", url=_ent),
    Case(
        "POST",
        "/api/v1/enterprises",
        "admin",
        ok=201,
        body=lambda p, e: {
            "credit_code": NEW_ENTERPRISE,
            "name": "宁波丁精密机械有限公司",
            "region_code": "330203",
            "industry_code": "C3484",
        },
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}",
        "admin",
        url=_ent,
        body=lambda p, e: {"key_enterprise": True},
    ),
    Case(
        "GET", "/api/v1/enterprises/{credit_code}/sites", "summary", url=lambda e: _ent(e, "/sites")
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/sites",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/sites"),
        body=lambda p, e: {"code": "W2", "name": "二号车间"},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/sites/{code}",
        "summary",
        url=lambda e: _ent(e, "/sites/W1"),
        prepare=with_sites,
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/sites/{code}",
        "write",
        url=lambda e: _ent(e, "/sites/W1"),
        body=lambda p, e: {"name": "冲压车间"},
        prepare=with_sites,
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/sites/{code}",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/sites/W1"),
        prepare=with_sites,
    ),
    Case(
        "GET", "/api/v1/enterprises/{credit_code}/lines", "summary", url=lambda e: _ent(e, "/lines")
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/lines",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/lines"),
        body=lambda p, e: {"code": "L2", "name": "二号线"},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/lines/{code}",
        "summary",
        url=lambda e: _ent(e, "/lines/L1"),
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/lines/{code}",
        "write",
        url=lambda e: _ent(e, "/lines/L1"),
        body=lambda p, e: {"name": "总装一线"},
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/lines/{code}",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/lines/L1"),
    ),
]


def audit_rows(db_url: str, object_type: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT actor, action, route, object_key, before, after, status, detail"
            " FROM audit_log WHERE object_type = %s ORDER BY id",
            (object_type,),
        ).fetchall()


def scalar(db_url: str, query: str, *params: object) -> Any:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


async def test_every_user_reads_regions_filtered_sorted_and_paged(
    api: ApiClient, api_db_url: str
) -> None:
    client = api.as_("analyst_lucheng")  # a county analyst far from Ningbo: reference data
    counties = scalar(api_db_url, "SELECT count(*) FROM region WHERE parent_code = '330200'")
    page = (
        await client.get(
            "/api/v1/regions", params={"parent": "330200", "sort": "-code", "limit": 3}
        )
    ).json()
    assert page["total"] == counties > 3
    assert len(page["items"]) == 3
    codes = [r["code"] for r in page["items"]]
    assert codes == sorted(codes, reverse=True)
    one = (await client.get("/api/v1/regions/330203")).json()
    assert one == {
        "code": "330203",
        "name": "海曙区",
        "level": "county",
        "level_label": "区县 county",
        "parent_code": "330200",
    }
    cities = (await client.get("/api/v1/regions", params={"level": "city", "limit": 1})).json()
    assert cities["total"] == 11  # Zhejiang's cities
    bad = await client.get("/api/v1/regions", params={"within": "3302"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.within"


async def test_an_unknown_sort_key_names_the_allowed_ones(api: ApiClient) -> None:
    answer = await api.as_("admin").get("/api/v1/enterprises", params={"sort": "-password"})
    assert answer.status_code == 422
    (problem,) = answer.json()["errors"]
    assert problem["field"] == "query.sort"
    assert problem["value"] == "-password"
    assert "allowed: credit_code, name, region_code" in problem["rule"]


async def test_enterprise_lists_follow_each_role_s_scope_with_their_totals(api: ApiClient) -> None:
    def codes(page: dict[str, Any]) -> list[str]:
        return [e["credit_code"] for e in page["items"]]

    ningbo = (await api.as_("analyst_ningbo").get("/api/v1/enterprises")).json()
    assert (ningbo["total"], codes(ningbo)) == (2, sorted([NB1, NB2]))
    mould = (await api.as_("op_nb_mold").get("/api/v1/enterprises")).json()
    assert (mould["total"], codes(mould)) == (1, [NB1])
    province = api.as_("analyst_zj")
    everything = (await province.get("/api/v1/enterprises", params={"sort": "-name"})).json()
    assert everything["total"] == 3
    names = [e["name"] for e in everything["items"]]
    assert names == sorted(names, reverse=True)
    wenzhou = (await province.get("/api/v1/enterprises", params={"region": "330300"})).json()
    assert codes(wenzhou) == [WZ]
    cluster = (await province.get("/api/v1/enterprises", params={"cluster": NB_MOLD})).json()
    assert codes(cluster) == [NB1]
    key = (await province.get("/api/v1/enterprises", params={"key_enterprise": True})).json()
    assert codes(key) == [NB1]
    paged = (await province.get("/api/v1/enterprises", params={"limit": 1, "offset": 2})).json()
    assert (paged["total"], codes(paged)) == (3, [WZ])
    # Filters never reach past the scope: a Ningbo analyst asking for Wenzhou gets nothing.
    none = (
        await api.as_("analyst_ningbo").get("/api/v1/enterprises", params={"region": "330300"})
    ).json()
    assert none == {"total": 0, "limit": 50, "offset": 0, "items": []}
    nb1 = (await api.as_("viewer_nb1").get(f"/api/v1/enterprises/{NB1}")).json()
    assert nb1["cluster_codes"] == [NB_MOLD]
    assert nb1["tags_label"] == "规上/重点"
    assert nb1["region_name"] == "海曙区"
    assert nb1["updated_at"].endswith("+08:00")
    assert (await api.as_("viewer_nb1").get(f"/api/v1/enterprises/{WZ}")).status_code == 404


async def test_clusters_are_read_through_the_cluster_filter(api: ApiClient) -> None:
    lucheng = api.as_("analyst_lucheng")
    page = (await lucheng.get("/api/v1/clusters")).json()
    assert [c["code"] for c in page["items"]] == [WZ_SHOE]
    assert page["total"] == 1
    assert (await lucheng.get(f"/api/v1/clusters/{NB_MOLD}")).status_code == 404
    viewer = (await api.as_("viewer_nb1").get(f"/api/v1/clusters/{NB_MOLD}")).json()
    assert viewer["region_name"] == "海曙区"
    everything = (await api.as_("admin").get("/api/v1/clusters", params={"industry": "C35"})).json()
    assert [c["code"] for c in everything["items"]] == [NB_MOLD]


async def test_creating_an_enterprise_applies_the_ledger_s_rules_naming_each_field(
    api: ApiClient, api_db_url: str
) -> None:
    admin = api.as_("admin")
    good = {
        "credit_code": NEW_ENTERPRISE,
        "name": "宁波丁精密机械有限公司",
        "region_code": "330203",
        "industry_code": "c3484",
        "cluster_codes": [NB_MOLD],
        "above_designated_size": True,
    }
    wrong_check = NEW_ENTERPRISE[:-1] + ("0" if NEW_ENTERPRISE[-1] != "0" else "1")
    for change, field, rule in (
        ({"credit_code": wrong_check}, "body.credit_code", "check character"),
        ({"region_code": "330299"}, "body.region_code", "region is not in the registry"),
        ({"region_code": "3302"}, "body.region_code", "six digits"),
        ({"industry_code": "X1"}, "body.industry_code", "GB/T 4754"),
        ({"cluster_codes": ["NB-NONE"]}, "body.cluster_codes.0", "cluster is not in the registry"),
        ({"time_zone": "Mars/Olympus"}, "body.time_zone", "IANA time zone"),
    ):
        answer = await admin.post("/api/v1/enterprises", json={**good, **change})
        assert answer.status_code == 422, (change, answer.text)
        (problem,) = answer.json()["errors"]
        assert problem["field"] == field, (change, problem)
        assert rule in problem["rule"], (change, problem)
    made = await admin.post("/api/v1/enterprises", json=good)
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["industry_code"], body["cluster_codes"], body["tags_label"]) == (
        "C3484",
        [NB_MOLD],
        "规上",
    )
    assert (await admin.post("/api/v1/enterprises", json=good)).status_code == 409
    changed = await admin.patch(
        f"/api/v1/enterprises/{NEW_ENTERPRISE}",
        json={"cluster_codes": [], "time_zone": "Asia/Urumqi"},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["cluster_codes"] == []
    assert changed.json()["updated_at"].endswith("+06:00")  # the enterprise's own zone
    create, update = audit_rows(api_db_url, "enterprise")
    assert (create["action"], create["object_key"], create["before"]) == (
        "create",
        NEW_ENTERPRISE,
        None,
    )
    assert create["after"]["cluster_codes"] == [NB_MOLD]
    assert update["before"]["cluster_codes"] == [NB_MOLD]
    assert update["after"]["cluster_codes"] == []
    assert update["after"]["time_zone"] == "Asia/Urumqi"
    # Only admins change enterprises, even their own engineers.
    denied = await api.as_("eng_nb1").patch(f"/api/v1/enterprises/{NB1}", json={"name": "x"})
    assert denied.status_code == 403


async def test_sites_and_lines_are_kept_by_the_enterprise_s_engineer(
    api: ApiClient, api_db_url: str
) -> None:
    eng = api.as_("eng_nb1")
    site = await eng.post(_ent(NB1, "/sites"), json={"code": "W1", "name": "一号车间"})
    assert site.status_code == 201, site.text
    line = await eng.post(
        _ent(NB1, "/lines"), json={"code": "L2", "name": "二号线", "site_code": "W1"}
    )
    assert line.json() == {
        "enterprise": NB1,
        "code": "L2",
        "name": "二号线",
        "site_code": "W1",
        "devices": 0,
        "has_calendar": False,
    }
    unknown = await eng.post(
        _ent(NB1, "/lines"), json={"code": "L3", "name": "三号线", "site_code": "W9"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "body.site_code"
    bad = await eng.post(_ent(NB1, "/lines"), json={"code": "L 3", "name": "三号线"})
    assert bad.json()["errors"][0]["field"] == "body.code"
    assert (
        await eng.post(_ent(NB1, "/lines"), json={"code": "L2", "name": "x"})
    ).status_code == 409
    lines = (await eng.get(_ent(NB1, "/lines"), params={"site": "W1"})).json()
    assert [x["code"] for x in lines["items"]] == ["L2"]
    everything = (await eng.get(_ent(NB1, "/lines"), params={"sort": "-code"})).json()
    assert [(x["code"], x["devices"]) for x in everything["items"]] == [("L2", 0), ("L1", 3)]
    renamed = await eng.patch(_ent(NB1, "/lines/L2"), json={"name": "装配二线", "site_code": None})
    assert (renamed.json()["name"], renamed.json()["site_code"]) == ("装配二线", None)
    # Deleting a line leaves its devices in the ledger, without a line.
    assert (await eng.delete(_ent(NB1, "/lines/L1"))).status_code == 204
    m01 = (await eng.get(_ent(NB1, "/devices/M01"))).json()
    assert (m01["line_code"], m01["name"]) == (None, "设备M01")
    assert (await eng.get(_ent(NB1, "/lines/L1"))).status_code == 404
    assert (await eng.delete(_ent(NB1, "/sites/W1"))).status_code == 204
    deleted = [r for r in audit_rows(api_db_url, "line") if r["action"] == "delete"]
    assert deleted[0]["object_key"] == f"{NB1}/L1"
    assert deleted[0]["before"]["devices"] == 3
    assert deleted[0]["detail"] == {"devices_left_without_line": ["M01", "M02", "M03"]}
    update = next(r for r in audit_rows(api_db_url, "line") if r["action"] == "update")
    assert (update["before"]["name"], update["after"]["name"]) == ("二号线", "装配二线")
    # A viewer of the enterprise reads, and may not change.
    viewer = api.as_("viewer_nb1")
    assert (await viewer.get(_ent(NB1, "/lines/L2"))).status_code == 200
    assert (await viewer.delete(_ent(NB1, "/lines/L2"))).status_code == 403
