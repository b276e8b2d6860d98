"""MQTT fixtures: the machine's Mosquitto, and Mosquitto instances a test owns.

``mqtt_url`` is the shared broker (``ZHIZAO_TEST_MQTT_URL``, default
mqtt://127.0.0.1:1883). Tests that stop or restart a broker use ``own_mosquitto``:
a Mosquitto process of their own on a free port, with persistence in a temporary
folder, that they can ``stop()``, ``kill()`` and ``start()`` again on the same port
without disturbing any other test. ``shipped_mosquitto`` runs the config deploy/
ships (deploy/mosquitto/mosquitto.conf, its ACL template, a password file and TLS
certificates made for the test), changed only in ports and paths.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zhizao.embedded import free_port

MQTT_URL = os.environ.get("ZHIZAO_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Mosquitto:
    """A Mosquitto broker owned by one test."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_config: str = ""
    #: A whole config instead of the test default (``shipped_config``).
    config_text: str | None = None
    #: The TLS listener's port, when the config has one.
    tls_port: int | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "mosquitto.conf"
        if self.config_text is not None:
            config.write_text(self.config_text + self.extra_config)
        else:
            self._write_default(config)
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(config)])
        wait_for_port(self.port)

    def _write_default(self, config: Path) -> None:
        config.write_text(
            # Started as root, Mosquitto drops to the ``mosquitto`` user, which cannot
            # write the test's folder: persistence would silently fail.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
            f"log_dest file {self.folder}/mosquitto.log\n"
            f"{self.extra_config}"
        )

    def stop(self) -> None:
        """Stop cleanly (SIGTERM): Mosquitto writes its persistence file."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def mqtt_url() -> str:
    return MQTT_URL


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed; .ci/run installs it")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.kill()


DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
#: The user deploy/mosquitto/acl.template lets read every uplink topic.
INGEST_USER = "zhizao-ingest"


def edge_user(enterprise: str, edge: str) -> str:
    """The username deploy/mosquitto/acl.template expects of an edge."""
    return f"{enterprise}/edge/{edge}"


def shipped_config(folder: Path, port: int, tls_port: int, users: dict[str, str]) -> str:
    """deploy/mosquitto/mosquitto.conf with ports and paths of a test's own.

    Every other line is the shipped one. Each replaced line must occur exactly once, so
    a change of the shipped file that this does not know fails here, not silently.
    The one addition is ``user``: started as root, Mosquitto would drop to the
    ``mosquitto`` user, which cannot write the test's folder (in production it owns
    /var/lib/mosquitto, as the Debian package sets it up).
    """
    from tests.edge.test_uplink import make_tls_files

    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd is required (package mosquitto)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    passwd = folder / "passwd"
    passwd.touch()
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    ca, cert, key = make_tls_files(folder)
    text = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8")
    for shipped, ours in (
        ("password_file /etc/mosquitto/passwd", f"password_file {passwd}"),
        ("acl_file /etc/mosquitto/acl", f"acl_file {DEPLOY / 'acl.template'}"),
        ("listener 8883\n", f"listener {tls_port} 127.0.0.1\n"),
        ("cafile /etc/mosquitto/certs/ca.crt", f"cafile {ca}"),
        ("certfile /etc/mosquitto/certs/server.crt", f"certfile {cert}"),
        ("keyfile /etc/mosquitto/certs/server.key", f"keyfile {key}"),
        ("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1"),
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {folder}/data/"),
        ("log_dest syslog", f"log_dest file {folder}/mosquitto.log"),
    ):
        if text.count(shipped) != 1:
            raise AssertionError(f"deploy/mosquitto/mosquitto.conf: {shipped!r} not found once")
        text = text.replace(shipped, ours)
    return f"user {getpass.getuser()}\n{text}"


def shipped_mosquitto(folder: Path, users: dict[str, str]) -> Mosquitto:
    """A Mosquitto running the shipped config (not started yet)."""
    port, tls_port = free_port(), free_port()
    config = shipped_config(folder, port, tls_port, users)
    return Mosquitto(folder, port=port, config_text=config, tls_port=tls_port)
