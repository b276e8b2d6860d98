"""Counter anomalies: increments the edge refused to count, for a person to judge.

The edge is the one place that sees consecutive counter totals and their times, so it
judges whether an increment is believable (``edge/counters.py``: beyond
``max_increment``, or more parts than the ideal cycle time allows in the elapsed
time). What it refuses arrives as a device event ``counter_anomaly.good`` or
``counter_anomaly.reject`` whose value is a JSON object (increment, rule, limit,
elapsed time, the totals before and after), stored in ``device_event`` like every
event. Migration 0008 gives each one an id in ``counter_anomaly`` (a trigger on
``device_event``) and a place for the decision:

- **accept**: the increment is inserted into ``production_count`` at the anomaly's
  time, so the fact table's trigger marks that device-hour dirty and the next rollup
  run counts it; who and when are recorded;
- **drop**: the decision is recorded, nothing else changes.

Nothing is deleted and a decision is final: an accepted count is a fact like any
other (undoing it would need a correction the fact tables do not model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import sql

from zhizao.errors import InvalidValue
from zhizao.storage.connection import Conn
from zhizao.storage.kpi import OeeScope, scope_filter
from zhizao.wire import COUNTER_ANOMALY_EVENT

_INT4_MAX = 2**31 - 1
COUNTERS = ("good", "reject")


class Decision(StrEnum):
    ACCEPTED = "accepted"
    DROPPED = "dropped"

    @property
    def label_zh(self) -> str:
        return {"accepted": "已采纳", "dropped": "已舍弃"}[self.value]


@dataclass(frozen=True, slots=True)
class Anomaly:
    id: int
    enterprise: str
    zone: str
    device: str
    device_name: str
    counter: str  # good or reject
    time: datetime  # UTC
    increment: int
    detail: dict[str, Any]  # the event's JSON value as the edge sent it
    decision: Decision | None
    quantity: int | None
    decided_by: str | None
    decided_at: datetime | None
    note: str | None

    @property
    def local_time(self) -> datetime:
        return self.time.astimezone(ZoneInfo(self.zone))

    @property
    def pending(self) -> bool:
        return self.decision is None


@dataclass(frozen=True, slots=True)
class Period:
    """Local days ``first..last`` of each enterprise, or instants ``[start, end)``."""

    first: date | None = None
    last: date | None = None
    start: datetime | None = None
    end: datetime | None = None


_SELECT = """
    SELECT a.id, e.credit_code, e.time_zone, d.code, d.name, a.counter, a.time, ev.value,
           a.decision, a.quantity, a.decided_by, a.decided_at, a.note
    FROM counter_anomaly a
    JOIN device d ON d.id = a.device_id
    JOIN enterprise e ON e.id = d.enterprise_id
    JOIN device_event ev ON ev.device_id = a.device_id AND ev.time = a.time
         AND ev.name = %(prefix)s || CASE a.counter WHEN 0 THEN 'good' ELSE 'reject' END
