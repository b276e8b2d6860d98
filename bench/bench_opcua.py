"""OPC UA collector benchmark: value changes per second, and memory with 10,000 nodes.

    .venv/bin/python -m bench.bench_opcua [--nodes 200] [--seconds 10] [--memory-nodes 10000]

1. Throughput. An asyncua server in a separate process changes ``--nodes`` Double
   variables as fast as it can. In the same run, first a bare asyncua client (one
   subscription, a handler that only counts) and then our collector (the same items,
   normalised to wire-contract Points, into a sink that counts) subscribe for
   ``--seconds`` each. Printed: changes/s the server made in each phase, changes/s each
   client received, and the ratio collector / bare.
2. Memory. The server holds ``--memory-nodes`` variables; a collector maps all of them
   (half by NodeId, half by browse path), connects, resolves, subscribes and receives
   the initial values. Printed: peak traced Python memory (tracemalloc) of that, and
   the process's resident set growth.

Importable for the whole-path benchmark: ``BenchServer`` (context manager),
``collector_config(endpoint, count)``, ``bare_rate()``, ``collector_rate()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.synchronize
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil
from asyncua import Client, Server, ua

from edge.opcua.collector import OpcUaCollector
from edge.opcua.config import OpcUaSourceConfig
from zhizao.embedded import free_port
from zhizao.wire import Point

NS = "urn:zhizao:bench"


# -- the server process ----------------------------------------------------------------


@dataclass
class _Signals:
    ready: multiprocessing.synchronize.Event
    writing: multiprocessing.synchronize.Event
    stop: multiprocessing.synchronize.Event
    writes: Any  # a multiprocessing Value("q")


async def _serve(port: int, count: int, signals: _Signals) -> None:
    ready, writing, stop, writes = signals.ready, signals.writing, signals.stop, signals.writes
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    index = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_folder(
        ua.NodeId("Bench", index), ua.QualifiedName("Bench", index)
    )
    nodes = [
        await folder.add_variable(ua.NodeId(f"V{i}", index), ua.QualifiedName(f"V{i}", index), 0.0)
        for i in range(count)
    ]
    ids = [node.nodeid for node in nodes]
    await server.start()
    ready.set()
    value = 0.0
    while not stop.is_set():
        if not writing.is_set():
            await asyncio.sleep(0.01)
            continue
        value += 1.0
        for node_id in ids:
            await server.write_attribute_value(
                node_id, ua.DataValue(ua.Variant(value, ua.VariantType.Double))
            )
        with writes.get_lock():
            writes.value += len(ids)
        await asyncio.sleep(0)  # let the server publish between rounds
    await server.stop()


def _server_process(port: int, count: int, signals: _Signals) -> None:
    asyncio.run(_serve(port, count, signals))


class BenchServer:
    """An asyncua server with ``count`` Double variables in its own process."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.port = free_port()
        context = multiprocessing.get_context("spawn")
        self._signals = _Signals(
            context.Event(), context.Event(), context.Event(), context.Value("q", 0)
        )
        self._process = context.Process(
            target=_server_process, args=(self.port, count, self._signals), daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/bench/"

    def __enter__(self) -> BenchServer:
        self._process.start()
        if not self._signals.ready.wait(300):
            raise TimeoutError("the benchmark server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._signals.stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def start_writing(self) -> None:
        self._signals.writing.set()

    def stop_writing(self) -> None:
        self._signals.writing.clear()

    @property
    def writes(self) -> int:
        return int(self._signals.writes.value)


def collector_config(endpoint: str, count: int, *, browse_half: bool = False) -> OpcUaSourceConfig:
    nodes: list[dict[str, Any]] = []
    for i in range(count):
        address = (
            {"browse_path": f"Bench/V{i}"}
            if browse_half and i % 2
            else {"node": f"nsu={NS};s=V{i}"}
        )
        nodes.append({"device": f"DEV-{i // 100}", "kind": "metric", "name": f"v{i}", **address})
    return OpcUaSourceConfig.model_validate(
        {
            "type": "opcua",
            "name": "bench",
            "endpoint": endpoint,
            "security": {"mode": "None", "policy": "None", "allow_insecure": True},
            "namespace": NS,
            "publishing_interval_ms": 100,
            "sampling_interval_ms": 0,
            "queue_size": 1000,
            # Under tracemalloc the client is several times slower than usual.
            "request_timeout_s": 30,
            "nodes": nodes,
        }
    )


# -- the two clients ----------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.count += 1


class CountingSink:
    def __init__(self) -> None:
        self.count = 0
        self.first = asyncio.Event()
        self._grew = asyncio.Condition()

    async def put(self, points: Sequence[Point]) -> None:
        self.count += len(points)
        self.first.set()
        async with self._grew:
            self._grew.notify_all()

    async def reached(self, count: int) -> None:
        async with self._grew:
            await self._grew.wait_for(lambda: self.count >= count)


@dataclass
class Rate:
    received: int
    seconds: float
    server_writes: int

    @property
    def per_second(self) -> float:
        return self.received / self.seconds

    @property
    def server_per_second(self) -> float:
        return self.server_writes / self.seconds


async def bare_rate(server: BenchServer, seconds: float) -> Rate:
    client = Client(server.endpoint)
    await client.connect()
    try:
        index = await client.get_namespace_index(NS)
        counter = _Counter()
        subscription = await client.create_subscription(100, counter)
        nodes = [client.get_node(ua.NodeId(f"V{i}", index)) for i in range(server.count)]
        await subscription.subscribe_data_change(nodes, queuesize=1000, sampling_interval=0)
        return await _measure(server, seconds, lambda: counter.count)
    finally:
        await client.disconnect()


async def collector_rate(server: BenchServer, seconds: float) -> Rate:
    sink = CountingSink()
    collector = OpcUaCollector(collector_config(server.endpoint, server.count))
    task = asyncio.create_task(collector.run(sink))
    try:
        await asyncio.wait_for(sink.first.wait(), 60)
        return await _measure(server, seconds, lambda: sink.count)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await collector.close()


async def _measure(server: BenchServer, seconds: float, received: Any) -> Rate:
    await asyncio.sleep(0.5)  # initial values are not value changes
    start_count, start_writes = received(), server.writes
    server.start_writing()
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    server.stop_writing()
    elapsed = time.perf_counter() - began
    return Rate(received() - start_count, elapsed, server.writes - start_writes)


# -- memory --------------------------------------------------------------------------


@dataclass
class Memory:
    nodes: int
    traced_peak_mib: float
    rss_growth_mib: float
    setup_seconds: float


async def collector_memory(server: BenchServer) -> Memory:
    process = psutil.Process()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    began = time.perf_counter()
    sink = CountingSink()
    collector = OpcUaCollector(collector_config(server.endpoint, server.count, browse_half=True))
    task = asyncio.create_task(collector.run(sink))
    try:
        async with asyncio.timeout(600):
            await sink.reached(server.count + len(collector.config.devices))
        setup = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await collector.close()
    rss_after = process.memory_info().rss
    if collector.node_errors:
        raise RuntimeError(f"unresolved nodes: {list(collector.node_errors.items())[:3]}")
    return Memory(server.count, peak / 2**20, (rss_after - rss_before) / 2**20, setup)


async def main(nodes: int, seconds: float, memory_nodes: int) -> None:
    if nodes:
        await throughput(nodes, seconds)
    if memory_nodes:
        with BenchServer(memory_nodes) as server:
            memory = await collector_memory(server)
        print(f"memory, collector with {memory.nodes} mapped nodes (half by browse path)")
        print(f"  peak traced Python memory: {memory.traced_peak_mib:8.1f} MiB")
        print(f"  resident set growth      : {memory.rss_growth_mib:8.1f} MiB")
        print(
            f"  connect, resolve, subscribe, initial values: {memory.setup_seconds:.1f} s"
            " (under tracemalloc)"
        )


async def throughput(nodes: int, seconds: float) -> None:
    with BenchServer(nodes) as server:
        bare = await bare_rate(server, seconds)
        ours = await collector_rate(server, seconds)
    print(f"throughput, {nodes} nodes, {seconds:g} s per client, server in its own process")
    for label, rate in (("bare asyncua client", bare), ("zhizao collector", ours)):
        print(
            f"  {label:<20}: {rate.per_second:10.0f} changes/s"
            f"  (server made {rate.server_per_second:.0f}/s)"
        )
    print(f"  ratio collector/bare: {ours.per_second / bare.per_second:10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=200, help="0 skips the throughput part")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--memory-nodes", type=int, default=10_000, help="0 skips the memory part")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.nodes, arguments.seconds, arguments.memory_nodes))
