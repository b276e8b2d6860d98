"""The one MQTT adapter: paho-mqtt driven from asyncio (edge uplink, edge MQTT collector, ingest).

Design
------
A :class:`MqttSession` owns one paho client and drives it from the event loop, the way
paho's own asyncio example does: paho says when its socket opens, closes or has data
to write (``on_socket_*`` callbacks), and the loop calls ``loop_read``/``loop_write``
when the socket is ready and ``loop_misc`` once a second for keep-alives. No paho
thread runs, so every MQTT callback runs on the loop thread and its users need no
locks. Only the blocking TCP/TLS connect is done in a worker thread (a broker host that
drops packets must not stall the loop); the socket callbacks fired there hop onto the
loop, and a connect abandoned at shutdown that gets through after all is closed.

Reconnecting is :meth:`MqttSession.run`, an explicit task: connect, wait for the
CONNACK, subscribe, run the ``on_connected`` hook, wait for the connection to drop,
back off exponentially with jitter (capped), and again. The same paho client is kept
across reconnects, so paho re-sends unacknowledged QoS 1 publishes itself. With
``protocol="auto"`` the session tries MQTT 5 and falls back to 3.1.1 for good when the
broker does not speak it (amqtt); messages still in the replaced client are failed
with :class:`~zhizao.errors.ConnectionReplaced` so that their owner sends them again.

What every user gets the same way:

* **Acknowledgements guarded by their connection.** Each connection has a generation
  number (bumped on every accepted CONNACK); a :class:`Received` message carries the
  generation it arrived on, and :meth:`MqttSession.ack` drops the acknowledgement of
  a message from an earlier connection (counted in ``stale_acks``). Message ids are
  per connection: sent on a new one, the PUBACK would acknowledge whatever the broker
  now numbers so, a message never processed. The broker redelivers the old one
  (persistent session).
* **SUBACK reason codes checked.** A filter the broker refuses (MQTT 5 reason ≥ 0x80,
  e.g. 0x87 "Not authorized"; 3.1.1 return code 0x80) is logged as an error and kept
  in :attr:`MqttSession.refused` for ``/health``; it is asked for again every
  ``resubscribe_s`` and on every reconnect, so a fixed ACL heals without a restart.
  Mosquitto's ``acl_file`` never refuses a SUBSCRIBE (it filters at delivery: see
  docs/mqtt-security.md); brokers that check subscriptions (Mosquitto's dynamic
  security plugin, EMQX, HiveMQ) do.
* **TLS and credentials as separate settings** (:class:`TlsSettings`,
  :class:`BrokerConnection`): a CA file or the system trust store, a client
  certificate and key, host name verification on unless turned off (logged), a
  minimum TLS version; credentials in the URL are percent-decoded. Files are checked
  when the settings are read, so a wrong path is an error naming its key.
* **Flow control** for consumers: :meth:`MqttSession.pause_reading` stops reading the
  socket (TCP backpressure), and MQTT 5 Receive Maximum / Maximum Packet Size can be
  announced at connect.
* **Every paho callback wrapped**: an exception in one is logged and counted, never
  raised into paho.

paho's private members are touched in one place only, :class:`PahoClient`, and paho
is pinned to the major version those were checked against (tests/kernel/test_mqtt.py).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from zhizao.aio import call_on_loop
from zhizao.backoff import Backoff
from zhizao.errors import ConnectionReplaced, MqttError, PublishRejected
from zhizao.settings import refuse_example_secret

log = structlog.get_logger("zhizao.mqtt")

#: The paho major version whose private members PahoClient uses (pyproject pins it).
PAHO_MAJOR = 2
#: CONNACK codes meaning "this broker does not speak the protocol version we asked".
_UNSUPPORTED_PROTOCOL = {1, 0x84}
CONNECT_TIMEOUT_S = 10.0
#: With protocol "auto", how long an MQTT 5 CONNECT may go unanswered before the
#: session tries 3.1.1 (until the broker has once accepted MQTT 5).
PROBE_TIMEOUT_S = 3.0
#: Packets handled per readiness callback before other tasks get the loop.
_READS_PER_TURN = 64
_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


# -- settings ---------------------------------------------------------------------------


class TlsSettings(BaseModel):
    """TLS towards a broker. Without ``ca_file`` the system trust store is used.

    Relative paths are relative to the config file that holds them (``base_dir`` in
    the validation context). Each file is read once here, so a missing or unreadable
    one is an error naming its key when the settings are loaded, not at connect time.
    """

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Check that the broker's certificate names the host connected to. Off only for
    #: a broker reached by an address its certificate does not name (logged).
    verify_hostname: bool = True
    min_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        path = value if value.is_absolute() or base is None else Path(base) / value
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        try:
            path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
        return path

    @model_validator(mode="after")
    def _files_load(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is given without cert_file (the client certificate)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"ca_file {self.ca_file}: not a PEM CA certificate ({exc})"
                ) from exc
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"cert_file {self.cert_file} / key_file {self.key_file}: "
                    f"not a certificate and its private key ({exc})"
                ) from exc
        return self

    def context(self, name: str) -> ssl.SSLContext:
        """The client context: chain and host name verified, at least ``min_version``."""
        context = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        try:
            if self.ca_file is not None:
                context.load_verify_locations(cafile=self.ca_file)
            else:
                context.load_default_certs()
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"TLS certificate files of {name}: {exc}") from exc
        if not self.verify_hostname:
            log.warning("TLS host name verification is off", session=name)
            context.check_hostname = False
        return context


class BrokerConnection(BaseModel):
    """How to reach an MQTT broker: ``mqtt://host:1883`` or ``mqtts://host:8883``.

    Credentials go in ``username``/``password``, or percent-encoded in the URL
    (``mqtt://user%2Fname:p%40ss@host``), not both.
    """

    # inf and NaN are floats YAML can write (1.0e+400, .nan); no key here means them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSettings | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=0.5, gt=0, le=86_400)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=86_400)
    #: How long the broker keeps the session (and queued QoS 1 messages) of a
    #: disconnected client (MQTT 5 only; 3.1.1 brokers keep it by their own policy).
    #: A four-byte integer in MQTT 5 (4294967295 = never expires).
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, le=2**32 - 1)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise ValueError("expected a broker URL like mqtt://host:1883 or mqtts://host:8883")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {redact_url(value)!r}") from exc
        return value

    @field_validator("password")
    @classmethod
    def _not_the_example(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            refuse_example_secret("the password", value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _credentials_once(self) -> BrokerConnection:
        user, password = url_credentials(self.url)
        if password is not None:
            refuse_example_secret("the password in the URL", password)
        if user is not None:
            if self.username is not None or self.password is not None:
                raise ValueError(
                    "credentials are given both in url and in username/password; keep one"
                )
            self.username = user
            self.password = None if password is None else SecretStr(password)
            # Kept apart from here on: the URL can be logged, and validated again.
            self.url = _without_credentials(self.url)
        elif self.password is not None and self.username is None:
            raise ValueError("password is given without username")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl") or self.tls is not None

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.use_tls else 1883)

    @property
    def address(self) -> str:
        """The URL without credentials, for logs and ``/health``."""
        return redact_url(self.url)


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """User name and password of a broker URL, percent-decoded (``%2F`` is ``/``)."""
    parts = urlsplit(url)
    if parts.username is None:
        return None, None
    password = None if parts.password is None else unquote(parts.password)
    return unquote(parts.username), password


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl()


def redact_url(url: str) -> str:
    """``scheme://host:port`` of a broker URL: never its password in a log line."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


# -- the paho client ----------------------------------------------------------------------


class PahoClient(mqtt.Client):
    """paho's client with the two things paho has no public API for (the one place
    where paho's private members are used; paho is pinned to ``PAHO_MAJOR``).

    * Reads are served from a 64 KiB buffer: paho reads each packet with a recv for
      the command byte, one per length byte and one for the rest, three or more
      system calls per message, which dominated ingest at one point per message.
      Whoever drives the socket must keep reading while :attr:`buffered` is non-zero,
      since the selector does not know about bytes already taken off the socket.
    * :meth:`drop` closes the connection at once, on the loop thread (after a refused
      CONNACK, a CONNACK timeout, a cancelled session), through paho's own close so
      that its state is reset and ``on_socket_close`` fires.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._rbuf)

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            data = super()._sock_recv(65536)  # raises BlockingIOError when empty
            if not data:
                return b""  # end of stream: paho sees the connection lost
            buf += data
        chunk = bytes(buf[:bufsize])
        del buf[:bufsize]
        return chunk

    def _sock_close(self) -> None:
        self._rbuf.clear()
        super()._sock_close()

    def drop(self) -> None:
        """Close the socket now (no DISCONNECT packet: the broker sends the Will)."""
        self._sock_close()


class ClientFactory(Protocol):
    """Builds the paho client: (client id, protocol, persistent session) → client."""

    def __call__(
        self, client_id: str, protocol: MQTTProtocolVersion, persistent: bool
    ) -> PahoClient: ...


def paho_client(client_id: str, protocol: MQTTProtocolVersion, persistent: bool) -> PahoClient:
    if protocol is MQTTProtocolVersion.MQTTv5:
        # MQTT 5 expresses persistence with clean start and session expiry at connect.
        return PahoClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    return PahoClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=not persistent,
    )


# -- the session ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Received:
    """A message as it arrived, with the connection (generation) it arrived on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int


class Delivery(Protocol):
    """What acknowledging a message needs: its id, QoS and connection (a Received)."""

    @property
    def mid(self) -> int: ...
    @property
    def qos(self) -> int: ...
    @property
    def generation(self) -> int: ...


class MqttSession:
    """One broker connection, reconnecting by itself while :meth:`run` runs."""

    def __init__(
        self,
        connection: BrokerConnection,
        *,
        client_id: str,
        name: str,
        persistent: bool = True,
        will: Will | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        on_message: Callable[[Received], None] | None = None,
        on_callback_error: Callable[[], None] | None = None,
        manual_ack: bool = False,
        receive_maximum: int | None = None,
        maximum_packet_size: int | None = None,
        resubscribe_s: float = 30.0,
        client_factory: ClientFactory = paho_client,
    ) -> None:
        self.connection = connection
        self.client_id = client_id
        self.name = name
        self.persistent = persistent
        self.will = will
        self.subscriptions = list(dict.fromkeys(subscriptions))
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_message = on_message
        self._on_callback_error = on_callback_error
        self._manual_ack = manual_ack
        self._receive_maximum = receive_maximum
        self._maximum_packet_size = maximum_packet_size
        self._resubscribe_s = resubscribe_s
        self._factory = client_factory
        self.protocol = (
            MQTTProtocolVersion.MQTTv311
            if connection.protocol == "3.1.1"
            else MQTTProtocolVersion.MQTTv5
        )
        self._client: PahoClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sock: Any = None
        self._reading = False
        self._paused = False
        self._running = False
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._pending_subs: dict[int, list[str]] = {}
        self._subs_settled = asyncio.Event()
        self._v5_confirmed = False
        self._closing = False
        self._last_subscribe = 0.0
        #: set on the first SUBACK (tests and `edge check` wait for it)
        self.subscribed = asyncio.Event()
        #: topic filter → reason code text, for every filter the broker refused
        self.refused: dict[str, str] = {}
        #: Connection number: bumped on every accepted CONNACK (0: never connected).
        self.generation = 0
        self.session_present = False
        self.callback_errors = 0
        self.connects = 0
        self.connect_failures = 0
        self.messages_received = 0
        #: acknowledgements dropped because their message came on an earlier connection
        self.stale_acks = 0
        #: notified after every connect attempt that ends (tests, `edge check`)
        self.attempted = asyncio.Condition()
        self.last_error: str | None = None

    # -- public ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self) -> None:
        await self._up.wait()

    async def first_outcome(self) -> bool:
        """Wait for the first connect attempt to end: True if connected (`edge check`)."""
        async with self.attempted:
            await self.attempted.wait_for(lambda: self.connected or self.connect_failures > 0)
        return self.connected

    async def wait_disconnected(self) -> None:
        await self._down.wait()

    async def wait_subscribed(self) -> None:
        """Wait until every SUBSCRIBE sent on this connection has its SUBACK."""
        await self._subs_settled.wait()

    def problems(self) -> list[dict[str, str]]:
        """Refused subscriptions as ``/health`` shows them."""
        return [{"topic": topic, "reason": reason} for topic, reason in self.refused.items()]

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Publish; the future completes on PUBACK (at once for QoS 0).

        While disconnected paho queues QoS 1 messages and sends them on reconnect.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        client = self._client_or_fail()
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            done.set_exception(MqttError(f"publish on {topic}: {mqtt.error_string(info.rc)}"))
            return done
        if qos == 0:
            done.set_result(None)
        else:
            # paho only writes from our writer callback, so the PUBACK cannot have
            # been handled before publish() returned.
            self._acks[info.mid] = done
        return done

    def subscribe(self, topics: Sequence[tuple[str, int]]) -> None:
        """Subscribe now; each filter's SUBACK reason code is checked (:attr:`refused`)."""
        if not topics or self._client is None:
            return
        result, mid = self._client.subscribe(list(topics))
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe {[t for t, _ in topics]}: {mqtt.error_string(result)}")
        self._pending_subs[mid] = [topic for topic, _ in topics]
        self._subs_settled.clear()
        self._last_subscribe = time.monotonic()

    def ack(self, message: Delivery) -> bool:
        """Acknowledge a received message (with ``manual_ack``).

        False, and nothing sent, for QoS 0 and for a message of an earlier connection:
        its id means another message on this one (the broker redelivers the old one).
        """
        if message.qos == 0:
            return False
        client = self._client
        if client is None or not self.connected or message.generation != self.generation:
            self.stale_acks += 1
            log.debug(
                "acknowledgement of an earlier connection dropped",
                session=self.name,
                mid=message.mid,
            )
            return False
        return client.ack(message.mid, message.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    def pause_reading(self) -> None:
        """Stop reading the socket: the broker holds what is not yet read."""
        self._paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        self._paused = False
        self._start_reading()
        client = self._client
        if client is not None and client.buffered and self._loop is not None:
            # Bytes already off the socket: the selector will not wake us for them.
            self._loop.call_soon(self._readable, client)

    def set_will(self, will: Will) -> None:
        """Change the Will for the next connect (its timestamp is the connect time)."""
        self.will = will
        if self._client is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)

    def stop_reconnecting(self) -> None:
        """Let :meth:`run` end when the connection ends, instead of reconnecting."""
        self._closing = True

    async def run(self) -> None:
        """Connect, keep connected, reconnect with backoff; until cancelled or
        :meth:`disconnect`."""
        self._closing = False
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        first, longest = self.connection.reconnect_min_s, self.connection.reconnect_max_s
        backoff = Backoff(first, max(first, longest), jitter=(0.8, 1.2))
        try:
            while not self._closing:
                try:
                    await self._connect_once()
                except _RetryNow:
                    continue
                except MqttError as exc:
                    self.last_error = str(exc)
                    self.connect_failures += 1
                    async with self.attempted:
                        self.attempted.notify_all()
                    delay = backoff.next_delay()
                    log.warning(
                        "mqtt connect failed",
                        session=self.name,
                        error=str(exc),
                        retry_in_s=round(delay, 2),
                    )
                    if self._closing:
                        return
                    # The backoff itself, not synchronisation.
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                async with self.attempted:
                    self.attempted.notify_all()
                misc = asyncio.create_task(self._misc_loop(), name=f"{self.name}-misc")
                try:
                    self._subscribe_all()
                    if self._on_connected is not None:
                        try:
                            await self._on_connected()
                        except MqttError as exc:
                            log.warning("on_connected failed", session=self.name, error=str(exc))
                    await self._down.wait()
                finally:
                    misc.cancel()
                if self._closing:
                    # disconnect() was called: the session ends instead of reconnecting.
                    log.info("mqtt disconnected", session=self.name)
                    return
                log.warning("mqtt connection lost", session=self.name, error=self.last_error)
                # A broker that accepts and then drops at once (a refused subscription
                # that makes it hang up, a flapping link) must not be hammered.
                await asyncio.sleep(backoff.next_delay())
        finally:
            self._running = False
            # Cancelled while connected: drop the socket so nothing stays registered on
            # the loop (paho keeps unacknowledged messages for a later run()).
            self._close_socket()

    async def disconnect(self) -> None:
        """Disconnect cleanly (no Will is sent); :meth:`run` then returns."""
        self._closing = True
        if self._client is not None and self._up.is_set():
            self._client.disconnect()
            try:
                async with asyncio.timeout(5):
                    await self._down.wait()
            except TimeoutError:
                self._close_socket()

    def close(self) -> None:
        """Drop the connection at once and fail what is still waiting for a PUBACK."""
        self._close_socket()
        self._fail_pending(MqttError("session closed"))

    # -- connecting -------------------------------------------------------------------

    def _client_or_fail(self) -> PahoClient:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> PahoClient:
        conn = self.connection
        client = self._factory(self.client_id, self.protocol, self.persistent)
        if conn.username is not None:
            password = conn.password.get_secret_value() if conn.password else None
            client.username_pw_set(conn.username, password)
        if conn.use_tls:
            client.tls_set_context((conn.tls or TlsSettings()).context(self.name))
        if self.will is not None:
            client.will_set(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        if self._manual_ack:
            client.manual_ack_set(True)
        client.on_connect = self._guard(self._handle_connect)
        client.on_disconnect = self._guard(self._handle_disconnect)
        client.on_publish = self._guard(self._handle_publish)
        client.on_message = self._guard(self._handle_message)
        client.on_subscribe = self._guard(self._handle_subscribe)
        client.on_socket_open = self._guard(self._socket_open)
        client.on_socket_close = self._guard(self._socket_close)
        client.on_socket_register_write = self._guard(self._register_write)
        client.on_socket_unregister_write = self._guard(self._unregister_write)
        return client

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._client_or_fail()
        self._down.clear()
        self._connack = loop.create_future()
        try:
            await asyncio.to_thread(self._blocking_connect, client)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MqttError(
                f"cannot connect to {self.connection.host}:{self.connection.port}: {exc}"
            ) from exc
        probing = self._may_fall_back() and not self._v5_confirmed
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S if probing else CONNECT_TIMEOUT_S):
                code = await self._connack
        except (TimeoutError, MqttError) as exc:
            self._close_socket()
            if probing:
                # Some 3.1.1-only brokers (amqtt, given a Will) choke on an MQTT 5
                # CONNECT instead of answering "unsupported protocol version".
                self._fall_back("no CONNACK to an MQTT 5 CONNECT")
                raise _RetryNow from exc
            if isinstance(exc, MqttError):
                raise
            raise MqttError("no CONNACK from the broker") from exc
        if not code.is_failure:
            self.connects += 1
            self._v5_confirmed = self.protocol is MQTTProtocolVersion.MQTTv5
            self._up.set()
            log.info(
                "mqtt connected",
                session=self.name,
                broker=f"{self.connection.host}:{self.connection.port}",
                tls=self.connection.use_tls,
                protocol="5" if self.protocol is MQTTProtocolVersion.MQTTv5 else "3.1.1",
                session_present=self.session_present,
            )
            return
        self._close_socket()
        if code.value in _UNSUPPORTED_PROTOCOL and self._may_fall_back():
            self._fall_back(f"broker answered {code}")
            raise _RetryNow
        raise MqttError(f"broker refused the connection: {code}")

    def _may_fall_back(self) -> bool:
        return self.connection.protocol == "auto" and self.protocol is MQTTProtocolVersion.MQTTv5

    def _fall_back(self, why: str) -> None:
        """Use MQTT 3.1.1 from now on (a new paho client: the protocol is fixed in it)."""
        log.info("broker does not speak MQTT 5: using 3.1.1", session=self.name, why=why)
        self.protocol = MQTTProtocolVersion.MQTTv311
        self._fail_pending(ConnectionReplaced("protocol fallback to MQTT 3.1.1"))
        self._client = self._make_client()

    def _blocking_connect(self, client: PahoClient) -> None:
        conn = self.connection
        if self.protocol is MQTTProtocolVersion.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = conn.session_expiry_s if self.persistent else 0
            if self._receive_maximum is not None:
                props.ReceiveMaximum = self._receive_maximum
            if self._maximum_packet_size is not None:
                props.MaximumPacketSize = self._maximum_packet_size
            client.connect(
                conn.host,
                conn.port,
                conn.keepalive_s,
                clean_start=not self.persistent,
                properties=props,
            )
        else:
            client.connect(conn.host, conn.port, conn.keepalive_s)

    def _subscribe_all(self) -> None:
        self._pending_subs.clear()
        self._subs_settled.set()
        if self.subscriptions:
            self.subscribe(self.subscriptions)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)  # keep-alive ticks, as paho's own loop does
            client = self._client
            if client is None:
                continue
            client.loop_misc()
            if (
                self.refused
                and not self._pending_subs
                and time.monotonic() - self._last_subscribe >= self._resubscribe_s
            ):
                # Asked again: an ACL fixed on the broker heals without a restart.
                qos = dict(self.subscriptions)
                self.subscribe([(topic, qos.get(topic, 1)) for topic in self.refused])

    def _fail_pending(self, error: MqttError) -> None:
        pending, self._acks = self._acks, {}
        for done in pending.values():
            if not done.done():
                done.set_exception(error)

    # -- paho callbacks (all run on the loop thread, except socket open/write during
    #    the threaded connect, which hop over) -------------------------------------------

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:  # logged and counted: the client must live on
                self._count_callback_error()
                log.exception("mqtt callback failed", session=self.name, callback=fn.__name__)

        guarded.__name__ = fn.__name__
        return guarded

    def _count_callback_error(self) -> None:
        self.callback_errors += 1
        if self._on_callback_error is not None:
            self._on_callback_error()

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        call_on_loop(self._loop, self._loop_thread, fn, *args)

    def _handle_connect(
        self, _c: PahoClient, _u: Any, flags: mqtt.ConnectFlags, code: ReasonCode, _p: Any
    ) -> None:
        self.session_present = bool(flags.session_present)
        if not code.is_failure:
            # Here, not when the connect coroutine resumes: the messages the broker
            # queued for this session may follow the CONNACK in the same read.
            self.generation += 1
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)

    def _handle_disconnect(
        self, _c: PahoClient, _u: Any, _f: Any, code: ReasonCode, _p: Any
    ) -> None:
        self.last_error = str(code)
        was_up = self._up.is_set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(f"connection closed before CONNACK: {code}"))
        self._pending_subs.clear()
        self._subs_settled.set()
        self._up.clear()
        self._down.set()
        if was_up and self._on_disconnected is not None:
            self._on_disconnected()

    def _handle_publish(self, _c: PahoClient, _u: Any, mid: int, code: ReasonCode, _p: Any) -> None:
        done = self._acks.pop(mid, None)
        if done is None or done.done():
            return  # QoS 0, or a message of a replaced client
        if code.is_failure:
            done.set_exception(PublishRejected(f"broker rejected message {mid}: {code}"))
        else:
            done.set_result(None)

    def _handle_subscribe(
        self, _c: PahoClient, _u: Any, mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        topics = self._pending_subs.pop(mid, [])
        for topic, code in zip(topics, codes, strict=False):
            if code.is_failure:
                reason = f"{code} (0x{code.value:02x})"
                if self.refused.get(topic) != reason:
                    log.error(
                        "broker refused a subscription: nothing will arrive on it",
                        session=self.name,
                        topic=topic,
                        reason=reason,
                        user=self.connection.username,
                        hint="check the broker's ACL for this user",
                    )
                self.refused[topic] = reason
            elif self.refused.pop(topic, None) is not None:
                log.info("subscription granted after all", session=self.name, topic=topic)
        if not self._pending_subs:
            self._subs_settled.set()
        self.subscribed.set()

    def _handle_message(self, _c: PahoClient, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages_received += 1
        if self._on_message is not None:
            self._on_message(
                Received(
                    message.topic,
                    bytes(message.payload),
                    message.mid,
                    message.qos,
                    bool(message.retain),
                    self.generation,
                )
            )

    # -- socket plumbing ------------------------------------------------------------

    def _socket_open(self, client: PahoClient, _u: Any, sock: Any) -> None:
        self._on_loop(self._watch, client, sock)

    def _watch(self, client: PahoClient, sock: Any) -> None:
        if self._loop is None:
            return
        if not self._running or client is not self._client:
            # A connect abandoned at shutdown (or of a replaced client) that got
            # through after all: nobody drives it.
            sock.close()
            return
        self._sock = sock
        self._reading = False
        self._start_reading()

    def _start_reading(self) -> None:
        if (
            self._sock is not None
            and self._loop is not None
            and not self._reading
            and not self._paused
            and self._client is not None
        ):
            self._loop.add_reader(self._sock, self._readable, self._client)
            self._reading = True

    def _stop_reading(self) -> None:
        sock = self._sock
        if sock is not None and self._reading and self._loop is not None and sock.fileno() != -1:
            self._loop.remove_reader(sock)
        self._reading = False

    def _readable(self, client: PahoClient) -> None:
        # One loop_read handles one packet; keep going while messages keep coming,
        # bounded so that other tasks get the loop.
        try:
            for _ in range(_READS_PER_TURN):
                before = self.messages_received
                rc = client.loop_read()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._paused:
                    return
                if self.messages_received == before and not client.buffered:
                    return
            if client.buffered and self._loop is not None:
                self._loop.call_soon(self._readable, client)
        except Exception:
            self._count_callback_error()
            log.exception("mqtt read failed", session=self.name)

    def _writable(self, client: PahoClient) -> None:
        try:
            client.loop_write()
        except Exception:
            self._count_callback_error()
            log.exception("mqtt write failed", session=self.name)

    def _socket_close(self, _client: PahoClient, _u: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _unwatch(self, sock: Any) -> None:
        # Hopped from another thread, the socket may be closed by now: a closed one
        # (fileno -1) has nothing left to unregister.
        open_ = sock.fileno() != -1
        if sock is self._sock:
            if self._reading and open_ and self._loop is not None:
                self._loop.remove_reader(sock)
            self._reading = False
            self._sock = None
        if open_ and self._loop is not None:
            self._loop.remove_writer(sock)

    def _register_write(self, client: PahoClient, _u: Any, sock: Any) -> None:
        self._on_loop(self._add_writer, client, sock)

    def _add_writer(self, client: PahoClient, sock: Any) -> None:
        if self._loop is not None and sock.fileno() != -1:
            self._loop.add_writer(sock, self._writable, client)

    def _unregister_write(self, _client: PahoClient, _u: Any, sock: Any) -> None:
        self._on_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        if self._loop is not None and sock.fileno() != -1:
            self._loop.remove_writer(sock)

    def _close_socket(self) -> None:
        sock = self._sock
        if sock is not None:
            self._unwatch(sock)
        if self._client is not None:
            self._client.drop()
        self._up.clear()
        self._down.set()


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho leaves such a socket open."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class _TlsContext(ssl.SSLContext):
    sslsocket_class = _ClosingSSLSocket


class _RetryNow(Exception):
    """Connect again at once (after the protocol fallback)."""
