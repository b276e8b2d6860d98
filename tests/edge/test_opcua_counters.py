"""Counters at the edge against a real asyncua server: restarts, decimal wraps,
implausible jumps, and a collector that fails unexpectedly.

The server here is a bare asyncua ``Server`` with two UInt32 part counters, not the
factory simulator: a test sets every value and its source time itself, and restarts the
server on the same endpoint with whatever value a real controller might come back with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from edge.config import UplinkConfig
from edge.health import EdgeMetrics
from edge.opcua.collector import OpcUaCollector
from edge.sink import MemorySink
from edge.spool import Spool
from edge.uplink import Uplink
from tests.fix_opcua import running, source_config
from zhizao.embedded import free_port
from zhizao.wire import COUNTER_ANOMALY_EVENT, COUNTER_EVENT, Point, PointKind

NS = "urn:zhizao:test:counters"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class CounterServer:
    """An OPC UA server with ``Line/Good`` and ``Line/Reject`` (UInt32) on a fixed port."""

    def __init__(self, port: int) -> None:
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/counters/"
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}

    async def start(self, good: int, reject: int = 0, at: datetime = T0) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NS)
        line = await server.nodes.objects.add_folder(
            ua.NodeId("Line", ns), ua.QualifiedName("Line", ns)
        )
        for name, value in (("Good", good), ("Reject", reject)):
            self._nodes[name] = await line.add_variable(
                ua.NodeId(f"Line.{name}", ns),
                ua.QualifiedName(name, ns),
                ua.Variant(value, ua.VariantType.UInt32),
            )
        await server.start()
        self._server = server
        for name, value in (("Good", good), ("Reject", reject)):
            await self.write(name, value, at)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def write(self, name: str, value: int, at: datetime) -> None:
        assert self._server is not None
        await self._server.write_attribute_value(
            self._nodes[name].nodeid,
            ua.DataValue(
                ua.Variant(value, ua.VariantType.UInt32),
                SourceTimestamp=at,  # type: ignore[arg-type]
                ServerTimestamp=at,  # type: ignore[arg-type]
            ),
        )


@pytest.fixture
async def server() -> AsyncIterator[CounterServer]:
    made = CounterServer(free_port())
    yield made
    await made.stop()


def nodes(**good: Any) -> list[dict[str, Any]]:
    return [
        {"device": "PRESS-1", "kind": "count", "name": "good", "browse_path": "Line/Good", **good},
        {"device": "PRESS-1", "kind": "count", "name": "reject", "browse_path": "Line/Reject"},
    ]


def counted(points: Sequence[Point], name: str = "good") -> int:
    return sum(int(p.value) for p in points if p.kind is PointKind.COUNT and p.name == name)


def events(points: Sequence[Point], event: str, name: str = "good") -> list[dict[str, Any]]:
    return [
        json.loads(str(p.value))
        for p in points
        if p.kind is PointKind.EVENT and p.name == f"{event}.{name}"
    ]


async def until(sink: MemorySink, done: Callable[[], bool], within: float = 20.0) -> None:
    try:
        async with asyncio.timeout(within):
            while not done():
                await sink.wait_for(len(sink.points) + 1, within=within)
    except TimeoutError:
        raise AssertionError(f"condition not met; received {sink.points}") from None


async def test_a_restarted_server_rebaselines_and_adds_no_phantom_parts(
    server: CounterServer,
) -> None:
    await server.start(good=500)
    config = source_config(server.endpoint, nodes(), namespace=NS)
    true_increments = 0
    async with running(config) as run:
        sink = run.sink
        await until(sink, lambda: sink.connectivity("PRESS-1") == ["online"])
        await asyncio.sleep(0.3)  # the subscription's first values: the baselines
        for value in range(501, 511):
            await server.write("Good", value, T0 + timedelta(minutes=value - 500))
        true_increments += 10
        await until(sink, lambda: counted(sink.points) == 10)

        # Back with a lower total (the controller restored an older value), then with a
        # higher one: parts it never made, which the old code counted (37, then 8,955).
        for restart, (value, step) in enumerate([(37, 8), (9000, 5)], start=1):
            await server.stop()
            await until(sink, lambda: sink.connectivity("PRESS-1")[-1:] == ["offline"])
            later = T0 + timedelta(hours=restart)
            await server.start(good=value, at=later)
            await until(sink, lambda n=restart: len(events(sink.points, COUNTER_EVENT)) == n)
            for i in range(1, step + 1):
                await server.write("Good", value + i, later + timedelta(minutes=i))
            true_increments += step
            await until(sink, lambda n=true_increments: counted(sink.points) == n)
        await asyncio.sleep(0.5)  # anything late would show up now
    assert counted(sink.points) == true_increments == 23
    assert all(int(p.value) > 0 for p in sink.points if p.kind is PointKind.COUNT)
    rebaselines = events(sink.points, COUNTER_EVENT)
    assert [(e["old_total"], e["new_total"]) for e in rebaselines] == [(510, 37), (45, 9000)]
    assert all(e["event"] == "rebaseline" for e in rebaselines)
    # A new server process has a new ServerStatus/StartTime: the event says so.
    assert all("restarted" in e["reason"] for e in rebaselines)
    assert sink.connectivity("PRESS-1") == ["online", "offline"] * 2 + ["online"]
    assert run.collector.health.counter_rebaselines[("PRESS-1", "good")] == 2
    # The reject counter stayed at 0 on the server: re-baselined, nothing counted.
    assert counted(sink.points, "reject") == 0
    assert [
        (e["old_total"], e["new_total"]) for e in events(sink.points, COUNTER_EVENT, "reject")
    ] == [
        (0, 0),
        (0, 0),
    ]


async def test_a_counter_wrapping_at_1000_is_counted_exactly_over_several_wraps(
    server: CounterServer,
) -> None:
    await server.start(good=990)
    config = source_config(server.endpoint, nodes(rollover=1000), namespace=NS)
    value, made, at = 990, 0, T0
    async with running(config) as run:
        sink = run.sink
        await until(sink, lambda: sink.connectivity("PRESS-1") == ["online"])
        await asyncio.sleep(0.3)
        # Steps up to 124, just inside the default wrap window (an eighth of 1000).
        for step in [1, 99, 3, 117, 2, 60, 11, 5, 124, 8] * 8:
            value = (value + step) % 1000
            made += step
            at += timedelta(seconds=step * 20)
            await server.write("Good", value, at)
            # A counter is read, not streamed: each total reaches the edge before the next.
            await until(sink, lambda n=made: counted(sink.points) == n)
        await asyncio.sleep(0.5)
    assert made == 3440  # from 990: through 1000, 2000, 3000 and 4000
    assert counted(sink.points) == made
    assert run.collector.node_errors == {}


async def test_a_total_at_or_above_the_rollover_is_refused_by_name(
    server: CounterServer,
) -> None:
    await server.start(good=10)
    config = source_config(server.endpoint, nodes(rollover=1000), namespace=NS)
    async with running(config) as run:
        sink = run.sink
        await until(sink, lambda: sink.connectivity("PRESS-1") == ["online"])
        await asyncio.sleep(0.3)
        await server.write("Good", 1000, T0 + timedelta(minutes=1))
        await server.write("Good", 12, T0 + timedelta(minutes=2))
        await until(sink, lambda: counted(sink.points) == 2)
        errors = dict(run.collector.node_errors)
    # 1000 is not a value of a counter that wraps at 1000: not counted, and named.
    assert counted(sink.points) == 2
    assert errors == {}  # cleared by the good value that followed
    assert "counter total 1000 does not fit the rollover 1000" in str(
        run.collector.health.last_error
    )


async def test_an_implausible_jump_is_an_anomaly_event_and_not_a_count(
    server: CounterServer, tmp_path: Path
) -> None:
    await server.start(good=100)
    # 10 s ideal cycle, factor 2: at most 60 / 10 * 2 + 1 = 13 parts a minute.
    config = source_config(server.endpoint, nodes(ideal_cycle_s=10), namespace=NS)
    async with running(config) as run:
        sink = run.sink
        await until(sink, lambda: sink.connectivity("PRESS-1") == ["online"])
        await asyncio.sleep(0.3)
        await server.write("Good", 113, T0 + timedelta(minutes=1))  # 13: the limit, counted
        await server.write("Good", 127, T0 + timedelta(minutes=2))  # 14: an anomaly
        await server.write("Good", 129, T0 + timedelta(minutes=2, seconds=10))  # 2: counted
        await until(sink, lambda: counted(sink.points) == 15)
        await asyncio.sleep(0.3)
        health = run.collector.health
    assert [int(p.value) for p in sink.points if p.kind is PointKind.COUNT] == [13, 2]
    (anomaly,) = events(sink.points, COUNTER_ANOMALY_EVENT)
    assert anomaly == {
        "counter": "good",
        "increment": 14,
        "rule": "plausibility",
        "previous_total": 113,
        "total": 127,
        "elapsed_ms": 60_000,
        "limit": 13,
        "ideal_cycle_s": 10.0,
        "factor": 2.0,
    }
    (point,) = [p for p in sink.points if p.name == f"{COUNTER_ANOMALY_EVENT}.good"]
    assert point.ts == int((T0 + timedelta(minutes=2)).timestamp() * 1000)
    assert health.counter_anomalies == {("PRESS-1", "good"): 1}

    # ... and /metrics counts it per device and counter.
    spool = Spool(tmp_path / "spool.db", enterprise="91330106MA2XXXXX0Y", edge="e1")
    uplink = Uplink(
        UplinkConfig(url="mqtt://127.0.0.1:1"), enterprise=spool.enterprise, edge_id="e1",
        spool=spool,
    )  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeMetrics(spool, uplink, {"src": run.collector}))
    text = generate_latest(registry).decode()
    assert 'zhizao_edge_counter_anomalies_total{counter="good",device="PRESS-1"} 1.0' in text


class FailingOnce(MemorySink):
    """A sink that fails the first time it is handed a count (a full disk, a bug)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def put(self, points: Sequence[Point]) -> None:
        if not self.failed and any(p.kind is PointKind.COUNT for p in points):
            self.failed = True
            raise RuntimeError("injected: the sink failed")
        await super().put(points)


