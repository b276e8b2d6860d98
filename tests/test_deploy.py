"""What deploy/ ships is valid: systemd units, env examples that the settings read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.settings import EdgeSettings
from ingest import ingest_settings
from ingest.rollup_service import rollup_service_settings
from tests.fix_mqtt import INGEST_USER, Mosquitto, edge_user, make_pki, shipped_mosquitto
from tests.ingest.support import ENT_A
from zhizao.errors import ConfigError
from zhizao.wire import data_topic, subscription_filter

DEPLOY = Path(__file__).parents[1] / "deploy"
ZHIZAO = Path(sys.executable).parent / "zhizao"


def _env_file(name: str) -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / "env" / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _substitute(env: dict[str, str], replace: dict[str, str]) -> dict[str, str]:
    """The env file with installation-specific text replaced; each must occur."""
    text = "\n".join(f"{key}={value}" for key, value in env.items())
    for shipped, ours in replace.items():
        if shipped not in text:
            raise AssertionError(f"{shipped!r} is not in the env example")
        text = text.replace(shipped, ours)
    return dict(line.split("=", 1) for line in text.splitlines())


@pytest.mark.parametrize(
    "unit", ["zhizao-edge.service", "zhizao-ingest@.service", "zhizao-rollup@.service"]
)
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    # The unit as installed, but running this checkout's zhizao and as the current user
    # (verify checks that the binary exists and the user resolves).
    text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
    text = text.replace("/opt/zhizao/bin/zhizao", str(ZHIZAO))
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("User=", "Group=")))
    target = tmp_path / unit.replace("@", "@1") if "@" in unit else tmp_path / unit
    target.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, check=False
    )
    # verify exits 0 even for lines it ignores; what it says is the verdict.
    problems = [
        line for line in (result.stdout + result.stderr).splitlines()
        if "Failed to" in line or "Unknown" in line or "ignoring" in line
    ]  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert problems == []


def test_edge_env_example_is_read_by_the_edge_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_file("edge.env.example")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = EdgeSettings()
    assert settings.uplink_username == env["ZHIZAO_EDGE_UPLINK_USERNAME"]
    assert settings.uplink_password is not None
    assert settings.http_port == 9108


def test_ingest_env_example_is_read_by_the_ingest_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = _env_file("ingest.env.example")
    ca = make_pki(tmp_path).ca
    env = _substitute(env, {"/etc/zhizao/certs/ca.crt": str(ca)})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # As shipped, the example's placeholders are refused, each naming its variable.
    with pytest.raises(ConfigError, match="ZHIZAO_DB_URL: the password is the example's"):
        ingest_settings()
    env = _substitute(env, {"zhizao:change-me@": "zhizao:s3cret-db@"})
    monkeypatch.setenv("ZHIZAO_DB_URL", env["ZHIZAO_DB_URL"])
    with pytest.raises(ConfigError, match="ZHIZAO_INGEST_MQTT_PASSWORD: the password is the"):
        ingest_settings()
    env = _substitute(env, {"PASSWORD=change-me": "PASSWORD=s3cret-mqtt"})
    monkeypatch.setenv("ZHIZAO_INGEST_MQTT_PASSWORD", env["ZHIZAO_INGEST_MQTT_PASSWORD"])
    settings = ingest_settings()
    assert settings.database.url == env["ZHIZAO_DB_URL"]
    assert settings.database.metric_retention_days == 400
    assert settings.mqtt_url == env["ZHIZAO_INGEST_MQTT_URL"]
    assert settings.broker.use_tls
    assert settings.broker.username == INGEST_USER  # the ACL template's ingest user
    assert settings.broker.tls is not None
    assert settings.broker.tls.ca_file == ca
    assert settings.broker.tls.verify_hostname
    assert settings.shared_group == "ingest"
    assert settings.health_port == 9109
    assert settings.rollups is False  # zhizao rollup serve runs them


def test_rollup_env_example_is_read_by_the_rollup_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _env_file("rollup.env.example")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # As shipped, the example's placeholder password is refused, naming its variable.
    with pytest.raises(ConfigError, match="ZHIZAO_DB_URL: the password is the example's"):
        rollup_service_settings()
    env = _substitute(env, {"zhizao:change-me@": "zhizao:s3cret-db@"})
    monkeypatch.setenv("ZHIZAO_DB_URL", env["ZHIZAO_DB_URL"])
    monkeypatch.setenv("ZHIZAO_ROLLUP_RETRY_MAX_S", "soon")
    with pytest.raises(ConfigError, match="ZHIZAO_ROLLUP_RETRY_MAX_S: "):
        rollup_service_settings()
    monkeypatch.setenv("ZHIZAO_ROLLUP_RETRY_MAX_S", env["ZHIZAO_ROLLUP_RETRY_MAX_S"])
    settings = rollup_service_settings()
    assert settings.database.url == env["ZHIZAO_DB_URL"]
    assert settings.health_port == 9110
    assert (settings.retry_initial_s, settings.retry_max_s) == (1, 60)
    assert settings.rollup.interval_s == 60
    assert settings.rollup.chunk_devices == 500


# -- the shipped broker config ------------------------------------------------------


class _Client:
    """A paho MQTT 5 client in its own thread, recording what happens to it."""

    def __init__(self, broker: Mosquitto, user: str | None, password: str | None = None,
                 *, client_id: str, tls_ca: Path | None = None,
                 session_expiry_s: int = 0) -> None:  # fmt: skip
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.messages: list[bytes] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.append(bytes(m.payload))
        if user is not None:
            self.client.username_pw_set(user, password)
        port = broker.port
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
            port = broker.tls_port or 0
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry_s
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:  # fmt: skip
        self.connack = reason
        self.connected.set()

    def accepted(self) -> bool:
        """Whether the broker accepted the connection (its CONNACK)."""
        if not self.connected.wait(10) or self.connack is None:
            raise AssertionError("no CONNACK within 10 s")
        return not self.connack.is_failure

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _puback_reason(broker: Mosquitto, client: _Client, topic: str, payload: bytes) -> ReasonCode:
    codes: list[ReasonCode] = []
    published = threading.Event()

    def on_publish(c: Any, u: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        codes.append(reason)
        published.set()

    client.client.on_publish = on_publish
    client.publish(topic, payload)
    assert published.wait(30)
    return codes[0]


def test_the_shipped_broker_config_runs_with_the_real_mosquitto(tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf as shipped (ports and paths of the test's own):
    authentication, the TLS listener, the size limits and persistence do what it says."""
    enterprise, edge = ENT_A, "edge-a"
    edge_name = edge_user(enterprise, edge)
    users = {edge_name: "secret-edge", INGEST_USER: "secret-ingest"}
    broker = shipped_mosquitto(tmp_path / "broker", users)
    broker.start()
    clients: list[_Client] = []
    try:
        log = (tmp_path / "broker" / "mosquitto.log").read_text()
        assert "Error" not in log
        anonymous = _Client(broker, None, client_id="anonymous")
        clients.append(anonymous)
        assert not anonymous.accepted()
        # Ingest subscribes with a persistent session, then goes away.
        ingest = _Client(broker, INGEST_USER, "secret-ingest", client_id="ingest-1",
                         session_expiry_s=3600)  # fmt: skip
        assert ingest.accepted()
        ingest.client.subscribe(subscription_filter("data"), qos=1)
        ingest.client.loop_stop()
        ingest.client.disconnect()
        # The edge publishes over TLS, checked against the test's CA.
        sender = _Client(broker, edge_name, "secret-edge", client_id="edge-a",
                         tls_ca=tmp_path / "broker" / "ca.pem")  # fmt: skip
        clients.append(sender)
        assert sender.accepted()
        topic = data_topic(enterprise, edge)
        assert not _puback_reason(broker, sender, topic, b'{"queued": 1}').is_failure
        # A payload above the contract's 4 MiB is taken (ingest dead-letters it) ...
        assert not _puback_reason(broker, sender, topic, b"x" * (5 * 2**20)).is_failure
        assert not sender.disconnected.is_set()
        # ... a packet above max_packet_size is not even read: the sender is disconnected.
        sender.publish(topic, b"x" * (5 * 2**20 + 128 * 1024))
        assert sender.disconnected.wait(30)
        # Persistence: the queued message survives a restart (saved on SIGTERM).
        broker.stop()
        assert (tmp_path / "broker" / "data" / "mosquitto.db").stat().st_size > 0
        broker.start()
        back = _Client(broker, INGEST_USER, "secret-ingest", client_id="ingest-1",
                       session_expiry_s=3600)  # fmt: skip
        clients.append(back)
        assert back.accepted()
        deadline = time.monotonic() + 30
        while len(back.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert back.messages == [b'{"queued": 1}', b"x" * (5 * 2**20)]
    finally:
        for client in clients:
            client.close()
        broker.kill()


def test_the_broker_config_is_the_whole_file_debian_starts() -> None:
    """Debian's mosquitto.service runs ``-c /etc/mosquitto/mosquitto.conf``, whose default
    includes conf.d and sets persistence_location itself: a second persistence_location
    is an error that stops the broker. The shipped file replaces it, includes nothing,
    and keeps the package's data directory (created, owned by mosquitto)."""
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    lines = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    settings = {words[0]: words[1:] for words in lines}
    assert "include_dir" not in settings
    assert settings["persistence"] == ["true"]
    assert settings["persistence_location"] == ["/var/lib/mosquitto/"]
    assert "user" not in settings  # the default, mosquitto: the owner of /var/lib/mosquitto
    assert "/etc/mosquitto/mosquitto.conf" in text  # where it goes


# -- one installation: the broker, the env examples and the units together -------------


def test_units_and_env_examples_name_the_same_files() -> None:
    pairs = (("zhizao-edge.service", "edge.env"), ("zhizao-ingest@.service", "ingest.env"))
    for unit, env in pairs:
        text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
        example = (DEPLOY / "env" / f"{env}.example").read_text(encoding="utf-8")
        assert f"EnvironmentFile=-/etc/zhizao/{env}" in text or (
            f"EnvironmentFile=/etc/zhizao/{env}" in text
        )
        assert example.startswith(f"# /etc/zhizao/{env} ")
        assert f"deploy/systemd/{unit}" in example


async def _register_env_edge(db_url: str, enterprise: str, edge: str) -> None:
    from zhizao.registry import Device, DeviceType, EdgeGateway, Enterprise, Region
    from zhizao.storage.connection import connect
    from zhizao.storage.registry import (
        upsert_devices,
        upsert_edges,
        upsert_enterprises,
        upsert_regions,
    )

    conn = await connect(db_url)
    async with conn, conn.transaction():
        await upsert_regions(conn, [Region(code="330000", name="浙江省"),
                                    Region(code="330200", name="宁波市"),
                                    Region(code="330206", name="北仑区")])  # fmt: skip
        await upsert_enterprises(conn, [Enterprise(
            credit_code=enterprise, name="宁波某模具厂", region_code="330206", industry_code="C35"
        )])  # fmt: skip
        await upsert_devices(conn, [Device(enterprise=enterprise, code="CNC-01", name="CNC-01",
                                           device_type=DeviceType.CNC_MACHINE_TOOL)])  # fmt: skip
        for edge_id in (edge, f"{edge}-OTHER"):
            await upsert_edges(conn, [EdgeGateway(enterprise=enterprise, edge_id=edge_id)])


@dataclass
class Installation:
    """deploy/mosquitto (TLS listener, password file, ACL template) running, and the
    env examples applied with only addresses, ports and paths replaced."""

    enterprise: str
    edge: str
    broker: Mosquitto
    tmp_path: Path

    async def send(
        self, edge_id: str, count: int, first_ms: int = 1_764_000_000_000, per_message: int = 0
    ) -> Any:
        """``count`` points of CNC-01 from an edge configured from edge.env.example; with
        ``per_message``, that many per uplink message (a pause longer than the uplink's
        batching wait after each), so that a shared subscription has messages to split."""
        from edge.config import EdgeConfig
        from edge.settings import apply_settings, edge_settings
        from edge.spool import Spool
        from edge.uplink import Uplink
        from zhizao.wire import Point, PointKind

        # A source is required of a config; this one is never started.
        topic = {"topic": "t/{device}", "fields": [{"path": "v", "name": "v"}]}
        source = {"type": "mqtt", "name": "unused", "broker": {"url": "mqtt://x"}}
        source["topics"] = [topic]
        base = EdgeConfig.model_validate({
            "identity": {"enterprise": self.enterprise, "edge_id": edge_id},
            "uplink": {"url": "mqtt://overridden:1883", "batch_max_wait_s": 0.05},
            "spool": {"path": str(self.tmp_path / f"{edge_id}.db")},
            "sources": [source],
        })  # fmt: skip
        config = apply_settings(base, edge_settings())
        assert config.uplink.address == f"mqtts://localhost:{self.broker.tls_port}"
        async with Spool(config.spool.path, enterprise=self.enterprise, edge=edge_id) as spool:
            uplink = Uplink(config.uplink, enterprise=self.enterprise, edge_id=edge_id,
                            spool=spool)  # fmt: skip
            task = asyncio.create_task(uplink.run())
            try:
                for i in range(count):
                    await spool.put([Point(device="CNC-01", ts=first_ms + i * 1000,
                                           kind=PointKind.METRIC, name="spindle_speed",
                                           value=float(i))])  # fmt: skip
                    if per_message and (i + 1) % per_message == 0:
                        await asyncio.sleep(0.15)
                async with asyncio.timeout(30):
                    await uplink.wait_for(
                        lambda s: s.points_sent >= count or s.batches_rejected > 0
                    )
            finally:
                await uplink.close()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return uplink


@contextlib.asynccontextmanager
async def _installation(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Installation]:
    # The secrets an installation chooses (the examples' placeholders are refused).
    chosen = {"PASSWORD=change-me": "PASSWORD=s3cret-of-ours"}
    edge_env = _substitute(_env_file("edge.env.example"), chosen)
    ingest_env = _substitute(_env_file("ingest.env.example"), chosen)
    # The ACL pattern's user name form: the edge's identity is in it.
    enterprise, _, edge = edge_env["ZHIZAO_EDGE_UPLINK_USERNAME"].partition("/edge/")
    users = {
        edge_env["ZHIZAO_EDGE_UPLINK_USERNAME"]: edge_env["ZHIZAO_EDGE_UPLINK_PASSWORD"],
        ingest_env["ZHIZAO_INGEST_MQTT_USERNAME"]: ingest_env["ZHIZAO_INGEST_MQTT_PASSWORD"],
    }
    pki = make_pki(tmp_path / "pki", names=("localhost",))
    broker = shipped_mosquitto(tmp_path / "broker", users, pki)
    broker.start()
    try:
        # The broker's address and the CA: what an installation fills in.
        place = {"broker.internal:8883": f"localhost:{broker.tls_port}",
                 "/etc/zhizao/certs/ca.crt": str(pki.ca)}  # fmt: skip
        for key, value in _substitute(edge_env, {**place, "=9108": "=0"}).items():
            monkeypatch.setenv(key, value)
        ingest_place = {**place, "postgresql://zhizao:change-me@db.internal:5432/zhizao": db_url,
                        "HEALTH_PORT=9109": "HEALTH_PORT=0"}  # fmt: skip
        for key, value in _substitute(ingest_env, ingest_place).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ZHIZAO_INGEST_CLIENT_ID", "ingest-test-1")  # as the unit sets it
        await _register_env_edge(db_url, enterprise, edge)
        yield Installation(enterprise, edge, broker, tmp_path)
    finally:
        broker.kill()


async def test_an_edge_and_an_ingest_worker_from_the_env_examples_meet_on_the_shipped_broker(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both env examples read by the settings classes: the edge's batches reach the
    database through ingest, and the edge cannot publish under another edge id (the
    broker refuses it; nothing is stored)."""
    from tests.ingest.support import Worker, get_health, scalar, wait_for_count

    async with _installation(db_url, tmp_path, monkeypatch) as site:
        worker = Worker(ingest_settings())
        try:
            await worker.connected()
            own = await site.send(site.edge, 20)
            assert own.stats.points_sent == 20
            await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 20, within=30)
            # The same credentials under another edge id of the same enterprise: refused.
            other = await site.send(f"{site.edge}-OTHER", 5)
            assert other.stats.points_sent == 0
            assert other.stats.batches_rejected > 0
            status, body = await get_health(worker.metrics.health_port or 0)
            assert (status, body["status"]) == (200, "ok")
            assert await scalar(db_url, "SELECT count(*) FROM metric_point") == 20
        finally:
            await worker.close()


def _rollup_serve(db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    # Two days of history to cover, not the default 62: the points are of today.
    env = {**os.environ, "ZHIZAO_DB_URL": db_url, "ZHIZAO_ROLLUP_RETRY_MAX_S": "1",
           "ZHIZAO_KPI_HISTORY_DAYS": "2"}  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(ZHIZAO), "--log-json", "rollup", "serve", "--health-port", str(port),
             "--interval-s", "0.2"],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip


async def test_the_secured_installation_end_to_end_with_two_of_each(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edge → TLS Mosquitto with the shipped ACL → two ingest workers on the shared
    subscription → PostgreSQL → two `zhizao rollup serve`; one rollup service is killed
    with SIGKILL, and the other rolls up everything the edge sent (no dirty mark lost)."""
    from tests.ingest.support import Worker, http_health, scalar, wait_for_count, wait_until
    from zhizao.embedded import free_port

    async with _installation(db_url, tmp_path, monkeypatch) as site:
        workers = [Worker(ingest_settings()), Worker(ingest_settings(client_id="ingest-test-2"))]
        ports = [free_port(), free_port()]
        rollups = [_rollup_serve(db_url, port, tmp_path / f"rollup-{i}.log")
                   for i, port in enumerate(ports)]  # fmt: skip
        try:
            for worker in workers:
                await worker.connected()
            # Points of the last two hours: inside the rollups' history window.
            now_ms = int(time.time() * 1000) // 3_600_000 * 3_600_000
            sent = await site.send(site.edge, 60, first_ms=now_ms - 5_400_000, per_message=5)
            assert sent.stats.points_sent == 60
            await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 60, within=60)
            # The shared subscription split the stream: each worker wrote some of it.
            written = [
                w.metrics.registry.get_sample_value(
                    "zhizao_ingest_rows_written_total", {"table": "metric_point"}
                ) or 0
                for w in workers
            ]
            assert all(n > 0 for n in written), written
            assert sum(written) == 60
            rollups[0].kill()  # kill -9, whatever it was doing
            rollups[0].wait(timeout=30)
            sent = await site.send(site.edge, 60, first_ms=now_ms - 1_800_000)
            await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 120, within=60)

            async def rolled_up() -> bool:
                dirty = await scalar(db_url, "SELECT count(*) FROM rollup_dirty")
                points = await scalar(
                    db_url, "SELECT coalesce(sum(points), 0) FROM rollup_device_hour"
                )
                return bool(dirty == 0 and points == 120)

            await wait_until(rolled_up, within=60, what="every point rolled up")
            assert rollups[1].poll() is None  # the survivor kept running
            status, body = http_health(ports[1])
            assert status == 200, body
        finally:
            for process in rollups:
                if process.poll() is None:
                    process.terminate()
                    process.wait(timeout=30)
            for worker in workers:
                await worker.close()
