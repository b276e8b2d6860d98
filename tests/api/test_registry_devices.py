"""Devices, edge gateways and shift calendars through the API.

Who may do what is the matrix's (``CASES``); these tests assert what a user of each
role sees: the rows, the totals, the errors and the audit trail.
"""

from __future__ import annotations

from typing import Any

from tests.api.conftest import ApiClient
from tests.api.matrix import Case
from tests.api.test_registry import audit_rows, scalar
from tests.api.world import NB1, NB2, WZ
from zhizao.codes import make_credit_code

DEVICE_OF = {NB1: "M01", WZ: "S01"}
EDGE_OF = {NB1: "edge-nb1", WZ: "edge-wz"}
CALENDAR: dict[str, Any] = {
    "name": "一班制 2026",
    "shifts": [
        {
            "name": "白班",
            "start": "08:00",
            "end": "17:00",
            "breaks": [{"start": "12:00", "end": "13:00", "name": "午休"}],
        }
    ],
    "holidays": [{"name": "国庆节", "from": "2026-10-01", "to": "2026-10-07"}],
    "workdays": [{"date": "2026-10-10", "as": "fri", "name": "国庆调休"}],
}


def _ent(ent: str, rest: str = "") -> str:
    return f"/api/v1/enterprises/{ent}{rest}"


CASES = [
    Case("GET", "/api/v1/devices", "list", item_enterprise=lambda item: item["enterprise"]),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/devices",
        "summary",
        url=lambda e: _ent(e, "/devices"),
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/devices",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/devices"),
        body=lambda p, e: {
            "code": "N01",
            "name": "新加工中心",
            "device_type": "cnc_machine_tool",
            "line_code": "L1",
            "is_nc": True,
        },
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/devices/{code}",
        "summary",
        url=lambda e: _ent(e, f"/devices/{DEVICE_OF[e]}"),
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/devices/{code}",
        "write",
        url=lambda e: _ent(e, f"/devices/{DEVICE_OF[e]}"),
        body=lambda p, e: {"decommissioned_on": "2027-01-01"},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/edges",
        "summary",
        url=lambda e: _ent(e, "/edges"),
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/edges",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/edges"),
        body=lambda p, e: {"edge_id": f"edge-{DEVICE_OF[e]}", "device_codes": [DEVICE_OF[e]]},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/edges/{edge_id}",
        "summary",
        url=lambda e: _ent(e, f"/edges/{EDGE_OF[e]}"),
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/edges/{edge_id}",
        "write",
        url=lambda e: _ent(e, f"/edges/{EDGE_OF[e]}"),
        body=lambda p, e: {"name": "一号线网关"},
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/edges/{edge_id}",
        "write",
        ok=204,
        url=lambda e: _ent(e, f"/edges/{EDGE_OF[e]}"),
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/calendars",
        "summary",
        url=lambda e: _ent(e, "/calendars"),
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/calendar",
        "summary",
        url=lambda e: _ent(e, "/calendar"),
    ),
    Case(
        "PUT",
        "/api/v1/enterprises/{credit_code}/calendar",
        "write",
        url=lambda e: _ent(e, "/calendar"),
        body=lambda p, e: CALENDAR,
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/calendar",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/calendar"),
        note="204 whether or not there was one (afterwards there is none)",
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/lines/{code}/calendar",
        "summary",
        url=lambda e: _ent(e, "/lines/L1/calendar"),
    ),
    Case(
        "PUT",
        "/api/v1/enterprises/{credit_code}/lines/{code}/calendar",
        "write",
        url=lambda e: _ent(e, "/lines/L1/calendar"),
        body=lambda p, e: CALENDAR,
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/lines/{code}/calendar",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/lines/L1/calendar"),
    ),
]


def _codes(page: dict[str, Any]) -> list[str]:
    return [d["code"] for d in page["items"]]