"""


def _anomaly(row: tuple[Any, ...]) -> Anomaly:
    detail = json.loads(str(row[7]))
    return Anomaly(
        id=int(row[0]), enterprise=str(row[1]), zone=str(row[2]), device=str(row[3]),
        device_name=str(row[4]), counter=COUNTERS[int(row[5])], time=row[6],
        increment=int(detail["increment"]), detail=detail,
        decision=Decision(row[8]) if row[8] is not None else None,
        quantity=None if row[9] is None else int(row[9]), decided_by=row[10],
        decided_at=row[11], note=row[12],
    )  # fmt: skip


def _where(
    scope: OeeScope | None, period: Period, *, pending_only: bool
) -> tuple[sql.Composable, dict[str, Any]]:
    parts: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"prefix": f"{COUNTER_ANOMALY_EVENT}."}
    if scope is not None:
        fragment, scope_params = scope_filter(scope)
        parts.append(fragment)
        params.update(scope_params)
    if period.first is not None:
        params["first"] = period.first
        parts.append(sql.SQL("a.time >= (%(first)s::date::timestamp AT TIME ZONE e.time_zone)"))
    if period.last is not None:
        params["last"] = period.last
        parts.append(sql.SQL("a.time < ((%(last)s::date + 1)::timestamp AT TIME ZONE e.time_zone)"))
    if period.start is not None:
        params["start"] = period.start
        parts.append(sql.SQL("a.time >= %(start)s"))
    if period.end is not None:
        params["end"] = period.end
        parts.append(sql.SQL("a.time < %(end)s"))
    if pending_only:
        parts.append(sql.SQL("a.decision IS NULL"))
    return sql.SQL(" AND ").join(parts), params


async def list_anomalies(
    conn: Conn,
    scope: OeeScope | None = None,
    period: Period | None = None,
    *,
    pending_only: bool = False,
) -> list[Anomaly]:
    """Anomalies of a scope (None: every enterprise) and period, oldest first."""
    where, params = _where(scope, period or Period(), pending_only=pending_only)
    query = sql.SQL(_SELECT + " WHERE {where} ORDER BY a.time, d.code, a.counter").format(
        where=where
    )
    cur = await conn.execute(query, params)
    return [_anomaly(row) for row in await cur.fetchall()]


async def pending_count(conn: Conn, scope: OeeScope, period: Period) -> int:
    """How many anomalies of the scope and period wait for a decision (``kpi oee``)."""
    where, params = _where(scope, period, pending_only=True)
    query = sql.SQL(
        "SELECT count(*) FROM counter_anomaly a JOIN device d ON d.id = a.device_id"
        " JOIN enterprise e ON e.id = d.enterprise_id WHERE {where}"
    ).format(where=where)
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def _pending(conn: Conn, anomaly_id: int) -> Anomaly:
    """The anomaly, locked for the decision; refused if unknown or decided already."""
    cur = await conn.execute(
        sql.SQL(_SELECT + " WHERE a.id = %(id)s FOR UPDATE OF a"),
        {"prefix": f"{COUNTER_ANOMALY_EVENT}.", "id": anomaly_id},
    )
    row = await cur.fetchone()
    if row is None:
        raise InvalidValue("anomaly", anomaly_id, "no counter anomaly has this id")
    anomaly = _anomaly(row)
    if anomaly.decision is not None:
        when = anomaly.decided_at.isoformat() if anomaly.decided_at else "?"
        raise InvalidValue(
            "anomaly",
            anomaly_id,
            f"was {anomaly.decision.value} by {anomaly.decided_by} at {when}; a decision is final",
        )
    return anomaly


async def _decide(
    conn: Conn,
    anomaly: Anomaly,
    decision: Decision,
    *,
    by: str,
    note: str | None,
    quantity: int | None,
) -> Anomaly:
    await conn.execute(
        "UPDATE counter_anomaly SET decision = %s, quantity = %s, decided_by = %s,"
        " decided_at = now(), note = %s WHERE id = %s",
        (decision.value, quantity, by, note, anomaly.id),
    )
    return (await list_anomalies_by_id(conn, anomaly.id))[0]


async def list_anomalies_by_id(conn: Conn, *ids: int) -> list[Anomaly]:
    cur = await conn.execute(
        sql.SQL(_SELECT + " WHERE a.id = ANY(%(ids)s) ORDER BY a.id"),
        {"prefix": f"{COUNTER_ANOMALY_EVENT}.", "ids": list(ids)},
    )
    return [_anomaly(row) for row in await cur.fetchall()]


async def accept(conn: Conn, anomaly_id: int, *, by: str, note: str | None = None) -> Anomaly:
    """Count the anomaly's increment as production at its time, and record who did."""
    if not by.strip():
        raise InvalidValue("by", by, "say who decides (a name or login)")
    async with conn.transaction():
        anomaly = await _pending(conn, anomaly_id)
        if anomaly.increment > _INT4_MAX:
            raise InvalidValue(
                "anomaly", anomaly_id, f"increment {anomaly.increment} exceeds {_INT4_MAX}"
            )
        cur = await conn.execute(
            "INSERT INTO production_count (device_id, time, counter, quantity)"
            " SELECT a.device_id, a.time, a.counter, %s FROM counter_anomaly a WHERE a.id = %s"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (anomaly.increment, anomaly_id),
        )
        if await cur.fetchone() is None:
            raise InvalidValue(
                "anomaly",
                anomaly_id,
                f"production_count already has a {anomaly.counter} count for {anomaly.device}"
                f" at {anomaly.time.isoformat()}; nothing was added",
            )
        return await _decide(
            conn, anomaly, Decision.ACCEPTED, by=by, note=note, quantity=anomaly.increment
        )


async def drop(conn: Conn, anomaly_id: int, *, by: str, note: str | None = None) -> Anomaly:
    """Record that the anomaly is not production; nothing is counted or deleted."""
    if not by.strip():
        raise InvalidValue("by", by, "say who decides (a name or login)")
    async with conn.transaction():
        anomaly = await _pending(conn, anomaly_id)
        return await _decide(conn, anomaly, Decision.DROPPED, by=by, note=note, quantity=None)
