"""Raw telemetry through the API: facts written here, answers computed by hand.

Times are in the test's own past (March 2026) so that "now" never clips a range,
except where clipping at now is what a test is about.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from psycopg import sql

from platform_api import create_app
from tests.api.conftest import ApiClient, make_settings
from tests.api.matrix import Case
from tests.api.world import NB1, NB2, WZ
from zhizao import telemetry as tel
from zhizao.access import Grant, Role, visibility
from zhizao.storage import telemetry as store
from zhizao.storage.connection import Conn, connect
from zhizao.storage.facts import (
    ConnectivityRow,
    CountRow,
    EdgeStatusRow,
    FactBatch,
    MetricRow,
    StateRow,
    metric_ids,
    write_facts,
)
from zhizao.storage.kpi import Level, OeeScope, oee_from_facts
from zhizao.wire import StateClass

_DEVICE = {NB1: "M01", NB2: "P01", WZ: "S01"}
_EDGE = {NB1: "edge-nb1", NB2: "edge-nb2", WZ: "edge-wz"}
_RANGE = "start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00"


def _dev(ent: str, tail: str) -> str:
    return f"/api/v1/enterprises/{ent}/devices/{_DEVICE[ent]}/{tail}"


def _edge(ent: str, tail: str) -> str:
    return f"/api/v1/enterprises/{ent}/edges/{_EDGE[ent]}/{tail}"


CASES = [
    Case("GET", "/api/v1/enterprises/{credit_code}/devices/{code}/metrics", "raw",
         url=lambda e: _dev(e, "metrics")),
    Case("GET", "/api/v1/enterprises/{credit_code}/devices/{code}/metrics/{metric}/series", "raw",
         url=lambda e: _dev(e, f"metrics/temperature/series?{_RANGE}&points=10")),
    Case("GET", "/api/v1/enterprises/{credit_code}/devices/{code}/states", "raw",
         url=lambda e: _dev(e, f"states?{_RANGE}")),
    Case("GET", "/api/v1/enterprises/{credit_code}/devices/{code}/counts", "raw",
         url=lambda e: _dev(e, f"counts?{_RANGE}&bucket=PT10M")),
    Case("GET", "/api/v1/enterprises/{credit_code}/devices/{code}/connectivity", "raw",
         url=lambda e: _dev(e, f"connectivity?{_RANGE}")),
    Case("GET", "/api/v1/enterprises/{credit_code}/latest", "raw",
         url=lambda e: f"/api/v1/enterprises/{e}/latest"),
    Case("GET", "/api/v1/enterprises/{credit_code}/edges/{edge_id}/status", "raw",
         url=lambda e: _edge(e, "status")),
    Case("GET", "/api/v1/enterprises/{credit_code}/edges/{edge_id}/gaps", "raw",
         url=lambda e: _edge(e, "gaps")),
]  # fmt: skip

SH = ZoneInfo("Asia/Shanghai")


def at(hh: int, mm: int = 0, ss: int = 0, ms: int = 0, *, day: int = 2) -> int:
    """Epoch ms of 2026-03-<day> hh:mm:ss.ms in Shanghai."""
    local = datetime(2026, 3, day, hh, mm, ss, ms * 1000, tzinfo=SH)
    return int(local.timestamp() * 1000)


def q(text: str) -> str:
    return quote(text, safe="")


@dataclass
class World:
    conn: Conn
    ids: dict[tuple[str, str], int]
    edges: dict[str, int]

    def device(self, ent: str, code: str) -> int:
        return self.ids[(ent, code)]

    async def write(self, batch: FactBatch) -> None:
        await write_facts(self.conn, batch)
        await self.conn.commit()


@pytest.fixture
async def world(api_db_url: str) -> AsyncIterator[World]:
    conn = await connect(api_db_url)
    async with conn:
        cur = await conn.execute(
            "SELECT e.credit_code, d.code, d.id FROM device d"
            " JOIN enterprise e ON e.id = d.enterprise_id"
        )
        ids = {(str(c), str(code)): int(pk) for c, code, pk in await cur.fetchall()}
        cur = await conn.execute("SELECT edge_id, id FROM edge_gateway")
        edges = {str(e): int(pk) for e, pk in await cur.fetchall()}
        await conn.commit()
        yield World(conn, ids, edges)


async def _metrics(w: World, *names: str) -> dict[str, int]:
    ids = await metric_ids(w.conn, names)
    await w.conn.commit()
    return ids


def _series_url(ent: str, code: str, metric: str, start: str, end: str, *extra: str) -> str:
    return (
        f"/api/v1/enterprises/{ent}/devices/{code}/metrics/{metric}/series"
        f"?start={q(start)}&end={q(end)}{''.join(extra)}"
    )


# --- series --------------------------------------------------------------------------


async def test_series_gives_the_min_max_avg_and_count_of_each_bucket(
    api: ApiClient, world: World
) -> None:
    m = await _metrics(world, "temperature", "pressure")
    t, p = m["temperature"], m["pressure"]
    m01, m02 = world.device(NB1, "M01"), world.device(NB1, "M02")
    await world.write(
        FactBatch(
            metrics=[
                MetricRow(m01, t, at(7, 59, 59), 99.0),  # before the range
                MetricRow(m01, t, at(8, 0, 0), 10.0),  # bucket 08:00
                MetricRow(m01, t, at(8, 5, 0), 20.0),
                MetricRow(m01, t, at(8, 9, 59, 999), 30.0),
                # 08:10 to 08:20: nothing
                MetricRow(m01, t, at(8, 20, 0), 5.0),  # bucket 08:20
                MetricRow(m01, t, at(8, 21, 0), 1000.0, quality=2),  # bad: left out
                MetricRow(m01, t, at(8, 29, 59), -5.0),
                MetricRow(m01, t, at(8, 30, 0), 77.0),  # the end: excluded
                MetricRow(m01, p, at(8, 1, 0), 500.0),  # another metric
                MetricRow(m02, t, at(8, 1, 0), 500.0),  # another device
            ]
        )
    )
    client = api.as_("eng_nb1")
    url = _series_url(NB1, "M01", "temperature", "2026-03-02T08:00:00+08:00",
                      "2026-03-02T08:30:00+08:00", "&bucket=PT10M")  # fmt: skip
    response = await client.get(url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket_s"] == 600
    assert body["start"] == "2026-03-02T08:00:00+08:00"
    assert body["buckets"] == [
        {"start": "2026-03-02T08:00:00+08:00", "min": 10.0, "max": 30.0, "avg": 20.0, "count": 3},
        {"start": "2026-03-02T08:20:00+08:00", "min": -5.0, "max": 5.0, "avg": 0.0, "count": 2},
    ]  # the empty bucket of 08:10 is absent

    with_bad = (await client.get(url + "&include_bad=true")).json()["buckets"]
    assert with_bad[1]["max"] == 1000.0
    assert with_bad[1]["count"] == 3
    assert with_bad[1]["avg"] == pytest.approx(1000.0 / 3)

    # The same in seconds, and a metric the device never had: no buckets, no error.
    assert (await client.get(url.replace("PT10M", "600"))).json()["buckets"] == body["buckets"]
    unknown = await client.get(url.replace("temperature", "no_such_metric"))
    assert unknown.status_code == 200
    assert unknown.json()["buckets"] == []


async def test_buckets_align_to_local_midnight_and_count_only_the_range(
    api: ApiClient, world: World
) -> None:
    t = (await _metrics(world, "temperature"))["temperature"]
    m01 = world.device(NB1, "M01")
    await world.write(
        FactBatch(
            metrics=[
                MetricRow(m01, t, at(8, 1), 1.0),  # in the aligned bucket, before start
                MetricRow(m01, t, at(8, 4), 4.0),
                MetricRow(m01, t, at(8, 9), 9.0),
                MetricRow(m01, t, at(8, 12), 12.0),
                MetricRow(m01, t, at(8, 14), 14.0),  # after end
            ]
        )
    )
    url = _series_url(NB1, "M01", "temperature", "2026-03-02T08:03:00+08:00",
                      "2026-03-02T08:13:00+08:00", "&bucket=300")  # fmt: skip
    body = (await api.as_("viewer_nb1").get(url)).json()
    assert body["buckets"] == [
        {"start": "2026-03-02T08:00:00+08:00", "min": 4.0, "max": 4.0, "avg": 4.0, "count": 1},
        {"start": "2026-03-02T08:05:00+08:00", "min": 9.0, "max": 9.0, "avg": 9.0, "count": 1},
        {"start": "2026-03-02T08:10:00+08:00", "min": 12.0, "max": 12.0, "avg": 12.0, "count": 1},
    ]


async def test_points_become_a_round_bucket_width(api: ApiClient) -> None:
    client = api.as_("eng_nb1")
    day = ("2026-03-02T08:00:00+08:00", "2026-03-02T20:00:00+08:00")
    # 12 h / 100 points = 432 s, rounded up to 10 minutes: 72 buckets.
    body = (await client.get(_series_url(NB1, "M01", "t", *day, "&points=100"))).json()
    assert body["bucket_s"] == 600
    # Neither: 500 points, 86.4 s, rounded up to 2 minutes.
    assert (await client.get(_series_url(NB1, "M01", "t", *day))).json()["bucket_s"] == 120


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00&points=5001",
         "query.points"),
        ("start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00&points=0",
         "query.points"),
        ("start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00&bucket=0.5",
         "query.bucket"),
        ("start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00&bucket=-60",
         "query.bucket"),
        ("start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00"
         "&bucket=9999999999999999", "query.bucket"),
        ("start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T10:00:00%2B08:00&bucket=PT1S",
         "query.bucket"),  # 7,200 buckets
        ("start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00&bucket=60&points=9",
         "query.bucket"),
        ("start=2026-03-02T09:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00", "query.start"),
        ("start=2026-03-02T10:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00", "query.start"),
        ("start=2025-01-01T00:00:00Z&end=2026-03-02T09:00:00Z", "query.end"),  # > 400 days
        ("start=2026-03-02T08:00:00&end=2026-03-02T09:00:00%2B08:00", "query.start"),  # naive
        ("start=2026-03-02T08:00:00Z&end=2026-03-02", "query.end"),  # a date: naive
        ("start=yesterday&end=2026-03-02T09:00:00Z", "query.start"),
        ("start=1772409600&end=2026-03-02T09:00:00Z", "query.start"),  # epoch seconds
        ("start=1999-12-31T00:00:00Z&end=2000-01-02T00:00:00Z", "query.start"),
        ("end=2026-03-02T09:00:00Z", "query.start"),  # missing
    ],
)  # fmt: skip
async def test_out_of_bounds_requests_are_refused_naming_the_field(
    api: ApiClient, query: str, field: str
) -> None:
    url = f"/api/v1/enterprises/{NB1}/devices/M01/metrics/temperature/series?{query}"
    response = await api.as_("eng_nb1").get(url)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_an_unencoded_plus_in_the_offset_is_read_as_plus(api: ApiClient) -> None:
    url = (
        f"/api/v1/enterprises/{NB1}/devices/M01/metrics/temperature/series"
        "?start=2026-03-02T08:00:00+08:00&end=2026-03-02T09:00:00+08:00"
    )
    response = await api.as_("eng_nb1").get(url)
    assert response.status_code == 200, response.text
    assert response.json()["start"] == "2026-03-02T08:00:00+08:00"


async def test_the_series_reads_the_primary_key_as_one_range_per_bucket(world: World) -> None:
    """EXPLAIN of the series statement over a day of 1 Hz data (docs/api.md has the
    figures for 7 days): index range scans of (device, metric, time), no sort of the
    points and no sequential scan."""
    m = await _metrics(world, "speed", "other")
    m01 = world.device(NB1, "M01")
    t0 = at(0)
    rows = [MetricRow(m01, m["speed"], t0 + i * 1000, float(i % 97)) for i in range(86_400)]
    rows += [MetricRow(m01, m["other"], t0 + i * 1000, 1.0) for i in range(0, 86_400, 10)]
    await world.write(FactBatch(metrics=rows))
    await world.conn.execute("ANALYZE metric_point")
    vis = visibility([Grant(Role.ENTERPRISE_ENGINEER, NB1)])
    device = await store.find_device(world.conn, vis, NB1, "M01")
    assert device is not None
    start = datetime(2026, 3, 2, tzinfo=SH)
    end = start + timedelta(days=1)
    plan = tel.plan_buckets(start, end, SH, points=500)
    query, params = store.series_query(vis, device, "speed", start=start, end=end, plan=plan)
    cur = await world.conn.execute(sql.SQL("EXPLAIN ") + query, params)
    text = "\n".join(str(r[0]) for r in await cur.fetchall())
    assert "metric_point_pkey" in text, text
    assert "Seq Scan on metric_point" not in text, text
    assert "Sort Key: (date_bin" not in text, text
    series = await store.metric_series(
        world.conn, vis, device, "speed", start=start, end=end, plan=plan
    )
    assert sum(b.count for b in series) == 86_400
    assert len(series) == plan.count == 288  # 172.8 s rounded up to 5 minutes


# --- latest --------------------------------------------------------------------------


async def test_latest_values_are_the_newest_point_of_each_metric(
    api: ApiClient, world: World
) -> None:
    m = await _metrics(world, "temperature", "spindle_speed")
    m01, m02 = world.device(NB1, "M01"), world.device(NB1, "M02")
    await world.write(
        FactBatch(
            metrics=[
                MetricRow(m01, m["temperature"], at(8), 90.0),
                MetricRow(m01, m["temperature"], at(9), 40.5),  # newest, not largest
                MetricRow(m01, m["spindle_speed"], at(8, 30), 8200.0, quality=1),
                MetricRow(m02, m["spindle_speed"], at(10), 6000.0),
            ]
        )
    )
    client = api.as_("eng_nb1")
    body = (await client.get(f"/api/v1/enterprises/{NB1}/devices/M01/metrics")).json()
    assert body["enterprise"] == NB1
    assert body["line"] == "L1"
    assert body["metrics"] == [
        {"metric": "spindle_speed", "time": "2026-03-02T08:30:00+08:00", "value": 8200.0,
         "quality": "uncertain"},
        {"metric": "temperature", "time": "2026-03-02T09:00:00+08:00", "value": 40.5,
         "quality": "good"},
    ]  # fmt: skip

    page = (await client.get(f"/api/v1/enterprises/{NB1}/latest")).json()
    assert page["total"] == 3
    assert [(d["device"], [x["metric"] for x in d["metrics"]]) for d in page["items"]] == [
        ("M01", ["spindle_speed", "temperature"]),
        ("M02", ["spindle_speed"]),
        ("M03", []),
    ]
    only = await client.get(f"/api/v1/enterprises/{NB1}/latest?metric=spindle_speed&limit=1")
    body = only.json()
    assert body["total"] == 3
    assert [(d["device"], [x["value"] for x in d["metrics"]]) for d in body["items"]] == [
        ("M01", [8200.0])
    ]
    none = (await client.get(f"/api/v1/enterprises/{NB1}/latest?line=L9")).json()
    assert (none["total"], none["items"]) == (0, [])


# --- states --------------------------------------------------------------------------


def _states_url(ent: str, code: str, start: str, end: str) -> str:
    return f"/api/v1/enterprises/{ent}/devices/{code}/states?start={q(start)}&end={q(end)}"


async def test_state_timeline_is_clipped_to_the_range_and_sums_to_it(
    api: ApiClient, world: World
) -> None:
    m01 = world.device(NB1, "M01")
    await world.write(
        FactBatch(
            states=[
                StateRow(m01, at(7), StateClass.RUNNING, raw="Executing"),  # in force at start
                StateRow(m01, at(8, 15), StateClass.IDLE, reason="no material"),
                StateRow(m01, at(8, 40), StateClass.UNPLANNED_STOP, reason="spindle alarm"),
                StateRow(m01, at(9, 10), StateClass.RUNNING),  # after the range
            ]
        )
    )
    url = _states_url(NB1, "M01", "2026-03-02T08:00:00+08:00", "2026-03-02T09:00:00+08:00")
    body = (await api.as_("eng_nb1").get(url)).json()
    intervals = [
        (i["start"], i["end"], i["seconds"], i["state"], i["state_label"], i["reason"])
        for i in body["intervals"]
    ]
    assert intervals == [
        ("2026-03-02T08:00:00+08:00", "2026-03-02T08:15:00+08:00", 900.0, "RUNNING",
         "运行 Running", None),  # in force at the start
        ("2026-03-02T08:15:00+08:00", "2026-03-02T08:40:00+08:00", 1500.0, "IDLE",
         "待机 Idle", "no material"),
        ("2026-03-02T08:40:00+08:00", "2026-03-02T09:00:00+08:00", 1200.0, "UNPLANNED_STOP",
         "故障停机 Unplanned stop", "spindle alarm"),
    ]  # fmt: skip
    assert body["intervals"][0]["since"] == "2026-03-02T07:00:00+08:00"
    assert body["intervals"][0]["raw"] == "Executing"
    assert sum(i["seconds"] for i in body["intervals"]) == 3600
    assert {t["state"]: t["seconds"] for t in body["totals"]} == {
        "RUNNING": 900.0, "IDLE": 1500.0, "UNPLANNED_STOP": 1200.0,
    }  # fmt: skip
    assert body["truncated"] is False

    # A change exactly at the start begins the first interval there.
    url = _states_url(NB1, "M01", "2026-03-02T08:15:00+08:00", "2026-03-02T08:50:00+08:00")
    body = (await api.as_("eng_nb1").get(url)).json()
    assert [(i["state"], i["seconds"], i["since"]) for i in body["intervals"]] == [
        ("IDLE", 1500.0, "2026-03-02T08:15:00+08:00"),
        ("UNPLANNED_STOP", 600.0, "2026-03-02T08:40:00+08:00"),
    ]

    # A limit cuts the list, not the totals.
    url = _states_url(NB1, "M01", "2026-03-02T08:00:00+08:00", "2026-03-02T09:00:00+08:00")
    cut = (await api.as_("eng_nb1").get(url + "&limit=2")).json()
    assert len(cut["intervals"]) == 2
    assert cut["truncated"] is True
    assert sum(t["seconds"] for t in cut["totals"]) == 3600


async def test_the_span_before_the_first_state_is_offline(api: ApiClient, world: World) -> None:
    m01 = world.device(NB1, "M01")
    await world.write(FactBatch(states=[StateRow(m01, at(8, 20, 0, 500), StateClass.SETUP)]))
    url = _states_url(NB1, "M01", "2026-03-02T08:00:00+08:00", "2026-03-02T08:30:00+08:00")
    body = (await api.as_("eng_nb1").get(url)).json()
    assert [
        (i["state"], i["state_label"], i["source"], i["source_label"], i["since"], i["seconds"])
        for i in body["intervals"]
    ] == [
        ("OFFLINE", "离线 Offline", "none", "尚无状态 No state known yet", None, 1200.5),
        ("SETUP", "换型调整 Setup", "state", "设备上报 Reported by the device",
         "2026-03-02T08:20:00.500000+08:00", 599.5),
    ]  # fmt: skip
    assert body["intervals"][1]["start"] == "2026-03-02T08:20:00.500000+08:00"
    assert sum(t["seconds"] for t in body["totals"]) == 1800
    # No state at all: offline throughout, never assumed running.
    url = _states_url(NB1, "M02", "2026-03-02T08:00:00+08:00", "2026-03-02T08:30:00+08:00")
    empty = (await api.as_("eng_nb1").get(url)).json()
    assert [(i["state"], i["seconds"]) for i in empty["intervals"]] == [("OFFLINE", 1800.0)]


async def test_a_lost_device_or_a_dead_edge_is_offline_until_the_next_state(
    api: ApiClient, world: World
) -> None:
    """The timeline follows the KPI rules (docs/kpi.md §1): a connectivity loss or the
    edge's death makes the device OFFLINE; coming back online does not end it, the next
    state does; a state of bad quality is OFFLINE; a loss outranks a state at one instant."""
    m01, edge = world.device(NB1, "M01"), world.edges["edge-nb1"]
    await world.write(
        FactBatch(
            states=[
                StateRow(m01, at(7), StateClass.RUNNING),
                StateRow(m01, at(8, 20), StateClass.IDLE),
                StateRow(m01, at(8, 30), StateClass.RUNNING, quality=2),  # bad: OFFLINE
                StateRow(m01, at(8, 40), StateClass.RUNNING),
                StateRow(m01, at(8, 50), StateClass.RUNNING),  # loses to the death below
            ],
            connectivity=[
                ConnectivityRow(m01, at(7, 30), False, edge, "BadConnectionClosed"),
                ConnectivityRow(m01, at(8, 5), True, edge, "session up"),  # ends nothing
            ],
            edge_status=[EdgeStatusRow(edge, at(8, 50), False, "will")],
        )
    )
    url = _states_url(NB1, "M01", "2026-03-02T08:00:00+08:00", "2026-03-02T09:00:00+08:00")
    body = (await api.as_("eng_nb1").get(url)).json()
    got = [(i["start"][11:16], i["state"], i["source"], i["reason"]) for i in body["intervals"]]
    assert got == [
        ("08:00", "OFFLINE", "connectivity", "BadConnectionClosed"),  # since 07:30
        ("08:20", "IDLE", "state", None),
        ("08:30", "OFFLINE", "state", None),
        ("08:40", "RUNNING", "state", None),
        ("08:50", "OFFLINE", "edge", "will"),
    ]  # fmt: skip
    assert body["intervals"][0]["since"] == "2026-03-02T07:30:00+08:00"
    assert {t["state"]: t["seconds"] for t in body["totals"]} == {
        "RUNNING": 600.0, "IDLE": 600.0, "OFFLINE": 2400.0,
    }  # fmt: skip

    # The same seconds per state as the KPI engine counts for the range.
    (kpi,) = await oee_from_facts(
        world.conn, OeeScope(Level.DEVICE, "M01", NB1),
        datetime(2026, 3, 2, 8, tzinfo=SH), datetime(2026, 3, 2, 9, tzinfo=SH),
    )  # fmt: skip
    c = kpi.components
    assert (c.running_s, c.idle_s, c.offline_s, c.setup_s, c.unplanned_stop_s) == (
        600.0, 600.0, 2400.0, 0.0, 0.0,
    )  # fmt: skip


async def test_the_state_in_force_ends_now_not_at_a_future_end(
    api: ApiClient, world: World
) -> None:
    m01 = world.device(NB1, "M01")
    now = datetime.now(UTC)
    start = now - timedelta(hours=1)
    await world.write(
        FactBatch(states=[StateRow(m01, int(start.timestamp() * 1000), StateClass.RUNNING)])
    )
    url = _states_url(NB1, "M01", start.isoformat(), (now + timedelta(days=1)).isoformat())
    body = (await api.as_("eng_nb1").get(url)).json()
    end = datetime.fromisoformat(body["end"])
    assert now <= end < now + timedelta(minutes=5)
    assert [i["state"] for i in body["intervals"]] == ["RUNNING"]
    assert body["intervals"][0]["seconds"] == pytest.approx((end - start).total_seconds())


# --- counts --------------------------------------------------------------------------


async def test_counts_sum_good_and_reject_per_bucket(api: ApiClient, world: World) -> None:
    m01 = world.device(NB1, "M01")
    await world.write(
        FactBatch(
            counts=[
                CountRow(m01, at(7, 59, 59), 0, 100),  # before the range
                CountRow(m01, at(8, 0), 0, 3),
                CountRow(m01, at(8, 0), 1, 1),  # good and reject at one instant
                CountRow(m01, at(8, 59, 59), 0, 2),
                # 09:00 to 10:00: nothing
                CountRow(m01, at(10, 30), 1, 4),
                CountRow(m01, at(11), 0, 50),  # the end: excluded
            ]
        )
    )
    url = (
        f"/api/v1/enterprises/{NB1}/devices/M01/counts?start={q('2026-03-02T08:00:00+08:00')}"
        f"&end={q('2026-03-02T11:00:00+08:00')}&bucket=PT1H"
    )
    body = (await api.as_("eng_nb1").get(url)).json()
    assert body["bucket_s"] == 3600
    assert body["buckets"] == [
        {"start": "2026-03-02T08:00:00+08:00", "good": 5, "reject": 1},
        {"start": "2026-03-02T10:00:00+08:00", "good": 0, "reject": 4},
    ]
    assert body["totals"] == {"good": 5, "reject": 5}


# --- connectivity --------------------------------------------------------------------


async def test_connectivity_history_with_the_state_at_start_and_now(
    api: ApiClient, world: World
) -> None:
    m01, edge = world.device(NB1, "M01"), world.edges["edge-nb1"]
    await world.write(
        FactBatch(
            connectivity=[
                ConnectivityRow(m01, at(7), True, edge, "session up"),
                ConnectivityRow(m01, at(8, 10), False, edge, "BadConnectionClosed"),
                ConnectivityRow(m01, at(8, 12), True, edge, "session up"),
                ConnectivityRow(m01, at(12), False, edge, "silent 60 s"),  # after the range
            ]
        )
    )
    url = f"/api/v1/enterprises/{NB1}/devices/M01/connectivity?{_RANGE}"
    body = (await api.as_("viewer_nb1").get(url)).json()
    assert body["at_start"] == {
        "time": "2026-03-02T07:00:00+08:00", "online": True, "status_label": "在线 Online",
        "reason": "session up", "edge_id": "edge-nb1",
    }  # fmt: skip
    assert [(e["time"], e["online"], e["status_label"], e["reason"]) for e in body["events"]] == [
        ("2026-03-02T08:10:00+08:00", False, "离线 Offline", "BadConnectionClosed"),
        ("2026-03-02T08:12:00+08:00", True, "在线 Online", "session up"),
    ]
    assert body["current"]["time"] == "2026-03-02T12:00:00+08:00"
    assert body["current"]["online"] is False
    # A device that never reported: nothing, and no error.
    none = (await api.as_("viewer_nb1").get(url.replace("M01", "M02"))).json()
    assert (none["current"], none["at_start"], none["events"]) == (None, None, [])


# --- edges ---------------------------------------------------------------------------


async def test_edge_status_history_software_and_last_seen(api: ApiClient, world: World) -> None:
    edge = world.edges["edge-nb1"]
    await world.write(
        FactBatch(
            edge_status=[
                EdgeStatusRow(edge, at(7), True, None, 10, "zhizao-edge 0.1.0"),
                EdgeStatusRow(edge, at(8, 30), False, "will", 180),
                EdgeStatusRow(edge, at(8, 31), True, None, 181, "zhizao-edge 0.2.0"),
                EdgeStatusRow(edge, at(9, 30), False, "will", 900),  # latest, names no software
            ]
        )
    )
    await world.conn.execute(
        "INSERT INTO edge_sequence (edge_pk, high_seq, messages, updated_at)"
        " VALUES (%s, 901, 890, %s)",
        (edge, datetime(2026, 3, 2, 9, 29, tzinfo=SH)),
    )
    await world.conn.commit()
    body = (await api.as_("eng_nb1").get(_edge(NB1, "status") + f"?{_RANGE}")).json()
    assert body["online"] is False
    assert body["status_label"] == "离线 Offline"
    assert body["since"] == "2026-03-02T09:30:00+08:00"
    assert body["software"] == "zhizao-edge 0.2.0"
    assert body["last_seen"] == "2026-03-02T09:30:00+08:00"
    assert body["last_message_at"] == "2026-03-02T09:29:00+08:00"
    assert (body["high_seq"], body["messages"]) == (901, 890)
    assert [(h["time"], h["kind_label"], h["software"]) for h in body["history"]] == [
        ("2026-03-02T08:30:00+08:00", "下线 Death", None),
        ("2026-03-02T08:31:00+08:00", "上线 Birth", "zhizao-edge 0.2.0"),
    ]
    # Without a range: the last 30 days up to now (these March facts are older).
    recent = (await api.as_("eng_nb1").get(_edge(NB1, "status"))).json()
    assert recent["history"] == []
    assert recent["software"] == "zhizao-edge 0.2.0"
    # An edge that never reported.
    silent = (await api.as_("admin").get(_edge(NB2, "status"))).json()
    assert (silent["online"], silent["status_label"]) == (None, "无数据 Never reported")
    assert (silent["last_seen"], silent["messages"]) == (None, 0)


async def test_edge_gaps_list_what_is_still_missing_and_what_was_seen(
    api: ApiClient, world: World
) -> None:
    edge = world.edges["edge-nb1"]
    detected = datetime(2026, 3, 2, 8, 20, tzinfo=SH)
    await world.conn.execute(
        "INSERT INTO edge_sequence (edge_pk, high_seq, messages) VALUES (%s, 500, 480)", (edge,)
    )
    await world.conn.execute(
        "INSERT INTO sequence_gap (edge_pk, first_seq, last_seq, detected_at)"
        " VALUES (%s, 100, 104, %s), (%s, 300, 314, %s)",
        (edge, detected, edge, detected),
    )
    await world.conn.execute(
        "INSERT INTO sequence_event (edge_pk, kind, first_seq, last_seq, detected_at) VALUES"
        " (%s, 'gap', 100, 109, %s), (%s, 'late', 105, 109, %s), (%s, 'replay', 7, 7, %s)",
        (edge, detected, edge, detected + timedelta(minutes=5),
         edge, detected - timedelta(hours=1)),
    )  # fmt: skip
    await world.conn.commit()
    body = (await api.as_("eng_nb1").get(_edge(NB1, "gaps") + f"?{_RANGE}")).json()
    assert (body["high_seq"], body["messages"], body["missing"]) == (500, 480, 20)
    assert [(g["first_seq"], g["last_seq"], g["missing"]) for g in body["open_gaps"]] == [
        (100, 104, 5),
        (300, 314, 15),
    ]
    assert body["open_gaps"][0]["detected_at"] == "2026-03-02T08:20:00+08:00"
    assert [(e["kind"], e["kind_label"], e["count"]) for e in body["events"]] == [
        ("gap", "缺失 Gap", 10),
        ("late", "迟到补齐 Late arrival", 5),
    ]  # the replay of 07:20 is before the range
    cut = (await api.as_("eng_nb1").get(_edge(NB1, "gaps") + f"?{_RANGE}&limit=1")).json()
    assert (len(cut["open_gaps"]), cut["open_truncated"], cut["missing"]) == (1, True, 20)
    assert (len(cut["events"]), cut["events_truncated"]) == (1, True)


# --- zones ---------------------------------------------------------------------------


async def test_times_come_back_in_the_enterprise_zone(api: ApiClient, world: World) -> None:
    t = (await _metrics(world, "temperature"))["temperature"]
    m01 = world.device(NB1, "M01")
    instant = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)  # 08:30 in Shanghai, 06:30 in Urumqi
    ms = int(instant.timestamp() * 1000)
    await world.write(
        FactBatch(
            metrics=[MetricRow(m01, t, ms, 1.0)], states=[StateRow(m01, ms, StateClass.RUNNING)]
        )
    )
    client = api.as_("eng_nb1")
    url = _series_url(NB1, "M01", "temperature", "2026-03-02T00:00:00Z", "2026-03-02T01:00:00Z",
                      "&bucket=PT1H")  # fmt: skip
    shanghai = (await client.get(url)).json()
    assert shanghai["time_zone"] == "Asia/Shanghai"
    assert shanghai["start"] == "2026-03-02T08:00:00+08:00"
    assert shanghai["buckets"][0]["start"] == "2026-03-02T08:00:00+08:00"

    await world.conn.execute(
        "UPDATE enterprise SET time_zone = 'Asia/Urumqi' WHERE credit_code = %s", (NB1,)
    )
    await world.conn.commit()
    urumqi = (await client.get(url)).json()
    assert urumqi["time_zone"] == "Asia/Urumqi"
    assert urumqi["start"] == "2026-03-02T06:00:00+06:00"
    assert urumqi["buckets"][0]["start"] == "2026-03-02T06:00:00+06:00"
    states = (await client.get(_states_url(NB1, "M01", "2026-03-02T00:00:00Z",
                                           "2026-03-02T01:00:00Z"))).json()  # fmt: skip
    assert [i["start"] for i in states["intervals"]] == [
        "2026-03-02T06:00:00+06:00",
        "2026-03-02T06:30:00+06:00",
    ]
    latest = (await client.get(f"/api/v1/enterprises/{NB1}/devices/M01/metrics")).json()
    assert latest["metrics"][0]["time"] == "2026-03-02T06:30:00+06:00"


# --- scope ---------------------------------------------------------------------------


async def _seed_everything(world: World) -> None:
    """Distinctive numbers on NB1's M01 and edge, so an answer that leaked any would show."""
    t = (await _metrics(world, "temperature"))["temperature"]
    m01, edge = world.device(NB1, "M01"), world.edges["edge-nb1"]
    await world.write(
        FactBatch(
            metrics=[MetricRow(m01, t, at(8, 30), 4242.4242)],
            states=[StateRow(m01, at(8, 30), StateClass.RUNNING, reason="secret-reason")],
            counts=[CountRow(m01, at(8, 30), 0, 987654)],
            connectivity=[ConnectivityRow(m01, at(8, 30), True, edge, "secret-reason")],
            edge_status=[EdgeStatusRow(edge, at(8, 30), True, "secret-reason", 31337, "sw-9")],
        )
    )


