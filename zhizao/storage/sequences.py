"""Per-edge sequence state (migration 0004): highest sequence seen and open gaps.

The state of the edges of a batch is read with ``FOR UPDATE`` in edge order inside
the batch's transaction, so workers sharing a subscription serialise per edge and
never deadlock on each other; the caller classifies the new sequence numbers and
writes the state back in the same transaction.

Migration 0009 adds a digest of each message per (edge, seq), so that a number
received again can be told a replay (same bytes) or a conflict (other bytes).
Digests are read and written under the same row locks, and pruned by age.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from zhizao.storage.connection import Conn

SequenceKind = Literal["gap", "late", "replay", "conflict"]


class SequenceEvent(NamedTuple):
    edge_pk: int
    kind: SequenceKind
    first_seq: int
    last_seq: int


@dataclass
class EdgeSequenceState:
    high: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges, sorted


async def lock_sequence_state(conn: Conn, edge_pks: Iterable[int]) -> dict[int, EdgeSequenceState]:
    """Lock and read the sequence state of these edges (in edge order), in one query."""
    pks = sorted(set(edge_pks))
    if not pks:
        return {}
    cur = await conn.execute(
        """
        SELECT s.edge_pk, s.high_seq,
               ARRAY(SELECT g.first_seq FROM sequence_gap g WHERE g.edge_pk = s.edge_pk
                     ORDER BY g.first_seq),
               ARRAY(SELECT g.last_seq FROM sequence_gap g WHERE g.edge_pk = s.edge_pk
                     ORDER BY g.first_seq)
        FROM edge_sequence s WHERE s.edge_pk = ANY(%s)
        ORDER BY s.edge_pk FOR UPDATE OF s
        """,
        (pks,),
    )
    states = {pk: EdgeSequenceState() for pk in pks}
    for pk, high, firsts, lasts in await cur.fetchall():
        state = states[int(pk)]
        state.high = int(high)
        state.gaps = [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]
    return states


async def save_sequence_state(
    conn: Conn,
    states: Mapping[int, EdgeSequenceState],
    messages: Mapping[int, int],
    events: Sequence[SequenceEvent],
    *,
    before: Mapping[int, list[tuple[int, int]]] | None = None,
) -> None:
    """Write back the state of the edges read by :func:`lock_sequence_state`.

    ``before`` (the gaps as read) lets edges whose gaps did not change skip the gap
    table: the common case, one statement per batch.
    """
    pks = sorted(pk for pk, state in states.items() if state.high is not None)
    if not pks:
        return
    await conn.execute(
        """
        INSERT INTO edge_sequence (edge_pk, high_seq, messages)
        SELECT * FROM unnest(%s::int4[], %s::int8[], %s::int8[])
        ON CONFLICT (edge_pk) DO UPDATE SET high_seq = excluded.high_seq,
            messages = edge_sequence.messages + excluded.messages, updated_at = now()
        """,
        (pks, [states[pk].high for pk in pks], [messages.get(pk, 0) for pk in pks]),
    )
    changed = [pk for pk in pks if before is None or before.get(pk, []) != states[pk].gaps]
    if changed:
        await conn.execute("DELETE FROM sequence_gap WHERE edge_pk = ANY(%s)", (changed,))
        gap_rows = [(pk, first, last) for pk in changed for first, last in states[pk].gaps]
        if gap_rows:
            gpk, gfirst, glast = (list(c) for c in zip(*gap_rows, strict=True))
            await conn.execute(
                "INSERT INTO sequence_gap (edge_pk, first_seq, last_seq)"
                " SELECT * FROM unnest(%s::int4[], %s::int8[], %s::int8[])",
                (gpk, gfirst, glast),
            )
    if events:
        epk, kind, efirst, elast = (list(c) for c in zip(*events, strict=True))
        await conn.execute(
            "INSERT INTO sequence_event (edge_pk, kind, first_seq, last_seq)"
            " SELECT * FROM unnest(%s::int4[], %s::text[], %s::int8[], %s::int8[])",
            (epk, kind, efirst, elast),
        )


async def stored_digests(
    conn: Conn, keys: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """Digests stored for these (edge, seq), where there is one."""
    pairs = sorted(set(keys))
    if not pairs:
        return {}
    cur = await conn.execute(
        "SELECT d.edge_pk, d.seq, d.digest FROM sequence_digest d"
        " JOIN unnest(%s::int4[], %s::int8[]) AS k(e, s) ON d.edge_pk = k.e AND d.seq = k.s",
        ([pk for pk, _ in pairs], [seq for _, seq in pairs]),
    )
    return {(int(pk), int(seq)): bytes(digest) for pk, seq, digest in await cur.fetchall()}


async def save_digests(conn: Conn, rows: Sequence[tuple[int, int, bytes]]) -> None:
    """Record the digest of each (edge, seq, digest); a digest stored already stays."""
    if not rows:
        return
    pks, seqs, digests = (list(c) for c in zip(*rows, strict=True))
    await conn.execute(
        "INSERT INTO sequence_digest (edge_pk, seq, digest)"
        " SELECT * FROM unnest(%s::int4[], %s::int8[], %s::bytea[]) ON CONFLICT DO NOTHING",
        (pks, seqs, digests),
    )


async def prune_digests(conn: Conn, older_than_s: float, *, limit: int = 100_000) -> int:
    """Delete up to ``limit`` digests received more than ``older_than_s`` ago."""
    cur = await conn.execute(
        "DELETE FROM sequence_digest WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM sequence_digest"
        " WHERE received_at < now() - make_interval(secs => %s) LIMIT %s))",
        (older_than_s, limit),
    )
    return max(cur.rowcount, 0)