async def test_a_ningbo_analyst_sees_ningbo_devices_with_totals_and_never_wenzhou_s(
    api: ApiClient,
) -> None:
    client = api.as_("analyst_ningbo")
    every = (await client.get("/api/v1/devices")).json()
    # NB1: M01 M02 (not NC) M03 (not production); NB2: P01 P02. WZ's S01 S02 never.
    assert every["total"] == 5
    assert _codes(every) == ["M01", "M02", "M03", "P01", "P02"]
    assert {d["enterprise"] for d in every["items"]} == {NB1, NB2}
    production = (await client.get("/api/v1/devices", params={"production": True})).json()
    assert (production["total"], _codes(production)) == (4, ["M01", "M02", "P01", "P02"])
    nc = (await client.get("/api/v1/devices", params={"nc": True})).json()
    assert (nc["total"], _codes(nc)) == (4, ["M01", "M03", "P01", "P02"])
    both = (await client.get("/api/v1/devices", params={"nc": True, "production": True})).json()
    assert both["total"] == 3
    # Paging: the total is the filter's, whatever the page.
    page = (
        await client.get("/api/v1/devices", params={"sort": "-code", "limit": 2, "offset": 1})
    ).json()
    assert (page["total"], page["limit"], page["offset"], _codes(page)) == (5, 2, 1, ["P01", "M03"])
    last = (await client.get("/api/v1/devices", params={"limit": 2, "offset": 4})).json()
    assert _codes(last) == ["P02"]
    # Asking for Wenzhou answers nothing, not "forbidden": its devices do not exist here.
    for params in ({"enterprise": WZ}, {"region": "330300"}, {"cluster": "WZ-SHOE"}):
        outside = (await client.get("/api/v1/devices", params=params)).json()
        assert (outside["total"], outside["items"]) == (0, []), params
    m01 = every["items"][0]
    assert m01["device_type_label"] == "数控机床"
    assert (m01["line_code"], m01["line_name"]) == ("L1", "一号线")
    assert m01["edge_ids"] == ["edge-nb1"]
    assert m01["in_service"] is True
    assert m01["updated_at"].endswith("+08:00")
    one_enterprise = (
        await client.get(f"/api/v1/enterprises/{NB2}/devices", params={"sort": "-code"})
    ).json()
    assert (one_enterprise["total"], _codes(one_enterprise)) == (2, ["P02", "P01"])
    assert (await client.get(f"/api/v1/enterprises/{WZ}/devices")).status_code == 404


async def test_other_roles_see_their_own_part_of_the_ledger(api: ApiClient) -> None:
    mould = (await api.as_("op_nb_mold").get("/api/v1/devices")).json()
    assert (mould["total"], _codes(mould)) == (3, ["M01", "M02", "M03"])
    lucheng = (await api.as_("analyst_lucheng").get("/api/v1/devices")).json()
    assert (lucheng["total"], _codes(lucheng)) == (2, ["S01", "S02"])
    province = api.as_("analyst_zj")
    wenzhou = (await province.get("/api/v1/devices", params={"region": "330300"})).json()
    assert _codes(wenzhou) == ["S01", "S02"]
    mould_only = (await province.get("/api/v1/devices", params={"cluster": "NB-MOLD"})).json()
    assert mould_only["total"] == 3
    assert (await api.as_("nobody").get("/api/v1/devices")).json()["total"] == 0
    sorted_ = (await province.get("/api/v1/devices", params={"sort": "-enterprise,code"})).json()
    assert [d["enterprise"] for d in sorted_["items"]][:2] == [WZ, WZ]
    unknown = await province.get("/api/v1/devices", params={"sort": "code,secret"})
    assert unknown.status_code == 422
    assert "allowed: enterprise, code, name" in unknown.json()["errors"][0]["rule"]


