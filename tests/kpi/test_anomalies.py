"""Counter anomalies on the platform (issue 9 point 9), against real PostgreSQL.

The anomalies are made by the edge's own counter code, travel through the wire
contract and ingest's converter into ``device_event``, and are then listed, accepted
(production_count and the rollups follow) or dropped (recorded, nothing counted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import TypeVar

import pytest
from typer.testing import CliRunner

from edge.counters import CumulativeCounter, Step, anomaly_event
from ingest.convert import Converter, Inbound
from ingest.directory import Directory
from tests.kpi.seed import ENT, T0, at, seed
from zhizao.cli import app
from zhizao.errors import InvalidValue
from zhizao.intervals import HOUR_MS
from zhizao.storage.anomalies import (
    Decision,
    Period,
    accept,
    drop,
    list_anomalies,
    pending_count,
)
from zhizao.storage.connection import Conn, connect
from zhizao.storage.facts import write_facts
from zhizao.storage.kpi import Level, OeeScope
from zhizao.storage.rollups import run_rollups
from zhizao.wire import Point, PointKind, UplinkBatch, data_topic, encode_batch

T = TypeVar("T")
EDGE = "nb-edge-01"
DAY = date(2026, 3, 2)  # T0 is 08:00 in Shanghai


class _Lookups:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def run_lookup(self, stage: str, work: Callable[[Conn], Awaitable[T]]) -> T:
        return await work(self.conn)


def edge_points() -> list[Point]:
    """PRESS-1 (ideal cycle 10 s): 13 good parts in a minute are counted, then 14 in the
    next minute are not; a reject counter jumps by 500 in ten seconds."""
    good = CumulativeCounter(ideal_cycle_s=10)
    reject = CumulativeCounter(ideal_cycle_s=10)
    out: list[Point] = []
    for counter, name, readings in (
        (good, "good", [(100, at(0)), (113, at(1 / 60)), (127, at(2 / 60))]),
        (reject, "reject", [(7, at(2 / 60)), (507, at(2 / 60 + 10 / 3600))]),
    ):
        for total, ts in readings:
            step = counter.update(total, ts)
            if step.step.is_anomaly:
                out.append(
                    anomaly_event("PRESS-1", name, ts=ts, step=step, total=total, guard=counter)
                )
            elif step.step is Step.COUNT:
                out.append(
                    Point(device="PRESS-1", ts=ts, kind=PointKind.COUNT, name=name,
                          value=step.increment)
                )  # fmt: skip
    return out


async def ingest(conn: Conn, points: list[Point], seq: int = 0) -> None:
    batch = UplinkBatch(enterprise=ENT, edge=EDGE, seq=seq, sent_at=at(1), points=points)
    converter = Converter(Directory(_Lookups(conn)), max_future_ms=60_000)
    converted = await converter.convert(Inbound(data_topic(ENT, EDGE), encode_batch(batch)))
    assert converted.dead == []
    await write_facts(conn, converted.facts)
    await conn.commit()


async def scalar(conn: Conn, query: str, *params: object) -> object:
    cur = await conn.execute(query, params)  # type: ignore[arg-type]
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def hour_good(conn: Conn, device: int) -> int:
    value = await scalar(
        conn,
        "SELECT coalesce(sum(good), 0) FROM rollup_device_hour WHERE device_id = %s AND hour = %s",
        device,
        T0,
    )
    return int(str(value))


async def test_anomalies_are_listed_accepted_into_production_or_dropped(conn: Conn) -> None:
    ids = await seed(conn)
    press = ids["PRESS-1"]
    await ingest(conn, edge_points())
    await run_rollups(conn, until=datetime(2026, 3, 2, 1, tzinfo=UTC))
    await conn.commit()
    assert await hour_good(conn, press) == 13

    listed = await list_anomalies(conn, OeeScope(Level.ENTERPRISE, ENT), Period(DAY, DAY))
    assert [(a.device, a.counter, a.increment, a.pending) for a in listed] == [
        ("PRESS-1", "good", 14, True),
        ("PRESS-1", "reject", 500, True),
    ]
    good, reject = listed
    assert (good.detail["limit"], good.detail["elapsed_ms"]) == (13, 60_000)
    assert good.local_time.isoformat() == "2026-03-02T08:02:00+08:00"
    assert reject.detail["limit"] == 3  # 10 s / 10 s * 2 + 1
    # Another day, another device: nothing.
    assert await list_anomalies(conn, None, Period(date(2026, 3, 3), date(2026, 3, 3))) == []
    scope = OeeScope(Level.DEVICE, "CNC-1", ENT)
    assert await pending_count(conn, scope, Period(DAY, DAY)) == 0
    assert await pending_count(conn, OeeScope(Level.LINE, "L2", ENT), Period(DAY, DAY)) == 2

    # The same batch again (an edge re-sending it): nothing new.
    await ingest(conn, edge_points())
    assert len(await list_anomalies(conn)) == 2

    await conn.execute("DELETE FROM rollup_dirty")
    await conn.commit()
    decided = await accept(conn, good.id, by="王工", note="counter preset after tool change")
    await conn.commit()
    assert (decided.decision, decided.quantity, decided.decided_by) == (
        Decision.ACCEPTED,
        14,
        "王工",
    )
    assert decided.decided_at is not None
    rows = await conn.execute(
        "SELECT time, counter, quantity FROM production_count WHERE device_id = %s ORDER BY time",
        (press,),
    )
    assert [(int(t.timestamp() * 1000), c, q) for t, c, q in await rows.fetchall()] == [
        (at(1 / 60), 0, 13),
        (at(2 / 60), 0, 14),
    ]
    # The fact trigger marked the anomaly's hour dirty; a plain rollup run counts it.
    marks = await scalar(
        conn,
        "SELECT count(*) FROM rollup_dirty WHERE device_id = %s AND hour = %s",
        press,
        datetime.fromtimestamp(at(2 / 60) // HOUR_MS * HOUR_MS / 1000, UTC),
    )
    assert int(str(marks)) >= 1
    await run_rollups(conn, until=datetime(2026, 3, 2, 1, tzinfo=UTC))
    await conn.commit()
    assert await hour_good(conn, press) == 27

    dropped = await drop(conn, reject.id, by="王工", note="sensor glitch")
    await conn.commit()
    assert (dropped.decision, dropped.quantity, dropped.note) == (
        Decision.DROPPED,
        None,
        "sensor glitch",
    )
    rejects = await scalar(
        conn,
        "SELECT coalesce(sum(quantity), 0) FROM production_count WHERE counter = 1",
    )
    assert int(str(rejects)) == 0
    assert await list_anomalies(conn, pending_only=True) == []
    assert [a.decision for a in await list_anomalies(conn)] == [
        Decision.ACCEPTED,
        Decision.DROPPED,
    ]
    # A decision is final, and an id that does not exist is named.
    with pytest.raises(InvalidValue, match="a decision is final"):
        await drop(conn, good.id, by="李工")
    await conn.rollback()
    with pytest.raises(InvalidValue, match="no counter anomaly has this id"):
        await accept(conn, 999_999, by="李工")
    await conn.rollback()
    assert await hour_good(conn, press) == 27


async def _good_id(db_url: str) -> int:
    conn = await connect(db_url)
    async with conn:
        return next(a.id for a in await list_anomalies(conn) if a.counter == "good")


def test_kpi_commands_show_and_decide_anomalies(db_url: str) -> None:
    async def prepare() -> None:
        conn = await connect(db_url)
        async with conn:
            await seed(conn)
            await ingest(conn, edge_points())
            await run_rollups(conn, until=datetime(2026, 3, 2, 1, tzinfo=UTC))
            await conn.commit()

    asyncio.run(prepare())
    runner = CliRunner(env={"COLUMNS": "200"})  # a wide terminal: rows on one line each
    oee = runner.invoke(
        app, ["kpi", "oee", "enterprise", ENT, "--date", "2026-03-02", "--db-url", db_url]
    )
    assert oee.exit_code == 0, oee.output
    assert "2 条计数异常待处理 counter anomalies pending" in oee.output
    assert f"zhizao kpi anomalies enterprise {ENT} --from 2026-03-02 --to 2026-03-02" in oee.output

    listed = runner.invoke(
        app, ["kpi", "anomalies", "enterprise", ENT, "--from", "2026-03-02", "--to",
              "2026-03-02", "--db-url", db_url],
    )  # fmt: skip
    assert listed.exit_code == 0, listed.output
    assert "2026-03-02T08:02:00+08:00" in listed.output
    assert "待处理 pending" in listed.output
    first = asyncio.run(_good_id(db_url))

    accepted = runner.invoke(
        app, ["kpi", "anomalies", "--accept", str(first), "--by", "王工", "--db-url", db_url]
    )
    assert accepted.exit_code == 0, accepted.output
    assert "accepted" in accepted.output
    assert "+14 good for PRESS-1" in accepted.output
    again = runner.invoke(
        app, ["kpi", "anomalies", "--drop", str(first), "--by", "王工", "--db-url", db_url]
    )
    assert again.exit_code == 2
    assert "a decision is final" in again.output
    oee = runner.invoke(
        app, ["kpi", "oee", "enterprise", ENT, "--date", "2026-03-02", "--db-url", db_url]
    )
    assert "1 条计数异常待处理" in oee.output
    everything = runner.invoke(app, ["kpi", "anomalies", "--all", "--db-url", db_url])
    assert "已采纳 accepted · 王工" in everything.output
