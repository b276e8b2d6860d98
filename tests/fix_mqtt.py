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
from collections.abc import Iterator, Sequence
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


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a broker certificate and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path, names: Sequence[str] = ("localhost", "127.0.0.1")) -> Pki:
    """A CA, a broker certificate for ``names`` (DNS names or IP addresses) and a client
    certificate (CN ``zhizao-test-client``), made with ``cryptography``."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zhizao test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common_name: str, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    pki = Pki(*(folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                      "client.key")))  # fmt: skip
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server = issue(names[0], sans)
    pki.server_cert.write_bytes(server[0])
    pki.server_key.write_bytes(server[1])
    client = issue("zhizao-test-client", [])
    pki.client_cert.write_bytes(client[0])
    pki.client_key.write_bytes(client[1])
    return pki


def shipped_config(
    folder: Path, port: int, tls_port: int, users: dict[str, str], pki: Pki | None = None
) -> str:
    """deploy/mosquitto/mosquitto.conf with ports and paths of a test's own.

    Every other line is the shipped one. Each replaced line must occur exactly once, so
    a change of the shipped file that this does not know fails here, not silently.
    The one addition is ``user``: started as root, Mosquitto would drop to the
    ``mosquitto`` user, which cannot write the test's folder (in production it owns
    /var/lib/mosquitto, as the Debian package sets it up).
    """
    if shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto_passwd is required (package mosquitto)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    passwd = folder / "passwd"
    passwd.touch()
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    pki = pki or make_pki(folder)
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
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


def shipped_mosquitto(
    folder: Path, users: dict[str, str], pki: Pki | None = None, extra_config: str = ""
) -> Mosquitto:
    """A Mosquitto running the shipped config (not started yet)."""
    port, tls_port = free_port(), free_port()
    config = shipped_config(folder, port, tls_port, users, pki)
    return Mosquitto(
        folder, port=port, config_text=config, tls_port=tls_port, extra_config=extra_config
    )


DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
DYNSEC_ADMIN = ("dynsec-admin", "dynsec-admin-secret")


@dataclass
class DynsecMosquitto:
    """A Mosquitto whose ACLs are those of its dynamic security plugin, which checks
    SUBSCRIBE (the shipped acl_file does not): a client without a role may connect and
    is refused every subscription (SUBACK 0x87, or 0x80 with MQTT 3.1.1)."""

    broker: Mosquitto

    def ctrl(self, *args: str) -> None:
        subprocess.run(
            ["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(self.broker.port),
             "-u", DYNSEC_ADMIN[0], "-P", DYNSEC_ADMIN[1], "dynsec", *args],
            check=True, capture_output=True,
        )  # fmt: skip

    def add_client(self, user: str, password: str) -> None:
        self.ctrl("createClient", user, "-p", password)

    def allow_subscribe(self, user: str, pattern: str) -> None:
        role = f"sub-{user}"
        self.ctrl("createRole", role)
        self.ctrl("addRoleACL", role, "subscribePattern", pattern, "allow")
        self.ctrl("addClientRole", user, role)


def dynsec_mosquitto(folder: Path) -> DynsecMosquitto:
    """Started; add clients with :meth:`DynsecMosquitto.add_client`."""
    if not DYNSEC_PLUGIN.exists() or shutil.which("mosquitto_ctrl") is None:
        pytest.fail("Mosquitto's dynamic security plugin and mosquitto_ctrl are required")
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "dynsec.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(state), *DYNSEC_ADMIN],
        check=True, capture_output=True,
    )  # fmt: skip
    broker = Mosquitto(
        folder,
        extra_config=(
            "allow_anonymous false\n"
            f"plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {state}\n"
        ),
    )
    broker.start()
    return DynsecMosquitto(broker)
