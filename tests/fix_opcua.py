"""OPC UA fixtures: simulators and collectors that a test owns, and certificates.

``simulator`` starts the factory simulator (a real asyncua server) on a free port for
a scenario the test builds; the test drives it (``run()`` in a task, ``wait_until``,
``server.stop()``/``start()``) and the fixture stops whatever is left. ``pki`` makes a
server and a client certificate with asyncua's own tools, with trust-list folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge.opcua.collector import OpcUaCollector
from edge.opcua.config import OpcUaSourceConfig
from edge.simulator.opcua_server import Security
from edge.simulator.run import Simulator
from edge.simulator.scenario import Scenario
from edge.sink import MemorySink
from zhizao.embedded import free_port

SIM_NS = "urn:zhizao:simulator"
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
INSECURE = {"mode": "None", "policy": "None", "allow_insecure": True}


def scenario(devices: list[dict[str, Any]], **fields: Any) -> Scenario:
    document: dict[str, Any] = {
        "name": "test",
        "start": START,
        "duration": "8h",
        "metric_period": "1m",
        "devices": devices,
    }
    document.update(fields)
    return Scenario.model_validate(document)


def source_config(endpoint: str, nodes: list[dict[str, Any]], **fields: Any) -> OpcUaSourceConfig:
    """An insecure source with fast publishing and a short backoff, for tests."""
    document: dict[str, Any] = {
        "type": "opcua",
        "name": "test-opcua",
        "endpoint": endpoint,
        "security": INSECURE,
        "namespace": SIM_NS,
        "publishing_interval_ms": 50,
        "sampling_interval_ms": 0,
        "queue_size": 100,
        "heartbeat_timeout_s": 10,
        "reconnect": {"initial_s": 0.2, "max_s": 1.0},
        "nodes": nodes,
    }
    document.update(fields)
    return OpcUaSourceConfig.model_validate(document)


MakeSimulator = Callable[..., Awaitable[Simulator]]


@pytest.fixture
async def simulator() -> AsyncIterator[MakeSimulator]:
    """``await simulator(scenario, speed=..., ...)``: a started simulator on a free port."""
    started: list[Simulator] = []

    async def make(scenario: Scenario, **options: Any) -> Simulator:
        options.setdefault("opcua_port", free_port())
        sim = Simulator(scenario, **options)
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@dataclass
class RunningCollector:
    collector: OpcUaCollector
    sink: MemorySink
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running(
    config: OpcUaSourceConfig, sink: MemorySink | None = None
) -> AsyncIterator[RunningCollector]:
    """A collector running into a MemorySink for the duration of the block."""
    sink = sink or MemorySink()
    collector = OpcUaCollector(config)
    task = asyncio.create_task(collector.run(sink))
    try:
        yield RunningCollector(collector, sink, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await collector.close()


@dataclass
class Pki:
    server: Security
    client_certificate: Path
    client_key: Path
    client_trusts: Path  # folder: the server's certificate
    other_trust: Path  # folder that trusts another certificate only


@pytest.fixture
async def pki(tmp_path: Path) -> Pki:
    host = socket.gethostname()
    server_cert, server_key = tmp_path / "server-cert.der", tmp_path / "server-key.pem"
    client_cert, client_key = tmp_path / "client-cert.der", tmp_path / "client-key.pem"
    await setup_self_signed_certificate(
        server_key,
        server_cert,
        "urn:zhizao:simulator:server",
        host,
        [ExtendedKeyUsageOID.SERVER_AUTH],
        {"commonName": "zhizao simulator"},
    )
    await setup_self_signed_certificate(
        client_key,
        client_cert,
        "urn:zhizao:edge:test",
        host,
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"commonName": "zhizao edge"},
    )
    trusts = tmp_path / "trusted"
    trusts.mkdir()
    (trusts / "server-cert.der").write_bytes(server_cert.read_bytes())
    other = tmp_path / "trust-others"
    other.mkdir()
    (other / "client-cert.der").write_bytes(client_cert.read_bytes())
    return Pki(
        Security(server_cert, server_key, allow_none=False), client_cert, client_key, trusts, other
    )
