"""Networking rate (设备联网率) and NC rate (数控化率): pure aggregation and stored figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.kpi.seed import ENT, ENT2, at, seed, write
from zhizao.calendar import from_ms
from zhizao.networking import (
    DeviceDay,
    EnterpriseFacts,
    GroupBy,
    Kind,
    Method,
    RateParts,
    Scope,
    aggregate,
    parts_by_enterprise,
)
from zhizao.storage.connection import Conn
from zhizao.storage.facts import (
    ConnectivityRow,
    EdgeStatusRow,
    FactBatch,
    MetricRow,
    StateRow,
)
from zhizao.storage.kpi import (
    current_networking_rates,
    nc_rates,
    networking_evidence,
    networking_parts,
    networking_rates,
)
from zhizao.storage.rollups import run_rollups
from zhizao.wire import StateClass as S

DAY = date(2026, 3, 2)  # T0 = 08:00 local on this day

_A = EnterpriseFacts("A", "a", "330206", "C3670", ("NB-AUTO",), True, True)
_B = EnterpriseFacts("B", "b", "330211", "C3411", ("NB-AUTO",), True, False)
_C = EnterpriseFacts("C", "c", "330110", "C1711", (), False, False)
_ENTS = {e.credit_code: e for e in (_A, _B, _C)}


def _figure(figures: list, group: str, method: Method) -> tuple[float | None, float, float]:
    [f] = [f for f in figures if f.group == group and f.method is method]
    return f.rate, f.numerator, f.denominator


def test_ratio_of_sums_and_mean_of_enterprise_rates_differ_and_are_labelled() -> None:
    parts = {"A": RateParts(9, 10), "B": RateParts(0, 2), "C": RateParts(1, 4)}
    figures = aggregate(Kind.NETWORKING, parts, _ENTS, GroupBy.CITY)
    assert _figure(figures, "330200", Method.RATIO_OF_SUMS) == (9 / 12, 9, 12)
    assert _figure(figures, "330200", Method.MEAN_OF_ENTERPRISE_RATES) == ((0.9 + 0) / 2, 0.9, 2)
    assert _figure(figures, "330100", Method.RATIO_OF_SUMS) == (0.25, 1, 4)
    province = aggregate(Kind.NETWORKING, parts, _ENTS, GroupBy.PROVINCE)
    assert _figure(province, "330000", Method.RATIO_OF_SUMS) == (10 / 16, 10, 16)
    assert {f.kind for f in figures} == {Kind.NETWORKING}


def test_scopes_restrict_the_enterprises() -> None:
    parts = {"A": RateParts(9, 10), "B": RateParts(0, 2), "C": RateParts(1, 4)}
    key = aggregate(Kind.NETWORKING, parts, _ENTS, GroupBy.PROVINCE, Scope.KEY_ENTERPRISE)
    assert _figure(key, "330000", Method.RATIO_OF_SUMS) == (0.9, 9, 10)
    above = aggregate(Kind.NETWORKING, parts, _ENTS, GroupBy.INDUSTRY, Scope.ABOVE_DESIGNATED_SIZE)
    assert sorted({f.group for f in above}) == ["C34", "C36"]
    assert all(f.scope is Scope.ABOVE_DESIGNATED_SIZE for f in above)


def test_enterprise_with_no_device_is_left_out_of_the_mean() -> None:
    parts = {"A": RateParts(1, 2), "B": RateParts(0, 0)}
    figures = aggregate(Kind.NETWORKING, parts, _ENTS, GroupBy.CLUSTER)
    assert _figure(figures, "NB-AUTO", Method.MEAN_OF_ENTERPRISE_RATES) == (0.5, 0.5, 1)


def test_device_days_need_own_data_or_own_online_report() -> None:
    days = [
        DeviceDay("A", "d1", True, good_points=5),
        DeviceDay("A", "d2", True, online_reported=True),
        DeviceDay("A", "d3", True),  # silent: its gateway being online does not count
        DeviceDay("A", "d4", False, good_points=5),  # not in service: in neither count
    ]
    assert parts_by_enterprise(days) == {"A": RateParts(2, 3)}


async def _networking_day(conn: Conn) -> dict[str, int]:
    ids = await seed(conn)
    edge = ids["edge:nb-edge-01"]
    await write(conn, FactBatch(
        metrics=[
            MetricRow(ids["CNC-1"], 1, at(1), 1.0, 0),  # good point: networked
            MetricRow(ids["LOOM-1"], 1, at(2), 1.0, 2),  # bad quality only: not networked
        ],
        states=[StateRow(ids["CNC-2"], at(0.5), S.RUNNING, quality=2)],  # bad: not networked
        connectivity=[
            ConnectivityRow(ids["PRESS-1"], at(3), True, edge, "session up"),  # networked
            ConnectivityRow(ids["CNC-2"], at(3), False, edge, "session lost"),
        ],
        edge_status=[EdgeStatusRow(edge, at(0), True)],  # the gateway is online all day
    ))  # fmt: skip
    await run_rollups(conn, since=from_ms(at(-8)), until=from_ms(at(16)))
    return ids


async def test_gateway_online_does_not_make_its_devices_networked(conn: Conn) -> None:
    await _networking_day(conn)
    assert await networking_parts(conn, DAY, DAY) == {
        ENT: RateParts(2, 3),  # CNC-1 (data), PRESS-1 (online report); not CNC-2
        ENT2: RateParts(0, 2),
    }
    evidence = await networking_evidence(conn, DAY, GroupBy.ENTERPRISE, ENT)
    assert [(e.device, e.counted, e.excluded, e.reason) for e in evidence] == [
        ("AC-1", False, True, "not_production_equipment"),  # listed, with why it is left out
        ("CNC-1", True, False, "good_points"),
        ("CNC-2", False, False, "silent"),
        ("PRESS-1", True, False, "online_reported"),
    ]
    assert evidence[1].last_seen == from_ms(at(1))
    assert evidence[2].last_seen is None


async def test_evidence_lists_every_device_with_its_reason_in_natural_order(conn: Conn) -> None:
    ids = await seed(conn)
    # Ten more looms D1..D10 at the Hangzhou enterprise, inserted out of order; D3 enters
    # service the day after, D4 left it on that day, D5 is auxiliary equipment.
    for n in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9):
        await conn.execute(
            "INSERT INTO device (enterprise_id, code, name, device_type, commissioned_on,"
            " decommissioned_on, is_production_equipment)"
            " SELECT id, %s, %s, 'loom', %s, %s, %s FROM enterprise WHERE credit_code = %s",
            (f"D{n}", f"织机 D{n}", date(2026, 3, 3) if n == 3 else None,
             DAY if n == 4 else None, n != 5, ENT2),
        )  # fmt: skip
    cur = await conn.execute("SELECT code, id FROM device WHERE code LIKE 'D%%'")
    ids.update({str(c): int(i) for c, i in await cur.fetchall()})
    await conn.commit()
    await write(conn, FactBatch(metrics=[
        MetricRow(ids["D2"], 1, at(1), 1.0), MetricRow(ids["D10"], 1, at(-30), 1.0),
    ]))  # fmt: skip
    await run_rollups(conn, until=from_ms(at(16)))
    rows = await networking_evidence(conn, DAY, GroupBy.ENTERPRISE, ENT2)
    assert [(e.device, e.reason) for e in rows] == [
        ("D1", "silent"),
        ("D2", "good_points"),
        ("D3", "not_yet_commissioned"),
        ("D4", "decommissioned"),
        ("D5", "not_production_equipment"),
        ("D6", "silent"), ("D7", "silent"), ("D8", "silent"), ("D9", "silent"),
        ("D10", "silent"),  # seen the day before: not counted, but its last seen is shown
        ("LOOM-1", "silent"),
        ("LOOM-2", "silent"),
    ]  # fmt: skip
    by_code = {e.device: e for e in rows}
    assert by_code["D10"].last_seen == from_ms(at(-30))
    assert by_code["D2"].counted
    assert not by_code["D2"].excluded
    assert [e.device for e in rows if e.excluded] == ["D3", "D4", "D5"]
    # The figure and the evidence agree: counted / (listed − excluded).
    parts = await networking_parts(conn, DAY, DAY)
    assert parts[ENT2] == RateParts(1, len(rows) - 3)


async def test_period_rates_by_city_with_labels(conn: Conn) -> None:
    await _networking_day(conn)
    figures = await networking_rates(conn, DAY, DAY + timedelta(days=1), GroupBy.CITY)
    # Two days in service for five production devices; only the first day had data.
    assert _figure(figures, "330200", Method.RATIO_OF_SUMS) == (2 / 6, 2, 6)
    assert _figure(figures, "330100", Method.RATIO_OF_SUMS) == (0.0, 0, 4)
    province = await networking_rates(conn, DAY, DAY, GroupBy.PROVINCE, Scope.KEY_ENTERPRISE)
    assert _figure(province, "330000", Method.RATIO_OF_SUMS) == (2 / 3, 2, 3)
    assert _figure(province, "330000", Method.MEAN_OF_ENTERPRISE_RATES) == (2 / 3, 2 / 3, 1)


async def test_current_rate_uses_a_window(conn: Conn) -> None:
    await _networking_day(conn)
    now = from_ms(at(20))
    figures = await current_networking_rates(conn, now, GroupBy.ENTERPRISE)
    assert _figure(figures, ENT, Method.RATIO_OF_SUMS) == (2 / 3, 2, 3)
    short = await current_networking_rates(conn, now, GroupBy.ENTERPRISE, window_h=17.5)
    assert _figure(short, ENT, Method.RATIO_OF_SUMS) == (1 / 3, 1, 3)  # only PRESS-1 at +3 h


async def test_nc_rate_and_key_process_variant(conn: Conn) -> None:
    await seed(conn)
    figures = await nc_rates(conn, DAY, GroupBy.ENTERPRISE)
    assert _figure(figures, ENT, Method.RATIO_OF_SUMS) == (2 / 3, 2, 3)  # 2 CNCs of 3
    assert _figure(figures, ENT2, Method.RATIO_OF_SUMS) == (0.5, 1, 2)
    key = await nc_rates(conn, DAY, GroupBy.PROVINCE, key_process=True)
    assert _figure(key, "330000", Method.RATIO_OF_SUMS) == (0.5, 1, 2)  # CNC-1 and PRESS-1
    assert {f.kind for f in key} == {Kind.NC_KEY_PROCESS}


async def test_nc_rate_follows_service_dates(conn: Conn) -> None:
    await seed(conn, commissioned=date(2026, 3, 4))
    before = await nc_rates(conn, DAY, GroupBy.ENTERPRISE)
    after = await nc_rates(conn, date(2026, 3, 4), GroupBy.ENTERPRISE)
    assert _figure(before, ENT, Method.RATIO_OF_SUMS) == (0.5, 1, 2)
    assert _figure(after, ENT, Method.RATIO_OF_SUMS) == (2 / 3, 2, 3)


@pytest.mark.parametrize("when", [datetime(2026, 3, 2, 15, 59, tzinfo=UTC)])
async def test_local_day_decides_the_networked_day(conn: Conn, when: datetime) -> None:
    ids = await seed(conn)
    # 15:59 UTC is 23:59 local on the 2nd: the point counts for the 2nd, not the 3rd.
    await write(
        conn, FactBatch(metrics=[MetricRow(ids["LOOM-2"], 1, int(when.timestamp() * 1000), 1.0)])
    )
    await run_rollups(conn, since=when - timedelta(hours=1), until=when + timedelta(hours=2))
    parts = await networking_parts(conn, DAY, DAY)
    assert parts[ENT2] == RateParts(1, 2)
    nxt = await networking_parts(conn, DAY + timedelta(days=1), DAY + timedelta(days=1))
    assert nxt[ENT2] == RateParts(0, 2)


async def test_period_rate_counts_only_days_in_service(conn: Conn) -> None:
    ids = await seed(conn, commissioned=date(2026, 3, 4), decommissioned=date(2026, 3, 6))
    d = ids["CNC-1"]
    # A good point every local day from the 2nd to the 7th; in service on the 4th and 5th.
    await write(conn, FactBatch(metrics=[MetricRow(d, 1, at(24 * k), 1.0) for k in range(6)]))
    await run_rollups(conn, since=from_ms(at(-8)), until=from_ms(at(24 * 6)))
    parts = await networking_parts(conn, DAY, DAY + timedelta(days=5))
    # CNC-2 and PRESS-1: 6 days each, silent; CNC-1: 2 days in service, both networked.
    assert parts[ENT] == RateParts(2, 14)
