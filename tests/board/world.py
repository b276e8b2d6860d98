"""The board tests' world: the API tests' province (tests/api/world.py: NB1, NB2, WZ,
clusters NB-MOLD and WZ-SHOE, one persona per role) with one local day of facts,
rolled up, so that every page of the board has figures.

Monday 2026-03-02, Asia/Shanghai; NB1 works two shifts (白班 08:00-20:00, 夜班
20:00-08:00), the others have no calendar:

    NB1 M01  runs 08:00-12:00, idles 1 min, runs to 16:00, breaks down 30 min, runs to
             19:00, idles; 700 + 100 good, 10 rejects; a temperature every 10 min
    NB1 M02  setup 08:30, runs 09:00-15:00, planned stop, loses its connection at 18:00;
             400 good
    NB1 M03  a temperature (not production equipment)
    NB2 P01  runs 09:00-17:00, idles; 900 good, 5 rejects; a temperature
    NB2 P02  silent (never connected)
    WZ  S01  runs 08:00-20:00, idles; 1,200 good; a temperature
    WZ  S02  only an online report of its edge at 09:00

``more_parts`` adds facts later (a test that watches a figure change on screen).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.api.conftest import _seed
from tests.api.world import NB1, NB2, WZ
from zhizao.calendar import ShiftCalendar, to_ms
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
from zhizao.storage.rollups import run_rollups, store_calendars
from zhizao.wire import StateClass as S

SH = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 3, 2)
GOOD, REJECT = 0, 1


def at(hh: int, mm: int = 0, day: date = DAY) -> int:
    return to_ms(datetime(day.year, day.month, day.day, hh, mm, tzinfo=SH))


def calendar() -> ShiftCalendar:
    return ShiftCalendar.model_validate({
        "enterprise": NB1,
        "name": "两班制",
        "shifts": [
            {"name": "白班", "start": "08:00", "end": "20:00"},
            {"name": "夜班", "start": "20:00", "end": "08:00"},
        ],
    })  # fmt: skip


async def ids(conn: Conn) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    cur = await conn.execute(
        "SELECT e.credit_code, d.code, d.id FROM device d JOIN enterprise e"
        " ON e.id = d.enterprise_id"
    )
    devices = {(str(cc), str(code)): int(pk) for cc, code, pk in await cur.fetchall()}
    cur = await conn.execute("SELECT edge_id, id FROM edge_gateway")
    edges = {str(e): int(pk) for e, pk in await cur.fetchall()}
    return devices, edges


def _temperatures(device: int, metric: int, first: int, last: int) -> list[MetricRow]:
    return [
        MetricRow(device, metric, at(hh, mm), 20.0 + hh + mm / 60)
        for hh in range(first, last)
        for mm in range(0, 60, 10)
    ]


async def rollup(conn: Conn) -> None:
    await conn.commit()
    await run_rollups(conn, until=datetime(2026, 3, 4, tzinfo=SH), history_days=3)


async def seed_day(url: str) -> dict[str, int]:
    """The personas and the ledger (tests/api), then the day's facts, rolled up."""
    user_ids = await _seed(url)
    conn = await connect(url)
    async with conn:
        dev, edges = await ids(conn)
        temp = (await metric_ids(conn, ["temperature"]))["temperature"]
        m01, m02, m03 = dev[NB1, "M01"], dev[NB1, "M02"], dev[NB1, "M03"]
        p01, s01, s02 = dev[NB2, "P01"], dev[WZ, "S01"], dev[WZ, "S02"]
        await store_calendars(conn, [calendar()])
        await write_facts(conn, FactBatch(
            states=[
                StateRow(m01, at(8), S.RUNNING), StateRow(m01, at(12), S.IDLE),
                StateRow(m01, at(12, 1), S.RUNNING), StateRow(m01, at(16), S.UNPLANNED_STOP,
                                                              reason="spindle alarm 2041"),
                StateRow(m01, at(16, 30), S.RUNNING), StateRow(m01, at(19), S.IDLE),
                StateRow(m02, at(8, 30), S.SETUP), StateRow(m02, at(9), S.RUNNING),
                StateRow(m02, at(15), S.PLANNED_STOP),
                StateRow(p01, at(9), S.RUNNING), StateRow(p01, at(17), S.IDLE),
                StateRow(s01, at(8), S.RUNNING), StateRow(s01, at(20), S.IDLE),
            ],
            counts=[
                CountRow(m01, at(10), GOOD, 700), CountRow(m01, at(14), REJECT, 10),
                CountRow(m01, at(18), GOOD, 100), CountRow(m02, at(12), GOOD, 400),
                CountRow(p01, at(12), GOOD, 900), CountRow(p01, at(13), REJECT, 5),
                CountRow(s01, at(12), GOOD, 1200),
            ],
            metrics=[
                *_temperatures(m01, temp, 8, 20), *_temperatures(m02, temp, 8, 18),
                *_temperatures(m03, temp, 8, 20), *_temperatures(p01, temp, 9, 17),
                *_temperatures(s01, temp, 8, 20),
            ],
            connectivity=[
                ConnectivityRow(m02, at(18), False, edges["edge-nb1"], "OPC UA session lost"),
                ConnectivityRow(s02, at(9), True, edges["edge-wz"], "session up"),
            ],
            edge_status=[
                EdgeStatusRow(edges["edge-nb1"], at(7, 58), True, "connected", 0),
                EdgeStatusRow(edges["edge-wz"], at(8, 58), True, "connected", 0),
            ],
        ))  # fmt: skip
        await rollup(conn)
    return user_ids


async def more_parts(url: str, quantity: int, *, at_ms: int | None = None) -> None:
    """NB1 M01 makes ``quantity`` more good parts at 19:30 (or ``at_ms``); rolled up."""
    conn = await connect(url)
    async with conn:
        dev, _ = await ids(conn)
        when = at_ms if at_ms is not None else at(19, 30)
        await write_facts(conn, FactBatch(counts=[CountRow(dev[NB1, "M01"], when, GOOD, quantity)]))
        await rollup(conn)


async def fresh_point(url: str, when: datetime) -> None:
    """A temperature of NB1 M01 at ``when`` (e.g. now): the line has new data."""
    conn = await connect(url)
    async with conn:
        dev, _ = await ids(conn)
        temp = (await metric_ids(conn, ["temperature"]))["temperature"]
        await write_facts(
            conn, FactBatch(metrics=[MetricRow(dev[NB1, "M01"], temp, to_ms(when), 42.0)])
        )
        await conn.commit()


__all__ = ["DAY", "NB1", "NB2", "WZ", "more_parts", "seed_day", "timedelta"]
