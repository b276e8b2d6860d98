"""Ingest over TLS with credentials, against a real Mosquitto running the shipped config
(deploy/mosquitto/: TLS listener, password file, ACL template), and a subscription the
broker refuses made loud: /healthz fails with the topic and the reason, the log says so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import structlog

from edge.config import UplinkConfig
from edge.spool import Spool
from edge.uplink import Uplink
from tests.fix_mqtt import (
    INGEST_USER,
    Mosquitto,
    Pki,
    dynsec_mosquitto,
    edge_user,
    make_pki,
    shipped_mosquitto,
)
from tests.ingest.support import (
    EDGE_A,
    ENT_A,
    T0,
    Worker,
    get_health,
    register,
    wait_for_count,
    wait_until,
    worker_settings,
)
from zhizao.embedded import free_port
from zhizao.mqtt import BrokerConnection, MqttSession, TlsSettings
from zhizao.wire import Point, PointKind

INGEST_PASSWORD = "ingest-secret"  # noqa: S105 - a test broker's password
EDGE_PASSWORD = "edge-secret"  # noqa: S105
USERS = {
    INGEST_USER: INGEST_PASSWORD,
    edge_user(ENT_A, EDGE_A): EDGE_PASSWORD,
    # In the password file, not in the ACL: may connect, may read nothing.
    "zhizao-monitor": "monitor-secret",
}


@dataclass
class Secured:
    broker: Mosquitto
    pki: Pki
    #: a third listener that requires a client certificate
    cert_port: int

    @property
    def tls_url(self) -> str:
        # The certificate names "localhost" only, so 127.0.0.1 fails host name checks.
        return f"mqtts://localhost:{self.broker.tls_port}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured-broker")
    pki = make_pki(folder / "pki", names=("localhost",))
    cert_port = free_port()
    broker = shipped_mosquitto(
        folder,
        USERS,
        pki,
        extra_config=(
            f"listener {cert_port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\n"
            f"keyfile {pki.server_key}\nrequire_certificate true\n"
        ),
    )
    broker.start()
    yield Secured(broker, pki, cert_port)
    broker.kill()


async def test_ingest_over_tls_with_credentials_stores_an_edges_batches(
    db_url: str, secured: Secured, tmp_path: Path
) -> None:
    a, _ = await register(db_url)
    worker = Worker(
        worker_settings(
            db_url,
            secured.tls_url,
            mqtt_username=INGEST_USER,
            mqtt_password=INGEST_PASSWORD,
            mqtt_tls_ca_file=secured.pki.ca,
            health_port=0,
        )
    )
    # The edge's credentials percent-encoded in its URL (its user name holds slashes).
    user = quote(edge_user(ENT_A, EDGE_A), safe="")
    uplink_config = UplinkConfig(
        url=f"mqtts://{user}:{EDGE_PASSWORD}@localhost:{secured.broker.tls_port}",
        tls=TlsSettings(ca_file=secured.pki.ca),
        batch_max_points=10,
        batch_max_wait_s=0.05,
    )
    try:
        await worker.connected()
        async with Spool(tmp_path / "spool.db", enterprise=ENT_A, edge=EDGE_A) as spool:
            uplink = Uplink(uplink_config, enterprise=ENT_A, edge_id=EDGE_A, spool=spool)
            task = asyncio.create_task(uplink.run())
            try:
                await spool.put(
                    [
                        Point(
                            device=a.devices[0],
                            ts=T0 + i,
                            kind=PointKind.METRIC,
                            name="temp",
                            value=float(i),
                        )
                        for i in range(30)
                    ]
                )
                async with asyncio.timeout(30):
                    await uplink.wait_acked(30)
            finally:
                await uplink.close()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 30, within=30)
        status, body = await get_health(worker.metrics.health_port or 0)
        assert status == 200
        assert body["status"] == "ok"
        assert body["broker"] == secured.tls_url  # no credentials in it
        assert body["subscriptions_refused"] == []
    finally:
        await worker.close()


@contextlib.asynccontextmanager
async def _session(url: str, **tls: object) -> AsyncIterator[MqttSession]:
    session = MqttSession(
        BrokerConnection(
            url=url,
            username=INGEST_USER,
            password=INGEST_PASSWORD,  # type: ignore[arg-type]
            tls=TlsSettings(**tls),  # type: ignore[arg-type]
            reconnect_max_s=0.5,
        ),
        client_id=f"tls-check-{free_port()}",
        name="tls-check",
        persistent=False,
    )
    task = asyncio.create_task(session.run())
    try:
        async with asyncio.timeout(20):
            await session.first_outcome()
        yield session
    finally:
        await session.disconnect()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_host_names_are_verified_and_client_certificates_sent(secured: Secured) -> None:
    port = secured.broker.tls_port
    ca = secured.pki.ca
    async with _session(f"mqtts://localhost:{port}", ca_file=ca) as session:
        assert session.connected
    # 127.0.0.1 is not a name in the broker's certificate.
    async with _session(f"mqtts://127.0.0.1:{port}", ca_file=ca) as session:
        assert not session.connected
        assert "IP address mismatch" in str(session.last_error)
    async with _session(f"mqtts://127.0.0.1:{port}", ca_file=ca, verify_hostname=False) as session:
        assert session.connected
    # The listener that requires a client certificate: refused without one.
    cert_url = f"mqtts://localhost:{secured.cert_port}"
    async with _session(cert_url, ca_file=ca) as session:
        assert not session.connected
    async with _session(
        cert_url, ca_file=ca, cert_file=secured.pki.client_cert, key_file=secured.pki.client_key
    ) as session:
        assert session.connected


async def test_the_shipped_acl_file_grants_every_subscribe_and_filters_at_delivery(
    secured: Secured,
) -> None:
    """What docs/mqtt-security.md tells operators: Mosquitto 2.0's acl_file never refuses
    a SUBSCRIBE, so a user missing from the ACL is not visible in a SUBACK. (When this
    fails, Mosquitto started checking subscriptions: ingest's /healthz then shows them.)"""
    session = MqttSession(
        BrokerConnection(
            url=secured.tls_url,
            username="zhizao-monitor",
            password=USERS["zhizao-monitor"],  # type: ignore[arg-type]
            tls=TlsSettings(ca_file=secured.pki.ca),
        ),
        client_id="monitor",
        name="monitor",
        persistent=False,
        subscriptions=[("zhizao/v1/+/edge/+/data", 1)],
    )
    task = asyncio.create_task(session.run())
    try:
        async with asyncio.timeout(20):
            await session.subscribed.wait()
        assert session.refused == {}
    finally:
        await session.disconnect()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(("protocol", "reason"), [("5", "0x87"), ("3.1.1", "0x80")])
async def test_an_ingest_user_refused_by_the_acl_fails_health_and_logs_it(
    db_url: str, tmp_path: Path, protocol: str, reason: str
) -> None:
    """A broker that checks SUBSCRIBE (Mosquitto's dynamic security plugin) refuses an
    ingest user without a role: the worker stays up, and says exactly what is wrong."""
    world = dynsec_mosquitto(tmp_path / "dynsec")
    world.add_client(INGEST_USER, INGEST_PASSWORD)
    settings = worker_settings(
        db_url,
        world.broker.url,
        mqtt_username=INGEST_USER,
        mqtt_password=INGEST_PASSWORD,
        mqtt_protocol=protocol,
        health_port=0,
    )
    try:
        with structlog.testing.capture_logs() as logs:
            worker = Worker(settings)
            try:
                await worker.connected()

                health: list[tuple[int, dict[str, Any]]] = []

                async def refused() -> bool:
                    health.append(await get_health(worker.metrics.health_port or 0))
                    return len(health[-1][1]["subscriptions_refused"]) == 2

                await wait_until(refused, within=30, what="both SUBACKs")
                status, body = health[-1]
                metrics = worker.metrics.exposition()
            finally:
                await worker.close()
    finally:
        world.broker.kill()
    assert status == 503
    assert b"zhizao_ingest_subscriptions_refused 2.0" in metrics
    assert body["status"] == "failing"
    assert body["broker_connected"] is True
    topics = [entry["topic"] for entry in body["subscriptions_refused"]]
    expected = ["zhizao/v1/+/edge/+/data", "zhizao/v1/+/edge/+/status"]
    if protocol == "5":
        expected = [f"$share/ingest/{topic}" for topic in expected]
    assert topics == expected
    assert all(reason in entry["reason"] for entry in body["subscriptions_refused"])
    errors = [e for e in logs if e["event"].startswith("broker refused a subscription")]
    assert [e["topic"] for e in errors] == expected
    assert {e["user"] for e in errors} == {INGEST_USER}
