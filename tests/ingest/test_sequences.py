"""Sequence tracking: gaps, late arrivals and replays per edge are recorded and counted."""

from __future__ import annotations

import asyncio
import json

from ingest.sequences import classify
from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Factory,
    Letter,
    Publisher,
    Worker,
    data_messages,
    letters,
    register,
    scalar,
    wait_for_count,
    worker_settings,
)
from zhizao.storage.connection import connect
from zhizao.storage.sequences import EdgeSequenceState, SequenceEvent
from zhizao.wire import data_topic


def test_classify_gaps_late_and_replays() -> None:
    state = EdgeSequenceState(high=9)
    # Numbers of one batch are taken in order: 12 closes up to 11, 13-14 are missing.
    events = classify(1, state, [10, 11, 15, 16, 12, 11, 3])
    assert events == [
        SequenceEvent(1, "replay", 3, 3),
        SequenceEvent(1, "replay", 11, 11),
        SequenceEvent(1, "gap", 13, 14),
    ]
    assert state.high == 16
    assert state.gaps == [(13, 14)]
    # filling the middle of a gap splits it
    state = EdgeSequenceState(high=20, gaps=[(10, 15)])
    assert classify(1, state, [12, 13]) == [SequenceEvent(1, "late", 12, 13)]
    assert state.gaps == [(10, 11), (14, 15)]


def test_first_message_of_an_edge_opens_no_gap() -> None:
    state = EdgeSequenceState()
    assert classify(7, state, [500, 501]) == []
    assert state.high == 501


async def test_gaps_and_replays_are_recorded(db_url: str, own_mosquitto: Mosquitto) -> None:
    a, _ = await register(db_url)
    worker = Worker(worker_settings(db_url, own_mosquitto.url))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    try:
        # One message at a time, each committed before the next, so the order is fixed.
        for count, seq in enumerate([0, 1, 2, 5, 6, 3, 1], start=1):
            await asyncio.to_thread(publisher.publish_all, data_messages(a, [seq], 2))
            await wait_for_count(db_url, "SELECT messages FROM edge_sequence", count)
        conn = await connect(db_url)
        async with conn:
            cur = await conn.execute(
                "SELECT kind, first_seq, last_seq FROM sequence_event ORDER BY id"
            )
            events = await cur.fetchall()
            cur = await conn.execute("SELECT first_seq, last_seq FROM sequence_gap")
            open_gaps = await cur.fetchall()
        assert events == [("gap", 3, 4), ("late", 3, 3), ("replay", 1, 1)]
        assert open_gaps == [(4, 4)]
        assert await scalar(db_url, "SELECT high_seq FROM edge_sequence") == 6
        assert worker.metrics.sequence_gaps._value.get() == 2
        assert worker.metrics.sequence_late._value.get() == 1
        assert worker.metrics.sequence_replays._value.get() == 1
    finally:
        publisher.close()
        await worker.close()


async def _conflict_outcome(
    db_url: str, broker: Mosquitto, f: Factory, *, one_batch: bool
) -> tuple[list[tuple[str, int, int]], list[Letter], list[float]]:
    """Send seq 5 of edge ``f`` three times: content X, X again, then content Y (the same
    timestamps with other values, and one more point). With ``one_batch`` the three are
    committed in one transaction, else each in its own."""
    dev = f.devices[0]

    def content(values: list[float]) -> bytes:
        points = [{"device": dev, "ts": T0 + i, "kind": "metric", "name": "temp", "value": v}
                  for i, v in enumerate(values)]
        return json.dumps({"v": 1, "enterprise": f.enterprise, "edge": f.edge, "seq": 5,
                           "sent_at": T0, "points": points}).encode()

    x, y = content([1.0, 2.0]), content([10.0, 20.0, 30.0])
    overrides: dict[str, object] = (
        {"batch_max_messages": 3, "batch_max_wait_ms": 60_000}
        if one_batch
        else {"batch_max_messages": 1}
    )
    worker = Worker(worker_settings(db_url, broker.url, **overrides))
    await worker.connected()
    publisher = Publisher(broker.url, client_id=f"pub-{f.edge}")
    topic = data_topic(f.enterprise, f.edge)
    try:
        if one_batch:
            await asyncio.to_thread(publisher.publish_all, [(topic, x), (topic, x), (topic, y)])
        else:
            for count, payload in enumerate([x, x, y], start=1):
                await asyncio.to_thread(publisher.publish_all, [(topic, payload)])
                await wait_for_count(
                    db_url,
                    "SELECT s.messages FROM edge_sequence s JOIN edge_gateway g"
                    f" ON g.id = s.edge_pk WHERE g.edge_id = '{f.edge}'",
                    count,
                )
        await wait_for_count(
            db_url,
            "SELECT s.messages FROM edge_sequence s JOIN edge_gateway g ON g.id = s.edge_pk"
            f" WHERE g.edge_id = '{f.edge}'",
            3,
        )
    finally:
        publisher.close()
        await worker.close()
    conn = await connect(db_url)
    async with conn:
        cur = await conn.execute(
            "SELECT e.kind, e.first_seq, e.last_seq FROM sequence_event e"
            " JOIN edge_gateway g ON g.id = e.edge_pk WHERE g.edge_id = %s ORDER BY e.id",
            (f.edge,),
        )
        events = [(str(k), int(a), int(b)) for k, a, b in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT p.value FROM metric_point p JOIN device d ON d.id = p.device_id"
            " WHERE d.code = %s ORDER BY p.time",
            (dev,),
        )
        values = [float(v) for (v,) in await cur.fetchall()]
    return events, [x for x in await letters(db_url) if x.edge == f.edge], values


async def test_a_sequence_number_resent_with_other_content_is_a_conflict(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, _, a0 = await register(db_url, extra_edges=1)
    for f, one_batch in ((a, False), (a0, True)):
        events, found, values = await _conflict_outcome(db_url, own_mosquitto, f,
                                                        one_batch=one_batch)
        # Whether the three came in one batch or in three: the first content is stored, the
        # identical resend is a replay, the other content a conflict the operator sees.
        assert values == [1.0, 2.0], (one_batch, values)
        assert events == [("replay", 5, 5), ("conflict", 5, 5)], (one_batch, events)
        [letter] = found
        assert letter.reason == (
            f"sequence: seq 5 of edge {f.edge!r} was already stored with different content"
        )
        assert (letter.enterprise, letter.edge, letter.seq, letter.point_index) == (
            f.enterprise, f.edge, 5, None
        )
        assert json.loads(letter.payload)["points"][2]["value"] == 30.0
