"""Settings of the ingest service (env prefix ``ZHIZAO_INGEST_``), built by a factory.

Delivery is at-least-once from the broker in both subscription modes: the worker
always keeps a persistent session (clean start off, a session expiry) under a stable
client id, so messages that were delivered but not acknowledged when it stopped are
delivered again when it comes back. ``shared_group`` adds an MQTT 5 shared
subscription (``$share/<group>/...``) so that several workers split the stream; with
an MQTT 3.1.1 broker (the demo's amqtt) there are no shared subscriptions and the
worker uses a plain persistent session (clean_session False).

The broker connection is the kernel's (:class:`zhizao.mqtt.BrokerConnection`):
``mqtt_url`` (``mqtts://`` for TLS), ``mqtt_username`` and ``mqtt_password`` (a secret,
never logged) or percent-encoded credentials in the URL, and the TLS files and
options ``mqtt_tls_*``. A wrong value is a :class:`zhizao.errors.ConfigError` naming
the variable (``ZHIZAO_INGEST_MQTT_TLS_CA_FILE: no such file: ...``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.directory import DEFAULT_MAX_METRIC_NAMES
from zhizao.mqtt import BrokerConnection, TlsSettings
from zhizao.settings import DatabaseSettings, config_error, database_settings
from zhizao.storage.rollups import RollupSettings
from zhizao.wire import MAX_PAYLOAD_BYTES

_PREFIX = "ZHIZAO_INGEST_"
#: Room for the topic, the properties and the fixed header of a PUBLISH.
_PACKET_OVERHEAD = 64 * 1024
MIN_PACKET_BYTES = MAX_PAYLOAD_BYTES + _PACKET_OVERHEAD
#: deploy/mosquitto/mosquitto.conf's max_packet_size.
MAX_PACKET_BYTES = 5 * 2**20 + _PACKET_OVERHEAD


#: BrokerConnection's fields → the settings they come from.
_BROKER_KEYS = {
    "url": "mqtt_url",
    "username": "mqtt_username",
    "password": "mqtt_password",
    "protocol": "mqtt_protocol",
    "reconnect_min_s": "retry_initial_s",
    "reconnect_max_s": "retry_max_s",
}


def _named(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: str,
    whole: str,
    keys: dict[str, str] | None = None,
) -> str:
    """``ZHIZAO_INGEST_<KEY>: problem`` for the first error of a nested model."""
    first = exc.errors(include_url=False)[0]
    problem = str(first["msg"]).removeprefix("Value error, ")
    if first["loc"]:
        field: str | None = str(first["loc"][0])
    else:
        # A check of the whole model names its field first ("key_file is given ...").
        word = problem.split(" ", 1)[0]
        field = word if word in model.model_fields else None
    key = whole if field is None else (keys or {}).get(field, prefix + field)
    return f"{_PREFIX}{key.upper()}: {problem}"


def _default_client_id() -> str:
    # Stable across restarts of the same worker on the same host: the persistent
    # session is found again by this id.
    return f"zhizao-ingest-{socket.gethostname()}"[:64]


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIZAO_INGEST_", extra="ignore")

    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="mqtt://host[:port], or mqtts:// for TLS (credentials percent-encoded)",
    )
    mqtt_username: str | None = Field(default=None, min_length=1, max_length=256)
    mqtt_password: SecretStr | None = None
    #: TLS: the CA that signed the broker's certificate (else the system trust store);
    #: setting any mqtt_tls_* also turns TLS on for an mqtt:// URL.
    mqtt_tls_ca_file: Path | None = None
    #: Client certificate and key, for a broker that authenticates by certificate.
    mqtt_tls_cert_file: Path | None = None
    mqtt_tls_key_file: Path | None = None
    #: Check that the broker's certificate names the host (off only by choice, logged).
    mqtt_tls_verify_hostname: bool = True
    mqtt_tls_min_version: Literal["1.2", "1.3"] = "1.2"
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    client_id: str = Field(default_factory=_default_client_id, min_length=1, max_length=64)
    #: MQTT 5 shared subscription group; None subscribes plainly (single worker).
    shared_group: str | None = "ingest"
    #: How long the broker keeps the session (and queues messages) while the worker
    #: is away; 0 would lose what arrives during a restart.
    session_expiry_s: int = Field(default=24 * 3600, ge=1)
    keepalive_s: int = Field(default=30, ge=5)
    #: Unacknowledged messages the broker may have in flight to this worker (MQTT 5
    #: Receive Maximum). Bounds memory whatever the rate: the broker stops sending
    #: until commits acknowledge. With 3.1.1 the worker stops reading the socket at
    #: this many buffered messages instead.
    max_inflight: int = Field(default=4000, ge=1, le=65535)
    #: Payload bytes received and not yet acknowledged (the inbox and the batches in
    #: hand): the worker stops reading at this many, as at ``max_inflight`` messages,
    #: and resumes at half. Bounds memory whatever the message size (docs/ingest.md,
    #: "Memory"); a window of ``max_inflight`` 4 MiB messages would be 16 GiB.
    inflight_max_bytes: int = Field(default=64 * 2**20, ge=2**20)
    #: Largest MQTT packet taken from the broker. MQTT 5: announced as the CONNECT's
    #: Maximum Packet Size, and the broker drops bigger messages for this worker
    #: (Mosquitto logs "Dropping too large outgoing PUBLISH"); 3.1.1 cannot say so, so a
    #: bigger message is acknowledged and dropped on arrival, logged and counted. The
    #: floor is the contract's payload limit plus room for topic and headers, so that no
    #: valid batch is refused; the default is the shipped broker's max_packet_size, so
    #: that whatever the broker accepts reaches ingest (oversize: the dead letters).
    max_packet_bytes: int = Field(default=MAX_PACKET_BYTES, ge=MIN_PACKET_BYTES, le=268_435_460)
    #: A batch is committed when it holds this many points ...
    batch_max_points: int = Field(default=50_000, ge=1)
    #: ... or this many messages ...
    batch_max_messages: int = Field(default=2_000, ge=1)
    #: ... or when its first message has waited this long.
    batch_max_wait_ms: int = Field(default=200, ge=1)
    #: The cyclic garbage collector looks at young objects after this many allocations
    #: (Python's default is 700; 0 keeps it). Ingest allocates several short-lived
    #: objects per point and makes almost no cycles: at 700, the collector took 40 %
    #: of decoding and converting (docs/benchmarks.md, "Ingest").
    gc_young_threshold: int = Field(default=10_000, ge=0)
    #: How long the digest of each message is kept, to tell a sequence number re-sent
    #: with the same content (a replay) from one re-sent with other content (a
    #: conflict). Beyond it a re-sent number counts as a replay; keep it longer than
    #: the edges' spool max_age (default 7 days).
    sequence_digest_retention_s: float = Field(default=8 * 86_400, gt=0)
    #: Points whose source timestamp is further ahead of ingest's clock are rejected.
    max_future_s: float = Field(default=86_400, gt=0)
    #: How long to wait before asking the database again about an unknown edge or device.
    registry_miss_retry_s: float = Field(default=5.0, ge=0)
    #: Known edges and devices are re-read after this long (moves between enterprises).
    registry_ttl_s: float = Field(default=300.0, gt=0)
    #: Distinct metric names one enterprise may use. Points under a new name beyond it
    #: go to the dead letters (the reason names the enterprise and this limit), so a
    #: misconfigured edge cannot grow the metric table and the caches without bound.
    max_metric_names: int = Field(default=DEFAULT_MAX_METRIC_NAMES, ge=1)
    #: Backoff bounds for database and broker reconnects.
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    #: On SIGTERM, how long to keep retrying the batch in hand if the database is down.
    shutdown_grace_s: float = Field(default=15.0, ge=0)
    #: Health and Prometheus endpoint; None disables it, 0 picks a free port.
    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=9109, ge=0, le=65535)  # the edge has 9108
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    #: Run the KPI rollups on a schedule inside this worker (the demo, one-host trials).
    #: In production they are their own service, ``zhizao rollup serve``
    #: (ingest.rollup_service); several of either may run: a lock lets one run at a time.
    rollups: bool = False
    rollup: RollupSettings = Field(default_factory=RollupSettings)

    _broker: BrokerConnection = PrivateAttr()

    @model_validator(mode="after")
    def _v311_has_no_shared_subscriptions(self) -> IngestSettings:
        if self.mqtt_protocol == "3.1.1":
            self.shared_group = None
        return self

    @model_validator(mode="after")
    def _broker_connection(self) -> IngestSettings:
        tls_values = {
            "ca_file": self.mqtt_tls_ca_file,
            "cert_file": self.mqtt_tls_cert_file,
            "key_file": self.mqtt_tls_key_file,
        }
        given = {key: value for key, value in tls_values.items() if value is not None}
        tls_options = {
            "verify_hostname": self.mqtt_tls_verify_hostname,
            "min_version": self.mqtt_tls_min_version,
        }
        try:
            tls = TlsSettings(**given, **tls_options) if given else None
        except ValidationError as exc:
            raise ValueError(_named(exc, TlsSettings, "mqtt_tls_", "mqtt_tls_cert_file")) from exc
        try:
            self._broker = BrokerConnection(
                url=self.mqtt_url,
                username=self.mqtt_username,
                password=self.mqtt_password,
                tls=tls,
                protocol=self.mqtt_protocol,
                client_id=self.client_id,
                keepalive_s=self.keepalive_s,
                reconnect_min_s=self.retry_initial_s,
                reconnect_max_s=self.retry_max_s,
                session_expiry_s=self.session_expiry_s,
            )
        except ValidationError as exc:
            raise ValueError(_named(exc, BrokerConnection, "", "mqtt_url", _BROKER_KEYS)) from exc
        if self.mqtt_url.startswith(("mqtts:", "ssl:")) and tls is None:
            self._broker.tls = TlsSettings(**tls_options)
        return self

    @property
    def broker(self) -> BrokerConnection:
        """The broker connection these settings describe (the kernel's model)."""
        return self._broker

    @property
    def mqtt_host(self) -> str:
        return self._broker.host

    @property
    def mqtt_port(self) -> int:
        return self._broker.port


def ingest_settings(**overrides: object) -> IngestSettings:
    """Settings from the environment, with explicit ``overrides`` taking precedence.

    The database comes from ``ZHIZAO_DB_*`` unless ``database`` (DatabaseSettings) or
    ``db_url`` is given. A wrong value is a ConfigError naming its variable.
    """
    db_url = overrides.pop("db_url", None)
    if "database" not in overrides:
        # Built here, not by the field's default factory, so that a wrong ZHIZAO_DB_*
        # is named as such (ConfigError), not as a ZHIZAO_INGEST_ variable.
        overrides["database"] = (
            database_settings() if db_url is None else database_settings(url=str(db_url))
        )
    if "client_id" not in overrides and (worker := os.environ.get("ZHIZAO_INGEST_WORKER")):
        overrides["client_id"] = f"{_default_client_id()}-{worker}"[:64]
    try:
        return IngestSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise config_error(exc, _PREFIX) from exc
