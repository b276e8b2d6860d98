"""Sequence tracking: gaps, late arrivals and replays per edge are recorded and counted."""

from __future__ import annotations

import asyncio

from ingest.sequences import classify
from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    Publisher,
    Worker,
    data_messages,
    register,
    scalar,
    wait_for_count,
    worker_settings,
)
from zhizao.storage.connection import connect
from zhizao.storage.sequences import EdgeSequenceState, SequenceEvent


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
