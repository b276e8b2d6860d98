"""The disk spool: durable put, batches with sequence numbers that survive restarts,
bounds by size and age with the oldest data dropped first and counted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from edge.spool import Spool
from zhizao.errors import SpoolError
from zhizao.wire import Point, PointKind, decode_batch

ENTERPRISE = "91330106MA2XXXXX0Y"
T0 = 1_764_000_000_000


def points(start: int, count: int, device: str = "cnc-01") -> list[Point]:
    return [
        Point(device=device, ts=T0 + i, kind=PointKind.METRIC, name="spindle_speed", value=i)
        for i in range(start, start + count)
    ]


def values(payload: bytes) -> list[int]:
    return [int(p.value) for p in decode_batch(payload).batch.points]


def spool_at(path: Path, **kwargs: object) -> Spool:
    return Spool(path, enterprise=ENTERPRISE, edge="edge-01", **kwargs)  # type: ignore[arg-type]


async def test_batches_carry_growing_sequence_numbers_and_leave_on_ack(tmp_path: Path) -> None:
    async with spool_at(tmp_path / "spool.db") as spool:
        await spool.put(points(0, 5))
        first = await spool.next_batch(max_points=3)
        assert first is not None
        second = await spool.next_batch(max_points=3, exclude=frozenset({first.seq}))
        assert second is not None
        assert (first.seq, second.seq) == (0, 1)
        assert values(first.payload) == [0, 1, 2]
        assert values(second.payload) == [3, 4]
        decoded = decode_batch(second.payload).batch
        assert (decoded.enterprise, decoded.edge, decoded.seq) == (ENTERPRISE, "edge-01", 1)
        await spool.ack(first.seq)
        await spool.ack(second.seq)
        assert spool.stats.depth_points == 0
        assert spool.stats.acked_points_total == 5


async def test_unacknowledged_batch_is_resent_after_restart_with_its_seq_and_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    async with spool_at(path) as spool:
        await spool.put(points(0, 4))
        sent = await spool.next_batch(max_points=2)
        acked = await spool.next_batch(max_points=1, exclude=frozenset({0}))
        assert sent is not None
        assert acked is not None
        await spool.ack(acked.seq)
    async with spool_at(path) as spool:
        again = await spool.next_batch(max_points=100)
        assert again is not None
        assert (again.seq, again.payload) == (sent.seq, sent.payload)
        rest = await spool.next_batch(max_points=100, exclude=frozenset({again.seq}))
        assert rest is not None
        assert rest.seq == 2  # numbers only grow, across restarts
        assert values(rest.payload) == [3]


async def test_sequence_survives_restart_when_spool_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with spool_at(path) as spool:
        await spool.put(points(0, 1))
        batch = await spool.next_batch()
        assert batch is not None
        await spool.ack(batch.seq)
    async with spool_at(path) as spool:
        assert spool.last_seq == 0
        await spool.put(points(1, 1))
        batch = await spool.next_batch()
        assert batch is not None
        assert batch.seq == 1


async def test_overflow_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    async with spool_at(tmp_path / "spool.db", max_bytes=20_000) as spool:
        for start in range(0, 1000, 50):
            await spool.put(points(start, 50))
        stats = spool.stats
        assert stats.dropped_overflow_total > 0
        assert stats.depth_bytes <= 20_000
        assert stats.depth_points + stats.dropped_overflow_total == 1000
        kept: list[int] = []
        exclude: set[int] = set()
        while (batch := await spool.next_batch(exclude=frozenset(exclude))) is not None:
            kept += values(batch.payload)
            exclude.add(batch.seq)
        # The newest survive, contiguous up to the last point put.
        assert kept == list(range(1000 - len(kept), 1000))


async def test_overflow_evicts_points_already_formed_into_a_batch(tmp_path: Path) -> None:
    async with spool_at(tmp_path / "spool.db", max_bytes=20_000) as spool:
        await spool.put(points(0, 10))
        in_flight = await spool.next_batch()
        assert in_flight is not None
        for start in range(10, 1000, 50):
            await spool.put(points(start, 50))
        # The in-flight batch was dropped whole: nothing of it is re-sent.
        nxt = await spool.next_batch()
        assert nxt is not None
        assert nxt.seq == 1
        assert values(nxt.payload)[0] > 9
        await spool.ack(in_flight.seq)  # a late PUBACK for an evicted batch is harmless


async def test_points_older_than_max_age_are_dropped_and_counted(tmp_path: Path) -> None:
    now = [T0 / 1000]
    async with spool_at(tmp_path / "spool.db", max_age_s=60, clock=lambda: now[0]) as spool:
        await spool.put(points(0, 3))
        now[0] += 61
        await spool.put(points(3, 2))
        await spool.evict_expired()
        assert spool.stats.dropped_age_total == 3
        batch = await spool.next_batch()
        assert batch is not None
        assert values(batch.payload) == [3, 4]


async def test_concurrent_puts_are_all_stored(tmp_path: Path) -> None:
    async with spool_at(tmp_path / "spool.db") as spool:
        await asyncio.gather(*(spool.put(points(i * 10, 10)) for i in range(50)))
        assert spool.stats.depth_points == 500
    async with spool_at(tmp_path / "spool.db") as spool:
        assert spool.stats.depth_points == 500
        assert spool.stats.unbatched_points == 500


async def test_a_spool_belongs_to_one_edge(tmp_path: Path) -> None:
    async with spool_at(tmp_path / "spool.db"):
        pass
    other = Spool(tmp_path / "spool.db", enterprise=ENTERPRISE, edge="edge-02")
    with pytest.raises(SpoolError, match="edge-01"):
        await other.open()
    await other.close()


async def test_wait_ready_returns_on_size_or_for_leftovers(tmp_path: Path) -> None:
    async with spool_at(tmp_path / "spool.db") as spool:
        waiter = asyncio.create_task(spool.wait_ready(max_points=10, max_wait_s=3600))
        await spool.put(points(0, 5))
        assert not waiter.done()
        await spool.put(points(5, 5))
        await asyncio.wait_for(waiter, 10)
    async with spool_at(tmp_path / "spool.db") as spool:
        # Points left from before a restart are due at once.
        await asyncio.wait_for(spool.wait_ready(max_points=100, max_wait_s=3600), 10)


class Preempted(frozenset[int]):
    """A set of excluded batches whose membership test lets other threads run, as a
    preemption of the event loop's thread at that moment would: the worker thread's
    acknowledgements then land while the loop is in the middle of its look at the
    formed batches, every time instead of once in a while."""

    def __contains__(self, item: object) -> bool:
        time.sleep(0)  # releases the GIL
        return super().__contains__(item)


async def test_acks_on_the_worker_never_change_what_the_loop_is_reading(tmp_path: Path) -> None:
    """Issue 9 point 19: acknowledging batches (worker thread) while the uplink waits for
    the next one (event loop, iterating the formed batches) must neither fail nor lose
    a batch."""
    path = tmp_path / "spool.db"
    count = 500
    async with spool_at(path, durability="os") as spool:
        await spool.put(points(0, count))
        formed: list[int] = []
        for _ in range(count):
            batch = await spool.next_batch(max_points=1, exclude=frozenset(formed))
            assert batch is not None
            formed.append(batch.seq)
        everything = Preempted(formed)
        acking = asyncio.gather(*(spool.ack(seq) for seq in formed))
        looks = 0
        while not acking.done():
            looks += 1
            # Every ack wakes it; it looks at every formed batch each time.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await spool.wait_ready(count, 60.0, everything)
        await acking
        assert looks >= 1
        stats = spool.stats
        assert (stats.pending_batches, stats.depth_points) == (0, 0)
        assert (stats.acked_batches_total, stats.acked_points_total) == (count, count)
    async with spool_at(path) as again:
        assert (again.stats.depth_points, again.stats.pending_batches) == (0, 0)
        assert await again.next_batch() is None