@pytest.mark.parametrize("persona", ["op_nb_mold", "analyst_ningbo", "analyst_zj", "nobody"])
async def test_cluster_and_regional_roles_get_403_and_no_numbers(
    api: ApiClient, world: World, persona: str
) -> None:
    await _seed_everything(world)
    client = api.as_(persona)
    for case in CASES:
        response = await client.get(case.target(NB1))
        assert response.status_code == 403, (case.template, persona, response.text)
        assert set(response.json()) == {"type", "title", "status", "detail", "instance"}
        for secret in ("4242", "987654", "31337", "secret-reason", "sw-9", "RUNNING", "M01"):
            assert secret not in response.text.replace(response.json()["instance"], "")
    # And the admin sees them, so the numbers were there to leak.
    admin = api.as_("admin")
    assert "4242.4242" in (await admin.get(_dev(NB1, "metrics"))).text
    assert "987654" in (await admin.get(_dev(NB1, f"counts?{_RANGE}"))).text
    assert "sw-9" in (await admin.get(_edge(NB1, "status"))).text


async def test_outside_the_scope_is_the_same_404_as_missing(api: ApiClient, world: World) -> None:
    await _seed_everything(world)
    client = api.as_("eng_nb1")
    pairs = [
        (_dev(WZ, "metrics"), f"/api/v1/enterprises/{WZ}/devices/S99/metrics", "S01", "S99"),
        (_dev(WZ, f"states?{_RANGE}"), f"/api/v1/enterprises/{WZ}/devices/S99/states?{_RANGE}",
         "S01", "S99"),
        (_edge(WZ, "status"), f"/api/v1/enterprises/{WZ}/edges/edge-zz/status", "edge-wz",
         "edge-zz"),
        (f"/api/v1/enterprises/{WZ}/latest", f"/api/v1/enterprises/{NB1[:-1]}X/latest", WZ,
         f"{NB1[:-1]}X"),
        # NB1's own device under WZ's credit code is not NB1's device.
        (f"/api/v1/enterprises/{WZ}/devices/M01/metrics",
         f"/api/v1/enterprises/{WZ}/devices/M99/metrics", "M01", "M99"),
    ]  # fmt: skip
    for outside, missing, key, other in pairs:
        a, b = await client.get(outside), await client.get(missing)
        assert a.status_code == b.status_code == 404, (outside, a.text)
        body_a, body_b = a.json(), b.json()
        body_a["instance"] = body_b["instance"] = ""
        assert body_a == {**body_b, "detail": body_b["detail"].replace(other, key)}


# --- the OpenAPI document ------------------------------------------------------------


def test_every_field_of_the_telemetry_answers_has_an_example() -> None:
    spec = create_app(make_settings("postgresql://unused")).openapi()
    schemas: dict[str, Any] = spec["components"]["schemas"]
    names = {
        "DeviceMetrics", "DeviceLatest", "MetricLatest", "EnterpriseLatest", "MetricSeries",
        "SeriesBucket", "StateTimeline", "StateInterval", "StateTotal", "ProductionCounts",
        "CountBucket", "CountTotals", "ConnectivityHistory", "ConnectivityEvent", "EdgeStatus",
        "EdgeStatusRecord", "SequenceGaps", "SequenceGap", "SequenceEvent",
    }  # fmt: skip
    missing = [
        f"{name}.{field}"
        for name in sorted(names)
        for field, prop in schemas[name]["properties"].items()
        if "examples" not in prop
    ]
    assert missing == []
