"""The shipped ACL template ties each edge's credentials to its own topics."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from tests.fix_mqtt import free_port, wait_for_port
from tests.ingest.support import ENT_A, ENT_B, Worker, wait_until, worker_settings
from zhizao.mqtt import PahoClient
from zhizao.wire import data_topic, subscription_filter

ACL = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl.template"
USERS = {
    f"{ENT_A}/edge/edge-a": "secret-a",
    f"{ENT_B}/edge/edge-b": "secret-b",
    "zhizao-ingest": "secret-ingest",
}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[int]:
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd is required (package mosquitto)")
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    # As root, Mosquitto would drop to its own user, which cannot read the temporary files.
    user_line = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(
        f"{user_line}listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {ACL}\n"
    )
    process = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                                "-c", str(config)])
    try:
        wait_for_port(port)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


def _client(port: int, user: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user.replace("/", "_"),
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(user, USERS[user])
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_an_edge_publishes_only_on_its_own_topics(acl_broker: int) -> None:
    received: list[str] = []
    subscribed = threading.Event()
    ingest = _client(acl_broker, "zhizao-ingest")
    ingest.on_message = lambda c, u, m: received.append(m.topic)
    ingest.on_subscribe = lambda *args: subscribed.set()
    ingest.subscribe(f"$share/ingest/{subscription_filter('data')}", qos=1)
    assert subscribed.wait(10)
    edge_a = _client(acl_broker, f"{ENT_A}/edge/edge-a")
    try:
        own = data_topic(ENT_A, "edge-a")
        # Mosquitto drops unauthorised publishes silently (QoS 1 still acknowledged),
        # so publish the forbidden ones first and the allowed one last.
        for topic in (data_topic(ENT_B, "edge-b"), data_topic(ENT_A, "edge-other"), own):
            edge_a.publish(topic, b"{}", qos=1).wait_for_publish(10)
        deadline = threading.Event()
        for _ in range(100):
            if own in received:
                break
            deadline.wait(0.1)
        assert received == [own]
    finally:
        edge_a.loop_stop()
        ingest.loop_stop()


async def test_a_refused_worker_keeps_trying_and_stops_cleanly(
    acl_broker: int, db_url: str
) -> None:
    """Wrong credentials: CONNACK refused, the broker hangs up, the worker tries again
    (its connects run in a thread) without a stray callback on the event loop."""
    attempts: list[int] = []

    class CountingClient(PahoClient):
        def reconnect(self) -> MQTTErrorCode:  # connect() goes through here too
            attempts.append(1)
            return super().reconnect()

    def counting_client(
        client_id: str, protocol: MQTTProtocolVersion, persistent: bool
    ) -> PahoClient:
        return CountingClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)

    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    url = f"mqtt://zhizao-ingest:wrong@127.0.0.1:{acl_broker}"
    worker = Worker(worker_settings(db_url, url), counting_client)
    try:

        async def tried_thrice() -> bool:
            if worker.task.done():
                worker.task.result()
            return len(attempts) >= 3

        await wait_until(tried_thrice, what="three connect attempts")
        assert worker.metrics.broker_connected._value.get() == 0
        assert worker.metrics.callback_errors._value.get() == 0
    finally:
        await worker.close()
        loop.set_exception_handler(None)
    assert loop_errors == []
