"""The kernel's MQTT adapter (zhizao.mqtt): settings, paho's private members, SUBACKs."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.fix_mqtt import Mosquitto, dynsec_mosquitto, make_pki
from tests.ingest.support import wait_until
from zhizao.mqtt import (
    PAHO_MAJOR,
    BrokerConnection,
    MqttSession,
    PahoClient,
    Received,
    TlsSettings,
    redact_url,
)

SECRET = "reader-secret"  # noqa: S105 - a test broker's password


async def _until(predicate: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return predicate()

    await wait_until(check, within=30, what=what)


def test_credentials_in_the_url_are_percent_decoded_and_kept_out_of_it() -> None:
    conn = BrokerConnection(url="mqtts://91330106MA2B000019%2Fedge%2Fe-1:p%40ss%3Aw%2F@broker:8883")
    assert conn.username == "91330106MA2B000019/edge/e-1"
    assert conn.password is not None
    assert conn.password.get_secret_value() == "p@ss:w/"
    assert "p%40ss" not in conn.url  # logged URLs carry no password
    assert conn.address == "mqtts://broker:8883"
    # Validated again (an env override does so), the moved credentials stay valid.
    again = BrokerConnection.model_validate(conn.model_dump(exclude_unset=True))
    assert again.username == conn.username
    assert "p@ss" not in repr(conn)  # SecretStr


def test_credentials_twice_or_a_password_alone_are_refused() -> None:
    with pytest.raises(ValueError, match="both in url and in username"):
        BrokerConnection(url="mqtt://a:b@h", username="c")
    with pytest.raises(ValueError, match="password is given without username"):
        BrokerConnection(url="mqtt://h", password=SECRET)  # type: ignore[arg-type]
    assert redact_url("mqtt://u:secret@[::1]:1884") == "mqtt://[::1]:1884"


def test_tls_files_are_checked_when_read(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(ValueError, match=r"ca_file[\s\S]*no such file"):
        TlsSettings(ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="not a PEM CA certificate"):
        TlsSettings(ca_file=pki.client_key)
    with pytest.raises(ValueError, match="key_file is given without cert_file"):
        TlsSettings(key_file=pki.client_key)
    with pytest.raises(ValueError, match="not a certificate and its private key"):
        TlsSettings(cert_file=pki.client_cert, key_file=pki.server_key)
    # Relative to the file holding them.
    relative = TlsSettings.model_validate({"ca_file": "ca.pem"}, context={"base_dir": tmp_path})
    assert relative.ca_file == pki.ca
    context = TlsSettings(ca_file=pki.ca, min_version="1.3").context("test")
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert not TlsSettings(ca_file=pki.ca, verify_hostname=False).context("t").check_hostname


def test_paho_private_members_used_by_paho_client_exist() -> None:
    """PahoClient overrides ``_sock_recv`` and calls ``_sock_close`` (no public API does
    either). paho is pinned to the major version checked here (pyproject)."""
    assert int(paho.mqtt.__version__.split(".")[0]) == PAHO_MAJOR
    assert list(inspect.signature(mqtt.Client._sock_recv).parameters) == ["self", "bufsize"]
    assert list(inspect.signature(mqtt.Client._sock_close).parameters) == ["self"]


class _Recording(PahoClient):
    """Remembers the largest read buffer seen, and every instance (to drop one)."""

    instances: list[_Recording] = []  # noqa: RUF012 - a test's registry
    most_buffered = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        _Recording.instances.append(self)

    def _sock_recv(self, bufsize: int) -> bytes:
        chunk = super()._sock_recv(bufsize)
        _Recording.most_buffered = max(_Recording.most_buffered, self.buffered)
        return chunk


def _recording(client_id: str, protocol: MQTTProtocolVersion, persistent: bool) -> PahoClient:
    return _Recording(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)


@contextlib.asynccontextmanager
async def _running(session: MqttSession) -> AsyncIterator[MqttSession]:
    task = asyncio.create_task(session.run())
    try:
        yield session
    finally:
        await session.disconnect()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_buffered_reads_deliver_every_message_and_drop_reconnects(
    own_mosquitto: Mosquitto,
) -> None:
    """Through the overridden ``_sock_recv`` (many packets per recv) nothing is lost;
    ``close()`` (PahoClient.drop, paho's ``_sock_close``) ends the connection at once and
    the running session reconnects."""
    received: list[Received] = []
    session = MqttSession(
        BrokerConnection(url=own_mosquitto.url, reconnect_min_s=0.1),
        client_id="kernel-buffered",
        name="test",
        subscriptions=[("kernel/#", 1)],
        on_message=received.append,
        client_factory=_recording,
    )
    async with _running(session):
        async with asyncio.timeout(20):
            await session.wait_connected()
            await session.subscribed.wait()
        done = [session.publish(f"kernel/{i}", b"x" * 20, qos=1) for i in range(300)]
        async with asyncio.timeout(30):
            await asyncio.gather(*done)
        await _until(lambda: len(received) == 300, "300 messages")
        assert sorted(int(m.topic.split("/")[1]) for m in received) == list(range(300))
        assert _Recording.most_buffered > 100  # several packets came in one recv
        assert {m.generation for m in received} == {1}
        session.close()  # PahoClient.drop(): paho's _sock_close
        assert _Recording.instances[-1].socket() is None
        await _until(lambda: session.connects == 2, "a reconnect")
        assert session.generation == 2
        assert not session.ack(received[0])  # of the first connection: not sent
        assert session.stale_acks == 1


async def test_a_refused_subscription_is_recorded_and_asked_for_again(tmp_path: Path) -> None:
    """Mosquitto's dynamic security plugin refuses SUBSCRIBE without a role: SUBACK 0x87
    (MQTT 5) or 0x80 (3.1.1). Once the role is granted the session's retry succeeds."""
    world = dynsec_mosquitto(tmp_path / "dynsec")
    try:
        world.add_client("reader", SECRET)
        sessions = {
            protocol: MqttSession(
                BrokerConnection(
                    url=world.broker.url,
                    username="reader",
                    password=SECRET,  # type: ignore[arg-type]
                    protocol=protocol,
                ),
                client_id=f"reader-{protocol}",
                name=f"reader-{protocol}",
                subscriptions=[("zhizao/v1/+/edge/+/data", 1)],
                resubscribe_s=0.3,
            )
            for protocol in ("5", "3.1.1")
        }
        async with _running(sessions["5"]), _running(sessions["3.1.1"]):
            async with asyncio.timeout(20):
                for session in sessions.values():
                    await session.subscribed.wait()
            assert sessions["5"].refused == {"zhizao/v1/+/edge/+/data": "Not authorized (0x87)"}
            assert sessions["3.1.1"].refused == {
                "zhizao/v1/+/edge/+/data": "Unspecified error (0x80)"
            }
            assert sessions["5"].problems() == [
                {"topic": "zhizao/v1/+/edge/+/data", "reason": "Not authorized (0x87)"}
            ]
            world.allow_subscribe("reader", "zhizao/v1/#")
            await _until(lambda: not any(s.refused for s in sessions.values()), "granted")
    finally:
        world.broker.kill()
