"""The dead-letter table: rejected messages and points, kept for inspection and replay.

A message whose envelope, topic or sender is wrong is one row without
``point_index`` holding the raw payload as received. A bad point inside an otherwise
good batch is one row with ``point_index`` set and the point's own JSON as payload,
so a 200-point batch with one unknown device does not store the batch 200 times.

Writing a dead letter must never be refused for what the letter holds: that would
leave ingest no place to put the message, and it would retry it forever. So the
payload is ``bytea`` (any bytes), text columns are stored with control characters
and lone surrogates escaped (:func:`zhizao.wire.printable`), and numbers outside
their column's range are left out (the payload still has them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from zhizao.storage.connection import Conn
from zhizao.wire import printable

#: Payloads above this size are stored truncated: such a message was rejected for its
#: size and cannot be replayed anyway, and the table must not balloon.
MAX_STORED_PAYLOAD = 64 * 1024
#: A reason is a sentence; anything longer is cut here.
MAX_REASON_CHARS = 1000
_INT8 = (-(2**63), 2**63 - 1)
_INT4 = (-(2**31), 2**31 - 1)


def _within(value: int | None, bounds: tuple[int, int]) -> int | None:
    return value if value is not None and bounds[0] <= value <= bounds[1] else None


def _text(value: str | None) -> str | None:
    return None if value is None else printable(value)


class DeadLetterRow(NamedTuple):
    topic: str
    reason: str
    payload: bytes
    received_ms: int
    enterprise: str | None = None
    edge_id: str | None = None
    seq: int | None = None
    point_index: int | None = None


@dataclass(frozen=True)
class StoredDeadLetter:
    id: int
    received_at: datetime
    topic: str
    enterprise: str | None
    edge_id: str | None
    seq: int | None
    point_index: int | None
    reason: str
    payload: bytes
    replayed_at: datetime | None


async def write_dead_letters(conn: Conn, rows: Sequence[DeadLetterRow]) -> int:
    """Insert dead letters in the caller's transaction; returns the number written."""
    if not rows:
        return 0
    columns: list[list[object]] = [[] for _ in range(8)]
    for row in rows:
        payload = row.payload
        if len(payload) > MAX_STORED_PAYLOAD:
            payload = payload[:MAX_STORED_PAYLOAD]
        values = (
            row.received_ms,
            printable(row.topic),
            _text(row.enterprise),
            _text(row.edge_id),
            _within(row.seq, _INT8),
            _within(row.point_index, _INT4),
            printable(row.reason[:MAX_REASON_CHARS]),
            payload,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    await conn.execute(
        """
        INSERT INTO dead_letter
            (received_at, topic, enterprise, edge_id, seq, point_index, reason, payload)
        SELECT 'epoch'::timestamptz + u.t * interval '1 ms', u.topic, u.ent, u.edge, u.seq,
               u.idx, u.why, u.body
        FROM unnest(%s::int8[], %s::text[], %s::text[], %s::text[], %s::int8[], %s::int4[],
                    %s::text[], %s::bytea[]) AS u(t, topic, ent, edge, seq, idx, why, body)
        """,
        columns,
    )
    return len(rows)


async def list_dead_letters(
    conn: Conn,
    *,
    pending_only: bool = True,
    ids: Sequence[int] | None = None,
    enterprise: str | None = None,
    reason_contains: str | None = None,
    limit: int = 100,
    after_id: int = 0,
) -> list[StoredDeadLetter]:
    """Dead letters in id order, filtered; ``after_id`` pages through a long list."""
    cur = await conn.execute(
        """
        SELECT id, received_at, topic, enterprise, edge_id, seq, point_index, reason, payload,
               replayed_at
        FROM dead_letter
        WHERE id > %(after)s
          AND (NOT %(pending)s OR replayed_at IS NULL)
          AND (%(ids)s::int8[] IS NULL OR id = ANY(%(ids)s::int8[]))
          AND (%(ent)s::text IS NULL OR enterprise = %(ent)s::text)
          AND (%(why)s::text IS NULL OR strpos(reason, %(why)s::text) > 0)
        ORDER BY id
        LIMIT %(limit)s
        """,
        {
            "after": after_id,
            "pending": pending_only,
            "ids": list(ids) if ids is not None else None,
            "ent": enterprise,
            "why": reason_contains,
            "limit": limit,
        },
    )
    return [
        StoredDeadLetter(
            id=int(r[0]),
            received_at=r[1],
            topic=str(r[2]),
            enterprise=r[3],
            edge_id=r[4],
            seq=None if r[5] is None else int(r[5]),
            point_index=None if r[6] is None else int(r[6]),
            reason=str(r[7]),
            payload=bytes(r[8]),
            replayed_at=r[9],
        )
        for r in await cur.fetchall()
    ]


async def mark_replayed(conn: Conn, ids: Sequence[int]) -> int:
    if not ids:
        return 0
    cur = await conn.execute(
        "UPDATE dead_letter SET replayed_at = now() WHERE id = ANY(%s) AND replayed_at IS NULL",
        (list(ids),),
    )
    return max(cur.rowcount, 0)
