"""The uplink against real brokers: Mosquitto (MQTT 5) and amqtt (MQTT 3.1.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.config import UplinkConfig
from edge.spool import Spool
from edge.uplink import Uplink
from tests.edge.subscriber import Subscriber
from tests.fix_mqtt import Mosquitto, make_pki
from zhizao.embedded import EmbeddedBroker
from zhizao.wire import Connectivity, Point, PointKind, data_topic, status_topic

ENTERPRISE = "91330106MA2XXXXX0Y"
EDGE = "edge-up"
T0 = 1_764_000_000_000
PASSWORD = "s3cret"  # noqa: S105 - a test broker's password


def points(start: int, count: int) -> list[Point]:
    return [
        Point(device="cnc-01", ts=T0 + i, kind=PointKind.METRIC, name="speed", value=i)
        for i in range(start, start + count)
    ]


@contextlib.asynccontextmanager
async def running(
    url: str, spool_path: Path, **uplink: object
) -> AsyncIterator[tuple[Spool, Uplink]]:
    config = UplinkConfig(url=url, batch_max_points=50, batch_max_wait_s=0.05, **uplink)  # type: ignore[arg-type]
    async with Spool(spool_path, enterprise=ENTERPRISE, edge=EDGE) as spool:
        up = Uplink(config, enterprise=ENTERPRISE, edge_id=EDGE, spool=spool)
        task = asyncio.create_task(up.run())
        try:
            yield spool, up
        finally:
            await up.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def subscriber(url: str) -> Subscriber:
    topics = [data_topic(ENTERPRISE, EDGE), status_topic(ENTERPRISE, EDGE)]
    return await Subscriber(url, topics).start()


async def test_points_reach_mosquitto_over_mqtt5_in_sequence(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    sub = await subscriber(own_mosquitto.url)
    try:
        async with running(own_mosquitto.url, tmp_path / "spool.db") as (spool, up):
            for start in range(0, 500, 25):
                await spool.put(points(start, 25))
            await up.wait_acked(500)
            await sub.wait_points(500)
            assert up.stats.protocol == "5"
            assert spool.stats.depth_points == 0
        received = sorted(int(p.value) for p in sub.points())
        assert received == list(range(500))
        seqs = [b.seq for b in sub.batches]
        assert seqs == sorted(seqs)
        assert seqs[0] == 0
        await sub.wait_until(lambda: any(s.status is Connectivity.OFFLINE for s in sub.statuses))
        assert sub.statuses[0].status is Connectivity.ONLINE
        assert sub.statuses[-1].reason == "shutdown"
    finally:
        sub.stop()


async def test_uplink_falls_back_to_mqtt311_on_amqtt(tmp_path: Path) -> None:
    async with EmbeddedBroker() as broker:
        sub = await subscriber(broker.url)
        try:
            async with running(broker.url, tmp_path / "spool.db") as (spool, up):
                await spool.put(points(0, 120))
                await up.wait_acked(120)
                await sub.wait_points(120)
                assert up.stats.protocol == "3.1.1"
                assert spool.stats.depth_points == 0
        finally:
            sub.stop()
        assert sorted(int(p.value) for p in sub.points()) == list(range(120))


async def test_birth_is_retained_for_late_subscribers(
    own_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with running(own_mosquitto.url, tmp_path / "spool.db") as (spool, up):
        await spool.put(points(0, 1))
        await up.wait_acked(1)
        late = await subscriber(own_mosquitto.url)
        try:
            await late.wait_until(lambda: bool(late.statuses))
            birth = late.statuses[0]
            assert birth.status is Connectivity.ONLINE
            assert (birth.enterprise, birth.edge) == (ENTERPRISE, EDGE)
        finally:
            late.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_explicit_protocol_is_used(
    own_mosquitto: Mosquitto, tmp_path: Path, protocol: str
) -> None:
    async with running(own_mosquitto.url, tmp_path / "spool.db", protocol=protocol) as (
        spool,
        up,
    ):
        await spool.put(points(0, 10))
        await up.wait_acked(10)
        assert up.stats.protocol == protocol


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto with a password file and an ACL that lets ``edge`` publish status only.

    (The Mosquitto fixture runs the broker as the current user, so it can read the
    test's temporary folder.)
    """
    folder = tmp_path / "secured"
    folder.mkdir()
    passwords = folder / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", PASSWORD], check=True)
    acl = folder / "acl"
    acl.write_text(
        f"user edge\ntopic write {status_topic(ENTERPRISE, EDGE)}\n"
        f"topic read {status_topic(ENTERPRISE, EDGE)}\n"
    )
    broker = Mosquitto(
        folder,
        extra_config=f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n",
    )
    broker.start()
    yield broker
    broker.kill()


async def test_credentials_are_used_and_a_rejected_batch_stays_in_the_spool(
    secured_broker: Mosquitto, tmp_path: Path
) -> None:
    async with running(
        secured_broker.url, tmp_path / "spool.db", username="edge", password=PASSWORD
    ) as (spool, up):
        await up.session.wait_connected()
        await spool.put(points(0, 10))
        # The ACL does not allow the data topic: MQTT 5 PUBACK "not authorised".
        async with asyncio.timeout(30):
            await up.wait_for(lambda stats: stats.batches_rejected > 0)
        assert up.stats.points_sent == 0
        assert spool.stats.depth_points == 10  # never dropped because the broker said no


async def test_wrong_password_keeps_retrying_without_losing_data(
    secured_broker: Mosquitto, tmp_path: Path
) -> None:
    async with running(
        secured_broker.url,
        tmp_path / "spool.db",
        username="edge",
        password=PASSWORD + "-wrong",
        reconnect_max_s=0.5,
    ) as (spool, up):
        await spool.put(points(0, 10))
        async with asyncio.timeout(30), up.session.attempted:
            await up.session.attempted.wait_for(lambda: "refused" in str(up.session.last_error))
        assert not up.stats.connected
        assert spool.stats.depth_points == 10


async def test_uplink_over_tls_checks_the_broker_certificate(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    pki = make_pki(folder, names=("localhost", "127.0.0.1"))
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
    broker = Mosquitto(folder, extra_config=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    try:
        url = f"mqtts://127.0.0.1:{broker.port}"
        async with running(url, tmp_path / "spool.db", tls={"ca_file": str(ca)}) as (spool, up):
            await spool.put(points(0, 5))
            await up.wait_acked(5)
        # Without the CA the broker's certificate is not trusted: no connection.
        async with running(url, tmp_path / "other.db") as (spool, up):
            async with asyncio.timeout(30), up.session.attempted:
                await up.session.attempted.wait_for(lambda: up.session.connect_failures > 0)
            assert "CERTIFICATE_VERIFY_FAILED" in str(up.session.last_error)
            assert not up.stats.connected
    finally:
        broker.kill()
