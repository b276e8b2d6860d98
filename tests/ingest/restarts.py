"""Broker restarts under load: real edges → the shipped Mosquitto config → real ingest.

Shared by ``tests/ingest/test_broker_restarts.py`` and ``bench/broker_restarts.py``.
Two edges (``edge.spool.Spool`` + ``edge.uplink.Uplink``, in this process) are fed
points at a steady pace and publish them QoS 1 with their sequence numbers; an ingest
worker (in this process) stores them. The broker runs deploy/mosquitto/mosquitto.conf
(tests.fix_mqtt.shipped_config), with ``extra_config`` appended to try variants.

Each round waits until the edges have had more points acknowledged, then stops the
broker (SIGTERM: Mosquitto saves its database on the way out) or kills it (SIGKILL),
and starts it again on the same port. With ``ingest_away`` the worker is stopped
before the round, so the broker's session queue holds what the edges send meanwhile
(acknowledged to them: they have deleted it from their spools), and started again
after the restart: the case where only the broker's persistence stands between the
edges and the database.

At the end the edges' spools drain, and the edges' last sequence numbers reach
ingest: the broker delivers a session's messages in order, so whatever has not
arrived by then never will. Then sent (points accepted by the spools, all of them
acknowledged by the broker) is compared with stored, and what the sequence tracker
reports missing with what is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from edge.config import UplinkConfig
from edge.spool import Durability, Spool
from edge.uplink import Uplink
from tests.fix_mqtt import INGEST_USER, Mosquitto, edge_user, shipped_mosquitto
from tests.ingest.support import T0, Factory, Worker, register, scalar, wait_until, worker_settings
from zhizao.wire import Point, PointKind

ROWS = "SELECT count(*) FROM metric_point"
_SIZE = "coalesce(sum(last_seq - first_seq + 1), 0)"
BATCH_POINTS = 50
#: Points each edge accepts per tick of the feeder.
TICK_POINTS = 25


def users(factories: list[Factory]) -> dict[str, str]:
    out = {edge_user(f.enterprise, f.edge): f"secret-{f.edge}" for f in factories}
    out[INGEST_USER] = "secret-ingest"
    return out


@dataclass
class RestartResult:
    how: str
    rounds: int
    ingest_away: bool
    shared: bool
    sent: int
    stored: int
    gap_messages: int
    gap_ranges: int
    replays: int
    batches_failed: int

    @property
    def lost(self) -> int:
        return self.sent - self.stored

    def line(self) -> str:
        away = ", ingest away" if self.ingest_away else ""
        sub = "shared" if self.shared else "plain"
        return (
            f"{self.how} x{self.rounds}{away}, {sub} subscription: sent {self.sent},"
            f" stored {self.stored}, lost {self.lost}; sequence gaps {self.gap_ranges}"
            f" ({self.gap_messages} messages),"
            f" replays {self.replays}; batches resent by the edges {self.batches_failed}"
        )


@dataclass
class _Edge:
    factory: Factory
    spool: Spool
    uplink: Uplink
    fed: int = 0


def _points(factory: Factory, start: int, count: int) -> list[Point]:
    devices = factory.devices
    return [
        Point(device=devices[i % len(devices)], ts=T0 + i, kind=PointKind.METRIC, name="v",
              value=float(i))
        for i in range(start, start + count)
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def _edges(broker: Mosquitto, factories: list[Factory], tmp: Path) -> AsyncIterator[
    list[_Edge]
]:
    secrets = users(factories)
    stack = contextlib.AsyncExitStack()
    edges: list[_Edge] = []
    tasks: list[asyncio.Task[None]] = []
    async with stack:
        for f in factories:
            spool = await stack.enter_async_context(
                Spool(tmp / f"{f.edge}.db", enterprise=f.enterprise, edge=f.edge,
                      durability=Durability.OS)
            )  # fmt: skip
            config = UplinkConfig(
                url=broker.url,
                username=edge_user(f.enterprise, f.edge),
                password=secrets[edge_user(f.enterprise, f.edge)],
                batch_max_points=BATCH_POINTS,
                batch_max_wait_s=0.05,
                reconnect_min_s=0.1,
                reconnect_max_s=0.5,
            )
            uplink = Uplink(config, enterprise=f.enterprise, edge_id=f.edge, spool=spool)
            tasks.append(asyncio.create_task(uplink.run()))
            edges.append(_Edge(f, spool, uplink))
        try:
            yield edges
        finally:
            for edge in edges:
                await edge.uplink.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _feed(edges: list[_Edge], stop: asyncio.Event, pace_s: float) -> None:
    while not stop.is_set():
        for edge in edges:
            await edge.spool.put(_points(edge.factory, edge.fed, TICK_POINTS))
            edge.fed += TICK_POINTS
        await asyncio.sleep(pace_s)


def _acked(edges: list[_Edge]) -> int:
    return sum(e.uplink.stats.points_sent for e in edges)


async def run_restarts(
    db_url: str,
    tmp: Path,
    *,
    how: str,
    rounds: int,
    ingest_away: bool = False,
    extra_config: str = "",
    points_per_round: int = 4000,
    pace_s: float = 0.01,
    max_inflight: int = 4000,
    shared_group: str | None = "ingest",
) -> RestartResult:
    """Rounds of load and restarts as the module docstring says; ``how``: stop or kill."""
    factories = await register(db_url)
    broker = shipped_mosquitto(tmp / "broker", users(factories))
    broker.extra_config = extra_config
    broker.start()
    settings = worker_settings(
        db_url,
        f"mqtt://{INGEST_USER}:secret-ingest@127.0.0.1:{broker.port}",
        client_id=f"ingest-restarts-{how}",
        max_inflight=max_inflight,
        shared_group=shared_group,
    )
    worker: Worker | None = Worker(settings)
    try:
        assert worker is not None
        await worker.connected(within=60)
        async with _edges(broker, factories, tmp) as edges:
            stop = asyncio.Event()
            feeder = asyncio.create_task(_feed(edges, stop, pace_s))
            # Ingest knows each edge before the first restart: a loss before the first
            # message it ever sees from an edge could open no gap (docs/ingest.md).
            await wait_until(
                lambda: _seen_edges(db_url, len(edges)), within=120, what="every edge seen"
            )
            try:
                for _ in range(rounds):
                    if ingest_away and worker is not None:
                        await worker.close()
                        worker = None
                    target = _acked(edges) + points_per_round

                    async def progressed(target: int = target) -> bool:
                        if feeder.done():
                            feeder.result()
                        return _acked(edges) >= target

                    await wait_until(progressed, within=300, what="points acknowledged")
                    if how == "kill":
                        await asyncio.to_thread(broker.kill)
                    else:
                        await asyncio.to_thread(broker.stop)
                    await asyncio.to_thread(broker.start)
                    if worker is None:
                        worker = Worker(settings)
                    await worker.connected(within=120)
            finally:
                stop.set()
                await feeder
            for edge in edges:
                async with asyncio.timeout(300):
                    await edge.uplink.wait_for(
                        lambda s, e=edge: s.points_sent >= e.spool.stats.accepted_total
                    )
            sent = sum(e.spool.stats.accepted_total for e in edges)
            last = {e.factory.edge: e.spool.last_seq for e in edges}
            failed = sum(e.uplink.stats.batches_failed for e in edges)
        await _wait_last_seqs(db_url, last)
        return RestartResult(
            how=how,
            rounds=rounds,
            ingest_away=ingest_away,
            shared=shared_group is not None,
            sent=sent,
            stored=int(await scalar(db_url, ROWS)),
            gap_messages=int(await scalar(db_url, f"SELECT {_SIZE} FROM sequence_gap")),
            gap_ranges=int(await scalar(db_url, "SELECT count(*) FROM sequence_gap")),
            replays=int(
                await scalar(db_url, f"SELECT {_SIZE} FROM sequence_event WHERE kind = 'replay'")
            ),
            batches_failed=failed,
        )
    finally:
        if worker is not None:
            await worker.close()
        broker.kill()


async def _seen_edges(db_url: str, edges: int) -> bool:
    return bool(await scalar(db_url, "SELECT count(*) FROM edge_sequence") == edges)


async def _wait_last_seqs(db_url: str, last: dict[str, int | None]) -> None:
    """Until ingest has each edge's last sequence number (and committed all before it)."""

    async def arrived() -> bool:
        for edge, seq in last.items():
            high = await scalar(
                db_url,
                "SELECT s.high_seq FROM edge_sequence s JOIN edge_gateway g ON g.id = s.edge_pk"
                " WHERE g.edge_id = %s",
                edge,
            )
            if seq is not None and (high is None or high < seq):
                return False
        return True

    await wait_until(arrived, within=300, what="the edges' last sequence numbers stored")