async def test_an_engineer_creates_reads_updates_and_lists_a_device(
    api: ApiClient, api_db_url: str
) -> None:
    eng = api.as_("eng_nb1")
    made = await eng.post(
        f"/api/v1/enterprises/{NB1}/devices",
        json={
            "code": "C01",
            "name": "空压机",
            "device_type": "air_compressor",
            "commissioned_on": "2024-03-01",
        },
    )
    assert made.status_code == 201, made.text
    device = made.json()
    # As in the ledger import: an auxiliary type is not production equipment by default.
    assert (device["is_production_equipment"], device["line_code"]) == (False, None)
    assert device["device_type_label"] == "空压机"
    read = (await eng.get(f"/api/v1/enterprises/{NB1}/devices/C01")).json()
    assert read == device
    changed = await eng.patch(
        f"/api/v1/enterprises/{NB1}/devices/C01",
        json={"decommissioned_on": "2025-01-01", "line_code": "L1", "ideal_cycle_time_s": 12},
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (after["decommissioned_on"], after["line_code"], after["in_service"]) == (
        "2025-01-01",
        "L1",
        False,
    )
    assert after["commissioned_on"] == "2024-03-01"  # untouched by the PATCH
    retired = (
        await eng.get(f"/api/v1/enterprises/{NB1}/devices", params={"in_service": False})
    ).json()
    assert _codes(retired) == ["C01"]
    on_line = (
        await eng.get(
            f"/api/v1/enterprises/{NB1}/devices",
            params={"line": "L1", "sort": "-updated_at", "limit": 1},
        )
    ).json()
    assert (on_line["total"], _codes(on_line)) == (4, ["C01"])
    create, update = audit_rows(api_db_url, "device")
    assert (create["actor"], create["action"], create["object_key"]) == (
        "eng_nb1",
        "create",
        f"{NB1}/C01",
    )
    assert create["after"]["device_type"] == "air_compressor"
    assert (update["before"]["decommissioned_on"], update["after"]["decommissioned_on"]) == (
        None,
        "2025-01-01",
    )
    assert update["route"] == "/api/v1/enterprises/{credit_code}/devices/{code}"
    assert (
        await eng.post(f"/api/v1/enterprises/{NB1}/devices", json=made.json())
    ).status_code == 422
    again = {"code": "C01", "name": "x", "device_type": "other"}
    assert (await eng.post(f"/api/v1/enterprises/{NB1}/devices", json=again)).status_code == 409


async def test_validation_errors_name_the_field_the_rule_and_the_value(api: ApiClient) -> None:
    eng = api.as_("eng_nb1")
    url = f"/api/v1/enterprises/{NB1}/devices"
    good = {"code": "C02", "name": "加工中心", "device_type": "cnc_machine_tool"}
    for change, field, rule, value in (
        (
            {"commissioned_on": "2024-03-01", "decommissioned_on": "2024-02-01"},
            "body.decommissioned_on",
            "is before commissioned_on 2024-03-01",
            "2024-02-01",
        ),
        ({"code": "C 02"}, "body.code", "must be 1-64 letters", "C 02"),
        ({"line_code": "L9"}, "body.line_code", "is not a line of this enterprise", "L9"),
        ({"device_type": "toaster"}, "body.device_type", "Input should be", "toaster"),
        ({"ideal_cycle_time_s": -1}, "body.ideal_cycle_time_s", "greater than 0", -1),
    ):
        answer = await eng.post(url, json={**good, **change})
        assert answer.status_code == 422, (change, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        (problem,) = answer.json()["errors"]
        assert (problem["field"], problem["value"]) == (field, value), problem
        assert rule in problem["rule"], problem
    # A change is checked against what is stored: M01 entered service in 2024.
    await eng.patch(f"{url}/M01", json={"commissioned_on": "2024-03-01"})
    early = await eng.patch(f"{url}/M01", json={"decommissioned_on": "2023-12-31"})
    assert early.status_code == 422
    assert early.json()["errors"][0]["field"] == "body.decommissioned_on"
    cleared = await eng.patch(f"{url}/M01", json={"name": None})
    assert cleared.json()["errors"][0]["field"] == "body.name"
    misspelt = await eng.patch(f"{url}/M01", json={"decomissioned_on": "2027-01-01"})
    assert misspelt.status_code == 422
    assert misspelt.json()["errors"][0]["field"] == "body.decomissioned_on"


async def test_an_engineer_cannot_move_a_device_to_another_enterprise(api: ApiClient) -> None:
    eng = api.as_("eng_nb1")
    url = f"/api/v1/enterprises/{NB1}/devices/M01"
    stranger = make_credit_code("91330782MA2DF3G63")  # valid, registered nowhere
    answers = [await eng.patch(url, json={"enterprise": target}) for target in (NB2, WZ, stranger)]
    assert {a.status_code for a in answers} == {422}
    rules = {(a.json()["errors"][0]["field"], a.json()["errors"][0]["rule"]) for a in answers}
    # The same words for an enterprise out of reach and one that does not exist.
    assert rules == {("body.enterprise", "is not an enterprise you may change")}
    assert (await eng.get(url)).json()["enterprise"] == NB1
    # An admin may: the device goes, its line and edge stay behind.
    moved = await api.as_("admin").patch(
        f"/api/v1/enterprises/{NB1}/devices/M02", json={"enterprise": NB2, "line_code": "L1"}
    )
    assert moved.status_code == 200, moved.text
    assert (moved.json()["enterprise"], moved.json()["edge_ids"]) == (NB2, [])
    assert (await eng.get(f"/api/v1/enterprises/{NB1}/devices/M02")).status_code == 404
    nb2 = (await api.as_("admin").get(f"/api/v1/enterprises/{NB2}/devices")).json()
    assert _codes(nb2) == ["M02", "P01", "P02"]


async def test_edge_gateways_serve_only_their_own_enterprise_s_devices(
    api: ApiClient, api_db_url: str
) -> None:
    eng = api.as_("eng_nb1")
    url = f"/api/v1/enterprises/{NB1}/edges"
    foreign = await eng.post(url, json={"edge_id": "edge-nb1-b", "device_codes": ["M01", "S01"]})
    assert foreign.status_code == 422
    assert foreign.json()["errors"][0] == {
        "field": "body.device_codes.1",
        "rule": "is not a device of this enterprise",
        "value": "S01",
    }
    taken = await eng.post(url, json={"edge_id": "edge-wz"})
    assert taken.status_code == 409
    assert WZ not in taken.text  # whose it is stays unsaid
    made = await eng.post(
        url, json={"edge_id": "edge-nb1-b", "name": "二号网关", "device_codes": ["M03"]}
    )
    assert made.status_code == 201, made.text
    assert made.json()["created_at"].endswith("+08:00")
    changed = await eng.patch(f"{url}/edge-nb1-b", json={"device_codes": ["M02", "M03"]})
    assert changed.json()["device_codes"] == ["M02", "M03"]
    m03 = (await eng.get(f"/api/v1/enterprises/{NB1}/devices/M03")).json()
    assert m03["edge_ids"] == ["edge-nb1", "edge-nb1-b"]
    serving = (await eng.get(url, params={"device": "M02", "sort": "-edge_id"})).json()
    assert [e["edge_id"] for e in serving["items"]] == ["edge-nb1-b", "edge-nb1"]
    assert (await eng.get(f"{url}/edge-wz")).status_code == 404
    assert (await eng.delete(f"{url}/edge-nb1-b")).status_code == 204
    assert (await eng.get(f"{url}/edge-nb1-b")).status_code == 404
    actions = [(r["action"], r["object_key"]) for r in audit_rows(api_db_url, "edge")]
    assert actions == [
        ("create", f"{NB1}/edge-nb1-b"),
        ("update", f"{NB1}/edge-nb1-b"),
        ("delete", f"{NB1}/edge-nb1-b"),
    ]


async def test_calendars_say_which_applies_and_mark_the_rollups(
    api: ApiClient, api_db_url: str
) -> None:
    eng = api.as_("eng_nb1")
    base = f"/api/v1/enterprises/{NB1}"
    none = (await eng.get(f"{base}/lines/L1/calendar")).json()
    assert (none["source"], none["shifts"]) == ("none", [])
    put = await eng.put(f"{base}/calendar", json=CALENDAR)
    assert put.status_code == 200, put.text
    stored = put.json()
    assert (stored["source"], stored["name"]) == ("enterprise", "一班制 2026")
    assert stored["shifts"][0]["breaks"] == [
        {"start": "12:00:00", "end": "13:00:00", "name": "午休"}
    ]
    assert stored["holidays"] == [
        {"name": "国庆节", "date": None, "from": "2026-10-01", "to": "2026-10-07"}
    ]
    assert stored["workdays"] == [{"date": "2026-10-10", "as": "fri", "name": "国庆调休"}]
    assert stored["updated_at"].endswith("+08:00")
    line = (await eng.get(f"{base}/lines/L1/calendar")).json()
    assert (line["source"], line["line"], line["name"]) == ("enterprise", "L1", "一班制 2026")
    night = {
        **CALENDAR,
        "name": "夜班",
        "shifts": [{"name": "夜班", "start": "20:00", "end": "08:00"}],
    }
    assert (await eng.put(f"{base}/lines/L1/calendar", json=night)).status_code == 200
    line = (await eng.get(f"{base}/lines/L1/calendar")).json()
    assert (line["source"], line["name"]) == ("line", "夜班")
    listed = (await api.as_("op_nb_mold").get(f"{base}/calendars")).json()
    assert [(c["line"], c["source"]) for c in listed["items"]] == [
        (None, "enterprise"),
        ("L1", "line"),
    ]
    # The devices' rollups are marked, so OEE follows the schedule on the next run.
    marked = scalar(api_db_url, "SELECT count(DISTINCT device_id) FROM rollup_dirty")
    assert marked == 3
    assert (await eng.delete(f"{base}/lines/L1/calendar")).status_code == 204
    assert (await eng.get(f"{base}/lines/L1/calendar")).json()["source"] == "enterprise"
    assert (await eng.delete(f"{base}/lines/L1/calendar")).status_code == 204  # none: still 204
    clash = {**CALENDAR, "workdays": [{"date": "2026-10-02"}]}
    answer = await eng.put(f"{base}/calendar", json=clash)
    assert answer.status_code == 422
    assert "both a holiday and a make-up working day" in answer.json()["detail"]
    nameless = {**CALENDAR, "shifts": [{"start": "08:00", "end": "17:00"}]}
    problem = (await eng.put(f"{base}/calendar", json=nameless)).json()["errors"][0]
    assert problem["field"] == "body.shifts.0.name"
    assert (await eng.get(f"{base}/lines/L9/calendar")).status_code == 404
    rows = audit_rows(api_db_url, "calendar")
    assert [(r["action"], r["object_key"]) for r in rows] == [
        ("create", NB1),
        ("create", f"{NB1}/L1"),
        ("delete", f"{NB1}/L1"),
        ("delete", f"{NB1}/L1"),
    ]
    assert rows[2]["before"]["name"] == "夜班"
    assert rows[3]["before"] is None
    assert rows[3]["detail"] == {"removed": False}
