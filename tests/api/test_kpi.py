"""KPIs through the API: the same figures as the kernel's KPI functions, for every
scope and period, computed only over the caller's enterprises.

One local day (Monday 2026-03-02, Asia/Shanghai) of facts for the world's devices:

    NB1 M01  runs 08:00-12:00, idles 1 min, runs to 16:00, breaks down 30 min, runs to
             19:00, idles; 800 good, 10 rejects                         networked
    NB1 M02  setup 08:30, runs 09:00-15:00, planned stop; 400 good      networked
    NB1 M03  a temperature (not production equipment)                   excluded
    NB2 P01  runs 09:00-17:00, idles; 900 good, 5 rejects               networked
    NB2 P02  silent                                                     not networked
    WZ  S01  runs 08:00-20:00, idles; 1,200 good                        networked
    WZ  S02  only an online report of its edge at 09:00                 networked

NB1 has a calendar (白班 08:00-20:00, 夜班 20:00-08:00, Monday to Friday); NB2 and
WZ have none (all time is scheduled).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from tests.api.conftest import ApiClient
from tests.api.matrix import Case
from tests.api.world import NB1, NB2, NB_MOLD, PERSONAS, SEES, WZ, WZ_SHOE
from zhizao.access import visibility
from zhizao.calendar import ShiftCalendar, to_ms
from zhizao.codes import make_credit_code
from zhizao.networking import GroupBy, RateFigure
from zhizao.oee import Oee
from zhizao.storage import kpi
from zhizao.storage.connection import Conn, connect
from zhizao.storage.facts import (
    ConnectivityRow,
    CountRow,
    FactBatch,
    MetricRow,
    StateRow,
    metric_ids,
    write_facts,
)
from zhizao.storage.kpi import Every, Level, OeeScope, Within
from zhizao.storage.rollups import run_rollups, store_calendars
from zhizao.wire import StateClass as S

SH = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 3, 2)  # a Monday
_K = "/api/v1/kpi"
_COUNTY = {NB1: "330203", WZ: "330302"}
_CLUSTER = {NB1: NB_MOLD, WZ: WZ_SHOE}
_DEVICE = {NB1: "M01", WZ: "S01"}


def _q(value: str) -> str:
    return quote(value, safe="")


CASES = [
    Case("GET", f"{_K}/oee", "summary",
         url=lambda e: f"{_K}/oee?level=line&code=L1&enterprise={e}&date={DAY}"),
    Case("GET", f"{_K}/oee/series", "summary",
         url=lambda e: f"{_K}/oee/series?level=enterprise&code={e}&period=week&date={DAY}"),
    Case("GET", f"{_K}/oee/shifts", "summary",
         url=lambda e: f"{_K}/oee/shifts?level=device&code={_DEVICE[e]}&enterprise={e}"
                       f"&date={DAY}"),
    Case("GET", f"{_K}/networking", "list",
         url=lambda e: f"{_K}/networking?date={DAY}&group_by=enterprise",
         item_enterprise=lambda item: item["group"]),
    Case("GET", f"{_K}/networking/series", "summary",
         url=lambda e: f"{_K}/networking/series?region={_COUNTY[e]}&period=week&date={DAY}"),
    Case("GET", f"{_K}/networking/current", "list",
         url=lambda e: f"{_K}/networking/current?group_by=enterprise"
                       f"&at={_q('2026-03-02T20:00+08:00')}",
         item_enterprise=lambda item: item["group"]),
    Case("GET", f"{_K}/nc", "summary",
         url=lambda e: f"{_K}/nc?cluster={_CLUSTER[e]}&date={DAY}&group_by=enterprise"),
    Case("GET", f"{_K}/networking/evidence", "list",
         url=lambda e: f"{_K}/networking/evidence?date={DAY}",
         item_enterprise=lambda item: item["enterprise"]),
]  # fmt: skip


def _at(hh: int, mm: int = 0, day: date = DAY) -> int:
    return to_ms(datetime(day.year, day.month, day.day, hh, mm, tzinfo=SH))


def _calendar() -> ShiftCalendar:
    return ShiftCalendar.model_validate({
        "enterprise": NB1,
        "name": "两班制",
        "shifts": [
            {"name": "白班", "start": "08:00", "end": "20:00"},
            {"name": "夜班", "start": "20:00", "end": "08:00"},
        ],
    })  # fmt: skip


async def _seed_day(conn: Conn) -> None:
    cur = await conn.execute(
        "SELECT e.credit_code, d.code, d.id FROM device d JOIN enterprise e"
        " ON e.id = d.enterprise_id"
    )
    dev = {(str(cc), str(code)): int(pk) for cc, code, pk in await cur.fetchall()}
    cur = await conn.execute("SELECT edge_id, id FROM edge_gateway")
    edges = {str(e): int(pk) for e, pk in await cur.fetchall()}
    temp = (await metric_ids(conn, ["temperature"]))["temperature"]
    m01, m02, m03 = dev[NB1, "M01"], dev[NB1, "M02"], dev[NB1, "M03"]
    p01, s01, s02 = dev[NB2, "P01"], dev[WZ, "S01"], dev[WZ, "S02"]
    await store_calendars(conn, [_calendar()])
    await write_facts(conn, FactBatch(
        states=[
            StateRow(m01, _at(8), S.RUNNING), StateRow(m01, _at(12), S.IDLE),
            StateRow(m01, _at(12, 1), S.RUNNING), StateRow(m01, _at(16), S.UNPLANNED_STOP),
            StateRow(m01, _at(16, 30), S.RUNNING), StateRow(m01, _at(19), S.IDLE),
            StateRow(m02, _at(8, 30), S.SETUP), StateRow(m02, _at(9), S.RUNNING),
            StateRow(m02, _at(15), S.PLANNED_STOP),
            StateRow(p01, _at(9), S.RUNNING), StateRow(p01, _at(17), S.IDLE),
            StateRow(s01, _at(8), S.RUNNING), StateRow(s01, _at(20), S.IDLE),
        ],
        counts=[
            CountRow(m01, _at(10), 0, 700), CountRow(m01, _at(14), 1, 10),
            CountRow(m01, _at(18), 0, 100), CountRow(m02, _at(12), 0, 400),
            CountRow(p01, _at(12), 0, 900), CountRow(p01, _at(13), 1, 5),
            CountRow(s01, _at(12), 0, 1200),
        ],
        metrics=[MetricRow(m03, temp, _at(10), 21.5)],
        connectivity=[ConnectivityRow(s02, _at(9), True, edges["edge-wz"], "session up")],
    ))  # fmt: skip
    await conn.commit()
    await run_rollups(conn, until=datetime(2026, 3, 4, tzinfo=SH), history_days=3)


@pytest.fixture
async def day_conn(api_db_url: str) -> AsyncIterator[Conn]:
    """The test's database with the day's facts rolled up; a connection for the kernel."""
    conn = await connect(api_db_url)
    async with conn:
        await _seed_day(conn)
        yield conn


def _within(persona: str) -> Within:
    return visibility(PERSONAS[persona].grants).enterprise_filter("e")


def _expect_oee(result: Oee) -> dict[str, Any]:
    """What the API must say of a kernel result, field by field (exact floats)."""
    c = result.components
    return {
        "availability": result.availability,
        "performance": result.performance,
        "quality": result.quality,
        "oee": result.oee,
        "quality_weighted": result.quality_weighted,
        "planned_busy_s": c.pbt_s,
        "actual_production_s": c.apt_s,
        "scheduled_s": c.scheduled_s,
        "offline_s": c.offline_s,
        "produced": c.produced,
        "good": c.good,
        "reject": c.reject,
        "losses": {
            "breakdowns": result.losses.breakdowns_s,
            "setup": result.losses.setup_s,
            "idle": result.losses.idle_s,
            "micro_stops": result.losses.micro_stops_s,
            "offline_gap": result.losses.offline_gap_s,
            "speed_loss": result.losses.speed_loss_s,
            "rejects": result.losses.rejects_s,
            "valuable": result.losses.valuable_s,
        },
        "flags": [str(f) for f in result.flags],
    }


def _said_oee(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("availability", "performance", "quality", "oee", "quality_weighted",
            "planned_busy_s", "actual_production_s", "scheduled_s", "offline_s", "produced",
            "good", "reject")  # fmt: skip
    said = {k: body[k] for k in keys}
    said["losses"] = {x["loss"]: x["seconds"] for x in body["losses"]}
    said["flags"] = [f["flag"] for f in body["flags"]]
    return said


def _figures(figures: list[RateFigure]) -> list[tuple[Any, ...]]:
    return [
        (f.group_by.value, f.group, f.method.value, f.scope.value, f.rate, f.numerator,
         f.denominator, f.enterprises)
        for f in figures
    ]  # fmt: skip


def _items(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (i["group_by"], i["group"], i["method"], i["scope"], i["rate"], i["numerator"],
         i["denominator"], i["enterprises"])
        for i in items
    ]  # fmt: skip


async def _get(api: ApiClient, persona: str, url: str, status: int = 200) -> Any:
    answer = await api.as_(persona).get(url)
    assert answer.status_code == status, answer.text
    return answer.json()


# --- OEE ------------------------------------------------------------------------------


async def test_oee_equals_the_kernel_for_every_kind_of_period(
    api: ApiClient, day_conn: Conn
) -> None:
    line = OeeScope(Level.LINE, "L1", NB1)
    week0, week1 = kpi.period_days("week", DAY)
    month0, month1 = kpi.period_days("month", DAY)
    t0, t1 = datetime(2026, 3, 2, 8, tzinfo=SH), datetime(2026, 3, 2, 16, tzinfo=SH)
    u0, u1 = datetime(2026, 3, 2, 8, 30, tzinfo=SH), datetime(2026, 3, 2, 16, 10, tzinfo=SH)
    base = f"{_K}/oee?level=line&code=L1&enterprise={NB1}"
    for persona in ("admin", "eng_nb1", "op_nb_mold", "analyst_ningbo"):
        within = _within(persona)
        cases = [
            (f"{base}&date={DAY}",
             await kpi.oee_for_days(day_conn, line, DAY, DAY, within=within), DAY, DAY),
            (f"{base}&period=week&date={DAY}",
             await kpi.oee_for_days(day_conn, line, week0, week1, within=within), week0, week1),
            (f"{base}&period=month&date={DAY}",
             await kpi.oee_for_days(day_conn, line, month0, month1, within=within), month0,
             month1),
            (f"{base}&period=custom&start=2026-03-01&end=2026-03-03",
             await kpi.oee_for_days(day_conn, line, date(2026, 3, 1), date(2026, 3, 3),
                                    within=within), date(2026, 3, 1), date(2026, 3, 3)),
            (f"{base}&period=custom&start={_q(t0.isoformat())}&end={_q(t1.isoformat())}",
             await kpi.oee_for_interval(day_conn, line, t0, t1, within=within), None, None),
            (f"{base}&period=custom&start={_q(u0.isoformat())}&end={_q(u1.isoformat())}",
             await kpi.oee_for_interval(day_conn, line, u0, u1, within=within), None, None),
        ]  # fmt: skip
        for url, report, first, last in cases:
            body = await _get(api, persona, url)
            assert _said_oee(body["result"]) == _expect_oee(report.result), url
            assert body["source"] == report.source
            assert body["period"]["first_day"] == (first and first.isoformat())
            assert body["period"]["last_day"] == (last and last.isoformat())
            assert body["period"]["time_zone"] == "Asia/Shanghai"
            assert [(d["enterprise"], d["device"]) for d in body["devices"]] == [
                (d.enterprise, d.device) for d in report.devices
            ]
            for said, device in zip(body["devices"], report.devices, strict=True):
                assert _said_oee(said["result"]) == _expect_oee(device.oee)
            assert body["restricted"] is False  # a line of a visible enterprise is whole
    sources = {(await _get(api, "admin", url))["source"] for url, *_ in cases}
    assert sources == {"rollup_device_day", "rollup_device_hour", "facts"}
    # The day's figures are real: two machines ran, with losses that add up to PBT.
    day = await _get(api, "eng_nb1", f"{base}&date={DAY}")
    assert day["result"]["produced"] == 1210
    assert sum(x["seconds"] for x in day["result"]["losses"]) == pytest.approx(
        day["result"]["planned_busy_s"]
    )
    assert day["period"]["start"] == "2026-03-02T00:00:00+08:00"
    assert day["period"]["end"] == "2026-03-03T00:00:00+08:00"


async def test_a_device_without_a_calendar_by_hand(api: ApiClient, day_conn: Conn) -> None:
    """S01 (WZ, no calendar: all 24 h scheduled) is unknown before 08:00, runs 12 h,
    idles 4 h and makes 1,200 good parts of 30 s each."""
    body = await _get(
        api, "analyst_lucheng", f"{_K}/oee?level=device&code=S01&enterprise={WZ}&date={DAY}"
    )
    r = body["result"]
    assert (r["planned_busy_s"], r["actual_production_s"]) == (86400.0, 43200.0)
    assert r["availability"] == 0.5
    assert r["performance"] == pytest.approx(36000 / 43200)
    assert r["quality"] == 1.0
    assert r["oee"] == pytest.approx(36000 / 86400)
    losses = {x["loss"]: x for x in r["losses"]}
    assert losses["offline_gap"]["seconds"] == 28800.0
    assert losses["offline_gap"]["label"] == "离线(数据缺口) offline (coverage gap)"
    assert losses["idle"]["seconds"] == 14400.0
    assert losses["speed_loss"]["seconds"] == 7200.0
    assert losses["valuable"]["share_of_pbt"] == pytest.approx(36000 / 86400)
    assert [f["flag"] for f in r["flags"]] == ["coverage_gap"]
    assert r["flags"][0]["label"].startswith("计划时间内有离线时段")
    assert body["scope"] == {
        "level": "device", "level_label": "设备 device", "code": "S01", "enterprise": WZ,
    }  # fmt: skip


async def test_a_cluster_operator_s_province_oee_is_its_cluster_s(
    api: ApiClient, day_conn: Conn
) -> None:
    province = await _get(api, "op_nb_mold", f"{_K}/oee?level=province&code=330000&date={DAY}")
    nb1 = await kpi.oee_for_days(day_conn, OeeScope(Level.ENTERPRISE, NB1), DAY, DAY)
    assert _said_oee(province["result"]) == _expect_oee(nb1.result)
    assert {d["enterprise"] for d in province["devices"]} == {NB1}
    assert province["restricted"] is True
    assert province["restricted_label"].startswith("仅含您权限范围内的企业")
    assert province["scope"]["level"] == "province"
    whole = await _get(api, "admin", f"{_K}/oee?level=region&code=330000&date={DAY}")
    assert whole["result"]["produced"] > province["result"]["produced"]
    assert {d["enterprise"] for d in whole["devices"]} == {NB1, NB2, WZ}
    assert whole["restricted"] is False
    # The analyst of Ningbo: NB1 and NB2 over the province, nothing of Wenzhou.
    ningbo = await _get(api, "analyst_ningbo", f"{_K}/oee?level=region&code=330000&date={DAY}")
    both = await kpi.oee_for_days(day_conn, OeeScope(Level.REGION, "330200"), DAY, DAY)
    assert _said_oee(ningbo["result"]) == _expect_oee(both.result)


async def test_a_scope_out_of_reach_is_the_same_404_as_a_missing_one(api: ApiClient) -> None:
    ghost = make_credit_code("91330302MA2WE0009")  # well formed, not in the registry
    pairs = [
        ("eng_nb1", f"level=line&code=L1&enterprise={WZ}",
         f"level=line&code=L1&enterprise={ghost}", (WZ, ghost)),
        ("eng_nb1", f"level=line&code=L9&enterprise={NB2}",
         f"level=line&code=L9&enterprise={NB1}", (NB2, NB1)),
        ("op_nb_mold", f"level=cluster&code={WZ_SHOE}", "level=cluster&code=NO-SUCH",
         (WZ_SHOE, "NO-SUCH")),
        ("op_nb_mold", "level=city&code=330300", "level=city&code=330500",
         ("330300", "330500")),
        ("analyst_ningbo", f"level=device&code=S01&enterprise={WZ}",
         f"level=device&code=X9&enterprise={NB1}", (f"{WZ}/S01", f"{NB1}/X9")),
    ]  # fmt: skip
    for persona, outside, missing, (key_out, key_missing) in pairs:
        a = await api.as_(persona).get(f"{_K}/oee?{outside}&date={DAY}")
        b = await api.as_(persona).get(f"{_K}/oee?{missing}&date={DAY}")
        assert a.status_code == b.status_code == 404, (a.text, b.text)
        same = a.json() | {"detail": a.json()["detail"].replace(key_out, key_missing)}
        assert same == b.json()
        assert a.headers["content-type"] == "application/problem+json"
    # The cluster operator's own cluster and the province around it are in reach.
    for url in (f"level=cluster&code={NB_MOLD}", "level=province&code=330000"):
        assert (await api.as_("op_nb_mold").get(f"{_K}/oee?{url}&date={DAY}")).status_code == 200


async def test_errors_name_the_field_the_rule_and_the_value(api: ApiClient, day_conn: Conn) -> None:
    client = api.as_("eng_nb1")
    line = f"{_K}/oee?level=line&code=L1&enterprise={NB1}"
    cases = [
        (f"{_K}/oee?level=line&code=L1", "query.enterprise", None, "needs its enterprise"),
        (f"{line}&period=shift&shift=中班&date={DAY}", "query.shift", "中班",
         "shifts: 白班, 夜班"),
        (f"{line}&period=shift&date={DAY}", "query.shift", None, "needs the shift's name"),
        (f"{line}&period=custom&start=2026-03-05&end=2026-03-01", "query.end", "2026-03-01",
         "must not be before start"),
        (f"{line}&period=custom&start=2025-01-01&end=2026-03-01", "query.end", "2026-03-01",
         "at most 400 days"),
        (f"{line}&period=custom&start=2026-03-02T08:00&end=2026-03-02T09:00", "query.start",
         "2026-03-02T08:00", "needs a UTC offset"),
        (f"{line}&period=custom&start={_q('2026-03-02T09:00+08:00')}"
         f"&end={_q('2026-03-02T08:00+08:00')}", "query.end", "2026-03-02T08:00+08:00",
         "must be after start"),
        (f"{line}&period=custom&start=2026-03-01", "query.end", None, "needs start and end"),
        (f"{_K}/oee?level=city&code=330000", "query.code", "330000",
         "is a province code, not a city code"),
        (f"{_K}/oee?level=enterprise&code=NOT-A-CODE", "query.code", "NOT-A-CODE", "18"),
        (f"{_K}/oee/shifts?level=region&code=330000", "query.level", "region",
         "shifts belong to one enterprise"),
        (f"{_K}/networking?period=custom&start={_q('2026-03-02T00:00+08:00')}"
         f"&end={_q('2026-03-03T00:00+08:00')}", "query.start", "2026-03-02T00:00+08:00",
         "per local day"),
        (f"{_K}/networking/evidence?group_by=city&group=330203", "query.group", "330203",
         "is a county code, not a city code"),
        (f"{_K}/networking/evidence?group=330203", "query.group_by", None, "go together"),
        (f"{line}&date={DAY}&start=2026-03-01", "query.start", "2026-03-01",
         "only with period=custom"),
        (f"{line}&date={DAY}&shift=白班", "query.shift", "白班", "only with period=shift"),
    ]  # fmt: skip
    for url, field, value, rule in cases:
        answer = await client.get(url)
        assert answer.status_code == 422, (url, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        [error] = answer.json()["errors"]
        assert (error["field"], error.get("value")) == (field, value), (url, error)
        assert rule in error["rule"], (url, error)


async def test_shifts_side_by_side_and_one_shift_equal_the_kernel(
    api: ApiClient, day_conn: Conn
) -> None:
    line = OeeScope(Level.LINE, "L1", NB1)
    body = await _get(
        api, "viewer_nb1", f"{_K}/oee/shifts?level=line&code=L1&enterprise={NB1}&date={DAY}"
    )
    expected = await kpi.oee_by_shift(day_conn, line, DAY, within=_within("viewer_nb1"))
    assert [(s["shift"], s["start"], s["end"]) for s in body["shifts"]] == [
        ("白班", "2026-03-02T08:00:00+08:00", "2026-03-02T20:00:00+08:00"),
        ("夜班", "2026-03-02T20:00:00+08:00", "2026-03-03T08:00:00+08:00"),
    ]
    for said, (name, report) in zip(body["shifts"], expected, strict=True):
        assert said["shift"] == name
        assert _said_oee(said["result"]) == _expect_oee(report.result)
    # The device's calendar is its line's: the same shifts for M01.
    device = await _get(
        api, "viewer_nb1", f"{_K}/oee/shifts?level=device&code=M01&enterprise={NB1}&date={DAY}"
    )
    assert [s["shift"] for s in device["shifts"]] == ["白班", "夜班"]
    one = await _get(
        api, "viewer_nb1",
        f"{_K}/oee?level=line&code=L1&enterprise={NB1}&period=shift&shift=白班&date={DAY}",
    )  # fmt: skip
    assert _said_oee(one["result"]) == _said_oee(body["shifts"][0]["result"])
    assert one["period"]["shift"] == "白班"
    assert one["period"]["shift_day"] == DAY.isoformat()
    assert one["period"]["start"] == "2026-03-02T08:00:00+08:00"
    # No calendar (NB2): no shifts, not an error.
    none = await _get(api, "admin", f"{_K}/oee/shifts?level=enterprise&code={NB2}&date={DAY}")
    assert none["shifts"] == []


async def test_oee_series_points_equal_oee_for_their_days(api: ApiClient, day_conn: Conn) -> None:
    ent = OeeScope(Level.ENTERPRISE, NB1)
    for every, start, end in (("day", "2026-03-01", "2026-03-03"),
                              ("week", "2026-02-25", "2026-03-10"),
                              ("month", "2026-02-20", "2026-03-03")):  # fmt: skip
        body = await _get(
            api, "op_nb_mold",
            f"{_K}/oee/series?level=enterprise&code={NB1}&every={every}&period=custom"
            f"&start={start}&end={end}",
        )  # fmt: skip
        buckets = kpi.series_buckets(date.fromisoformat(start), date.fromisoformat(end),
                                     Every(every))  # fmt: skip
        assert [(p["period"]["first_day"], p["period"]["last_day"]) for p in body["points"]] == [
            (a.isoformat(), b.isoformat()) for a, b in buckets
        ]
        for point, (first, last) in zip(body["points"], buckets, strict=True):
            report = await kpi.oee_for_days(day_conn, ent, first, last)
            assert _said_oee(point["result"]) == _expect_oee(report.result), (every, first)
    # Weeks are clipped to the range: 2026-02-25 is a Wednesday.
    assert buckets_of_week() == [
        (date(2026, 2, 25), date(2026, 3, 1)), (date(2026, 3, 2), date(2026, 3, 8)),
        (date(2026, 3, 9), date(2026, 3, 10)),
    ]  # fmt: skip


def buckets_of_week() -> list[tuple[date, date]]:
    return kpi.series_buckets(date(2026, 2, 25), date(2026, 3, 10), Every.WEEK)


# --- networking and NC ------------------------------------------------------------------


async def test_rates_equal_the_kernel_over_each_persona_s_enterprises(
    api: ApiClient, day_conn: Conn
) -> None:
    at = datetime(2026, 3, 2, 20, tzinfo=SH)
    for persona in PERSONAS:
        if persona == "nobody":
            continue
        within = _within(persona)
        for group_by in GroupBy:
            said = await _get(api, persona, f"{_K}/networking?date={DAY}&group_by={group_by}")
            want = await kpi.networking_rates(day_conn, DAY, DAY, group_by, within=within)
            assert _items(said["items"]) == _figures(want), (persona, group_by)
        month = await _get(api, persona, f"{_K}/networking?period=month&date={DAY}")
        want = await kpi.networking_rates(
            day_conn, date(2026, 3, 1), date(2026, 3, 31), GroupBy.CITY, within=within
        )
        assert _items(month["items"]) == _figures(want)
        for key in (False, True):
            nc = await _get(
                api, persona, f"{_K}/nc?date={DAY}&group_by=county&key_process={str(key).lower()}"
            )
            want = await kpi.nc_rates(day_conn, DAY, GroupBy.COUNTY, key_process=key, within=within)
            assert _items(nc["items"]) == _figures(want), (persona, key)
            assert nc["kind"] == ("nc_key_process" if key else "nc")
        current = await _get(
            api, persona, f"{_K}/networking/current?group_by=enterprise&at={_q(at.isoformat())}"
        )
        want = await kpi.current_networking_rates(day_conn, at, GroupBy.ENTERPRISE, within=within)
        assert _items(current["items"]) == _figures(want)
        assert current["since"] == "2026-03-01T19:00:00+08:00"
        # Only the persona's enterprises, whatever the grouping.
        assert {i["group"] for i in current["items"]} <= SEES[persona]
        assert said["restricted"] is (persona != "admin")


async def test_networking_rates_by_hand(api: ApiClient, day_conn: Conn) -> None:
    def figure(body: dict[str, Any], group: str, method: str) -> tuple[Any, ...]:
        [item] = [i for i in body["items"] if i["group"] == group and i["method"] == method]
        return item["rate"], item["numerator"], item["denominator"], item["enterprises"]

    # Ningbo: M01, M02, P01 of the four production devices of NB1 and NB2 (M03 is not one).
    ningbo = await _get(api, "analyst_ningbo", f"{_K}/networking?date={DAY}&group_by=city")
    assert figure(ningbo, "330200", "ratio_of_sums") == (0.75, 3, 4, 2)
    assert figure(ningbo, "330200", "mean_of_enterprise_rates") == (0.75, 1.5, 2, 2)
    item = ningbo["items"][0]
    assert item["group_name"] == "宁波市"
    assert item["method_label"] == "合计口径(分子、分母分别加总后相除) ratio of sums"
    assert item["scope_label"] == "全部企业 all enterprises"
    assert [f["flag"] for f in item["flags"]] == ["caller_scope"]
    assert {i["group"] for i in ningbo["items"]} == {"330200"}  # never Wenzhou
    # The cluster operator sees NB1's two.
    mold = await _get(api, "op_nb_mold", f"{_K}/networking?date={DAY}&group_by=city")
    assert figure(mold, "330200", "ratio_of_sums") == (1.0, 2, 2, 1)
    # The province: 5 of 6 for the whole province; key enterprises only: NB1.
    zj = await _get(api, "analyst_zj", f"{_K}/networking?date={DAY}&group_by=province")
    assert figure(zj, "330000", "ratio_of_sums") == (5 / 6, 5, 6, 3)
    key = await _get(
        api, "analyst_zj", f"{_K}/networking?date={DAY}&group_by=province&scope=key_enterprise"
    )
    assert figure(key, "330000", "ratio_of_sums") == (1.0, 2, 2, 1)
    assert key["scope_label"] == "重点企业 key enterprises"
    # NC on the day: M02 is not NC: 3 of 4 in Ningbo; no key-process device: no figure.
    nc = await _get(api, "analyst_ningbo", f"{_K}/nc?date={DAY}&group_by=city")
    assert figure(nc, "330200", "ratio_of_sums") == (0.75, 3, 4, 2)
    assert nc["kind_label"] == "数控化率 NC rate"
    none = await _get(api, "analyst_ningbo", f"{_K}/nc?date={DAY}&group_by=city&key_process=true")
    assert none["items"] == []
    await day_conn.execute("UPDATE device SET key_process = true WHERE code IN ('M01', 'M02')")
    # NB2's machines enter service next month: NB2 has no device in the denominator.
    await day_conn.execute(
        "UPDATE device SET commissioned_on = '2026-04-01' WHERE code IN ('P01', 'P02')"
    )
    await day_conn.commit()
    keyed = await _get(api, "analyst_ningbo", f"{_K}/nc?date={DAY}&group_by=city&key_process=true")
    assert figure(keyed, "330200", "ratio_of_sums") == (0.5, 1, 2, 1)
    assert keyed["kind_label"] == "关键工序数控化率 key-process NC rate"
    later = await _get(api, "analyst_ningbo", f"{_K}/networking?date={DAY}&group_by=enterprise")
    assert figure(later, NB2, "ratio_of_sums") == (None, 0, 0, 0)
    [nb2] = [i for i in later["items"] if i["group"] == NB2 and i["method"] == "ratio_of_sums"]
    assert [f["flag"] for f in nb2["flags"]] == ["no_devices"]
    assert nb2["group_name"] == "宁波乙机械有限公司"
    assert figure(later, NB1, "ratio_of_sums") == (1.0, 2, 2, 1)


async def test_a_cluster_operator_s_province_by_city_is_nb1_alone(
    api: ApiClient, day_conn: Conn
) -> None:
    nb1 = kpi.enterprises_within([NB1])
    for path, want in (
        (f"networking?date={DAY}",
         await kpi.networking_rates(day_conn, DAY, DAY, GroupBy.CITY, within=nb1)),
        (f"nc?date={DAY}", await kpi.nc_rates(day_conn, DAY, GroupBy.CITY, within=nb1)),
    ):  # fmt: skip
        body = await _get(api, "op_nb_mold", f"{_K}/{path}&region=330000&group_by=city")
        assert _items(body["items"]) == _figures(want)
        assert {i["group"] for i in body["items"]} == {"330200"}
        assert body["region"] == "330000"
        assert body["restricted"] is True
    # ... which is not the province's true figure.
    true = await _get(api, "admin", f"{_K}/networking?date={DAY}&region=330000&group_by=province")
    mine = await _get(
        api, "op_nb_mold", f"{_K}/networking?date={DAY}&region=330000&group_by=province"
    )
    assert true["items"][0]["rate"] == 5 / 6
    assert mine["items"][0]["rate"] == 1.0
    # A region or cluster out of reach is a 404; a region narrows an analyst too.
    for persona, query in (
        ("op_nb_mold", "region=330300"),
        ("op_nb_mold", f"cluster={WZ_SHOE}"),
        ("analyst_lucheng", "region=330200"),
        ("nobody", "region=330000"),
    ):
        answer = await api.as_(persona).get(f"{_K}/networking?date={DAY}&{query}")
        assert answer.status_code == 404, (persona, query, answer.text)  # fmt: skip
    county = await _get(
        api, "analyst_zj", f"{_K}/networking?date={DAY}&region=330302&group_by=enterprise"
    )
    assert [i["group"] for i in county["items"]] == [WZ, WZ]  # both methods


async def test_networking_series_points_equal_the_rates_of_their_days(
    api: ApiClient, day_conn: Conn
) -> None:
    for persona in ("admin", "analyst_ningbo", "op_nb_mold"):
        within = _within(persona)
        for every, start, end in (("day", "2026-03-01", "2026-03-04"),
                                  ("week", "2026-02-26", "2026-03-09"),
                                  ("month", "2026-02-27", "2026-03-02")):  # fmt: skip
            body = await _get(
                api, persona,
                f"{_K}/networking/series?every={every}&period=custom&start={start}&end={end}"
                "&group_by=enterprise",
            )  # fmt: skip
            first, last = date.fromisoformat(start), date.fromisoformat(end)
            buckets = kpi.series_buckets(first, last, Every(every))
            assert len(body["points"]) == len(buckets)
            for point, (b0, b1) in zip(body["points"], buckets, strict=True):
                want = await kpi.networking_rates(
                    day_conn, b0, b1, GroupBy.ENTERPRISE, within=within
                )
                assert _items(point["items"]) == _figures(want), (persona, every, b0)
                assert point["period"]["first_day"] == b0.isoformat()
    # A device-day count that moves: M02 is commissioned on 2026-03-02 (the day it
    # first ran), so it is in the denominator from that day on.
    await day_conn.execute("UPDATE device SET commissioned_on = '2026-03-02' WHERE code = 'M02'")
    await day_conn.commit()
    body = await _get(
        api, "admin",
        f"{_K}/networking/series?every=week&period=custom&start=2026-02-26&end=2026-03-09"
        "&group_by=enterprise",
    )  # fmt: skip
    for point, (b0, b1) in zip(body["points"], kpi.series_buckets(
        date(2026, 2, 26), date(2026, 3, 9), Every.WEEK), strict=True
    ):  # fmt: skip
        want = await kpi.networking_rates(day_conn, b0, b1, GroupBy.ENTERPRISE)
        assert _items(point["items"]) == _figures(want)


async def test_the_evidence_lists_only_the_persona_s_devices_with_paging(
    api: ApiClient, day_conn: Conn
) -> None:
    totals = {"admin": (7, 5, 1, 1), "eng_nb1": (3, 2, 0, 1), "viewer_nb1": (3, 2, 0, 1),
              "op_nb_mold": (3, 2, 0, 1), "analyst_ningbo": (5, 3, 1, 1),
              "analyst_zj": (7, 5, 1, 1), "analyst_lucheng": (2, 2, 0, 0),
              "nobody": (0, 0, 0, 0)}  # fmt: skip
    for persona, (total, counted, not_counted, excluded) in totals.items():
        url = f"{_K}/networking/evidence?date={DAY}"
        whole = await _get(api, persona, f"{url}&limit=1000")
        assert (whole["total"], whole["counted"], whole["not_counted"], whole["excluded"]) == (
            total, counted, not_counted, excluded,
        ), persona  # fmt: skip
        assert {i["enterprise"] for i in whole["items"]} <= SEES[persona]
        pages: list[dict[str, Any]] = []
        for offset in range(0, total + 2, 2):
            page = await _get(api, persona, f"{url}&limit=2&offset={offset}")
            assert (page["total"], page["counted"]) == (total, counted)
            pages.extend(page["items"])
        assert pages == whole["items"], persona
        kernel = await kpi.networking_evidence(
            day_conn, DAY, GroupBy.ENTERPRISE, None, within=_within(persona)
        )
        assert [(i["enterprise"], i["device"], i["reason"]) for i in whole["items"]] == [
            (e.enterprise, e.device, e.reason) for e in kernel
        ]
    nb1 = await _get(
        api, "op_nb_mold", f"{_K}/networking/evidence?date={DAY}&group_by=cluster&group={NB_MOLD}"
    )
    rows = {i["device"]: i for i in nb1["items"]}
    assert rows["M01"]["status_label"] == "计入 counted"
    assert rows["M01"]["last_seen"] == "2026-03-02T19:00:00+08:00"  # its last state point
    assert rows["M03"]["status"] == "excluded"
    assert rows["M03"]["reason_label"] == (
        "非生产设备，不计入分母 not production equipment: not in the denominator"
    )
    assert (nb1["rate"], nb1["group"], nb1["total"]) == (1.0, NB_MOLD, 3)
    wz = await _get(api, "analyst_lucheng", f"{_K}/networking/evidence?date={DAY}")
    s02 = next(i for i in wz["items"] if i["device"] == "S02")
    assert (s02["reason"], s02["last_seen"]) == ("online_reported", "2026-03-02T09:00:00+08:00")
    ningbo = await _get(
        api, "analyst_ningbo", f"{_K}/networking/evidence?date={DAY}&group_by=city&group=330200"
    )
    assert (ningbo["rate"], ningbo["total"]) == (0.75, 5)
    # A group out of reach is a 404, like a missing one.
    for persona, query in (("op_nb_mold", "group_by=city&group=330300"),
                           ("op_nb_mold", f"group_by=cluster&group={WZ_SHOE}"),
                           ("eng_nb1", f"group_by=enterprise&group={NB2}"),
                           ("analyst_ningbo", "group_by=county&group=330302")):  # fmt: skip
        answer = await api.as_(persona).get(f"{_K}/networking/evidence?date={DAY}&{query}")
        assert answer.status_code == 404, (persona, query, answer.text)


# --- the kernel's restriction ---------------------------------------------------------


async def test_without_a_restriction_the_kernel_counts_every_enterprise(day_conn: Conn) -> None:
    everything = await kpi.networking_parts(day_conn, DAY, DAY)
    assert set(everything) == {NB1, NB2, WZ}
    assert await kpi.networking_parts(day_conn, DAY, DAY, within=_within("admin")) == everything
    assert await kpi.networking_parts(day_conn, DAY, DAY, within=_within("op_nb_mold")) == {
        NB1: everything[NB1]
    }
    both = kpi.restrict(_within("analyst_ningbo"), kpi.area_filter(cluster=NB_MOLD))
    assert set(await kpi.nc_parts(day_conn, DAY, within=both)) == {NB1}
    assert await kpi.networking_parts(day_conn, DAY, DAY, within=_within("nobody")) == {}
    assert set(await kpi.enterprise_facts(day_conn, within=kpi.enterprises_within([WZ]))) == {WZ}
    clashing = (kpi.enterprises_within([WZ])[0], {"first": DAY - timedelta(days=1)})
    with pytest.raises(ValueError, match="rebinds"):
        await kpi.networking_parts(day_conn, DAY, DAY, within=clashing)


async def test_regions_and_clusters_in_reach_of_each_persona(day_conn: Conn) -> None:
    regions = ("330000", "330200", "330203", "330300", "330302")
    reach = {
        persona: {
            code for code in regions
            if await kpi.in_reach(day_conn, OeeScope(Level.REGION, code),
                                  visibility(PERSONAS[persona].grants))
        } | {
            code for code in (NB_MOLD, WZ_SHOE)
            if await kpi.in_reach(day_conn, OeeScope(Level.CLUSTER, code),
                                  visibility(PERSONAS[persona].grants))
        }
        for persona in PERSONAS
    }  # fmt: skip
    assert reach["admin"] == {*regions, NB_MOLD, WZ_SHOE}
    assert reach["analyst_zj"] == {*regions, NB_MOLD, WZ_SHOE}
    assert reach["op_nb_mold"] == {"330000", "330200", "330203", NB_MOLD}
    assert reach["eng_nb1"] == {"330000", "330200", "330203", NB_MOLD}
    assert reach["analyst_ningbo"] == {"330000", "330200", "330203", NB_MOLD}
    assert reach["analyst_lucheng"] == {"330000", "330300", "330302", WZ_SHOE}
    assert reach["nobody"] == set()


def test_kpi_schemas_carry_an_example_for_every_field() -> None:
    from platform_api import create_app
    from tests.api.conftest import make_settings

    doc = create_app(make_settings("postgresql://unused")).openapi()
    schemas = doc["components"]["schemas"]
    used: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[-1]
                if name not in used:
                    used.add(name)
                    collect(schemas[name])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for path, item in doc["paths"].items():
        if path.startswith(_K):
            collect(item["get"]["responses"]["200"])
    assert used >= {"OeeReportPublic", "RatesPublic", "EvidencePage"}
    missing = [
        f"{name}.{prop}"
        for name in sorted(used)
        for prop, spec in schemas[name].get("properties", {}).items()
        if "examples" not in spec and "$ref" not in spec and spec.get("type") != "array"
        and not any("$ref" in x for x in spec.get("anyOf", []))
    ]  # fmt: skip
    assert missing == []