class BadHandler(OpcUaCollector):
    """A collector whose value path raises what it does not expect, once."""

    failed = False

    def _convert(self, target: Any, value: Any) -> list[Point]:
        if not self.failed and target.mapping is not None and target.mapping.name == "good":
            raw = value.Value.Value if value is not None and value.Value is not None else None
            if raw == 101:
                self.failed = True
                raise KeyError("injected: a handler bug")
        return super()._convert(target, value)


@pytest.mark.parametrize("failure", ["sink", "handler"])
async def test_an_unexpected_failure_marks_the_devices_offline_before_the_restart(
    server: CounterServer, failure: str
) -> None:
    await server.start(good=100)
    config = source_config(server.endpoint, nodes(), namespace=NS)
    sink = FailingOnce() if failure == "sink" else MemorySink()
    collector = BadHandler(config) if failure == "handler" else OpcUaCollector(config)
    task = asyncio.create_task(collector.run(sink))
    try:
        await until(sink, lambda: sink.connectivity("PRESS-1") == ["online"])
        await asyncio.sleep(0.3)
        await server.write("Good", 101, T0 + timedelta(minutes=1))
        with pytest.raises(ExceptionGroup) as crashed:
            async with asyncio.timeout(20):
                await task
        expected = RuntimeError if failure == "sink" else KeyError
        assert crashed.group_contains(expected, match="injected")
        assert sink.connectivity("PRESS-1") == ["online", "offline"]
        (offline,) = [p for p in sink.points if p.value == "offline"]
        assert "collector failed" in str(offline.reason)
        assert not collector.health.connected
        # What the supervisor does next: run it again; the devices come back online.
        task = asyncio.create_task(collector.run(sink))
        await until(sink, lambda: sink.connectivity("PRESS-1") == ["online", "offline", "online"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ExceptionGroup):
            await task
        await collector.close()


class CuttableLink:
    """A TCP relay between the collector and the server that can be cut and restored:
    a network outage that leaves the server process (and its StartTime) as it was."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/counters/"
        self.up = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttableLink:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.up = False
        for writer in list(self._writers):
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_a_network_outage_of_the_same_server_counts_the_parts_made_meanwhile(
    server: CounterServer,
) -> None:
    """The server process stayed up (same StartTime): its counter went on counting.

    The good counter has an ideal cycle time, so the guard can judge the gap: the parts
    made during the outage are counted, and a preset beyond the limit is an anomaly.
    The reject counter has none: nothing could catch a preset, so it re-baselines.
    """
    await server.start(good=500, reject=7)
    port = int(server.endpoint.split(":")[2].split("/")[0])
    async with CuttableLink(port) as link:
        config = source_config(link.endpoint, nodes(ideal_cycle_s=60), namespace=NS)
        async with running(config) as run:
            sink = run.sink
            await until(sink, lambda: sink.connectivity("PRESS-1") == ["online"])
            await asyncio.sleep(0.3)  # the first values: baselines
            await server.write("Good", 510, T0 + timedelta(minutes=10))
            await until(sink, lambda: counted(sink.points) == 10)

            # Five parts in the five minutes the link is down, then the link is back.
            link.cut()
            await until(sink, lambda: sink.connectivity("PRESS-1")[-1:] == ["offline"])
            await server.write("Good", 515, T0 + timedelta(minutes=15))
            await server.write("Reject", 9, T0 + timedelta(minutes=15))
            link.up = True
            await until(sink, lambda: counted(sink.points) == 15)

            # A preset during the next outage: beyond what 5 minutes allow (limit 11).
            link.cut()
            await until(sink, lambda: sink.connectivity("PRESS-1")[-1:] == ["offline"])
            await server.write("Good", 9000, T0 + timedelta(minutes=20))
            link.up = True
            await until(sink, lambda: len(events(sink.points, COUNTER_ANOMALY_EVENT)) == 1)
            await asyncio.sleep(0.5)  # anything late would show up now
    assert counted(sink.points) == 15
    (anomaly,) = events(sink.points, COUNTER_ANOMALY_EVENT)
    assert (anomaly["increment"], anomaly["limit"], anomaly["elapsed_ms"]) == (8485, 11, 300_000)
    assert events(sink.points, COUNTER_EVENT) == []  # the good counter kept its baseline
    # The reject counter: re-baselined at each new session, the 2 rejects not counted.
    assert counted(sink.points, "reject") == 0
    rebaselines = events(sink.points, COUNTER_EVENT, "reject")
    assert [(e["old_total"], e["new_total"]) for e in rebaselines] == [(7, 9), (9, 9)]
    assert all("no ideal cycle time" in e["reason"] for e in rebaselines)
