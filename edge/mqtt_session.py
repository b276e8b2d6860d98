"""The one place where paho-mqtt meets asyncio (used by the uplink and the MQTT collector).

Design
------
A :class:`MqttSession` owns one paho ``Client`` and drives it from the event loop,
the way paho's own asyncio example does: paho tells us when its socket opens,
closes or has data to write (``on_socket_*`` callbacks), and the loop calls
``loop_read``/``loop_write`` when the socket is ready and ``loop_misc`` once a
second for keep-alives. No paho thread runs. Only the blocking TCP/TLS connect is
done in a worker thread (a slow platform broker must not stall the collectors);
the socket callbacks that fire there hop onto the loop with
``call_soon_threadsafe``.

Reconnecting is :meth:`MqttSession.run`, an explicit task: connect, wait for the
CONNACK, run the ``on_connected`` hook (birth message, subscriptions), wait for the
connection to drop, back off exponentially with jitter (capped), and again. The same
paho client is kept across reconnects, so paho itself re-sends QoS 1 messages that
were not acknowledged. With ``protocol="auto"`` the session tries MQTT 5 first and
falls back to 3.1.1 for good when the broker answers "unsupported protocol version"
(amqtt does); switching protocol needs a new paho client, and messages still in the
old one are failed with :class:`ConnectionReplaced` so their owner sends them again.

:meth:`MqttSession.publish` returns a future that completes on PUBACK (paho's
``on_publish`` with the message id). Every paho callback is wrapped: an exception in
one is logged and counted, never raised into paho.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from zhizao.aio import call_on_loop
from zhizao.errors import ConnectionReplaced, MqttError, PublishRejected

log = structlog.get_logger(__name__)

#: CONNACK codes meaning "this broker does not speak the protocol version we asked".
_UNSUPPORTED_PROTOCOL = {1, 0x84}
CONNECT_TIMEOUT_S = 10.0
#: With protocol "auto", how long an MQTT 5 CONNECT may go unanswered before the
#: session tries 3.1.1 (until the broker has once accepted MQTT 5).
PROBE_TIMEOUT_S = 3.0


class TlsConfig(BaseModel):
    """TLS towards a broker. Without ``ca_file`` the system trust store is used."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: Skip the host name check (never in production; logged as a warning).
    insecure_skip_hostname: bool = False


class BrokerConnection(BaseModel):
    """How to reach an MQTT broker: ``mqtt://host:1883`` or ``mqtts://host:8883``."""

    # inf and NaN are floats YAML can write (1.0e+400, .nan); no key here means them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
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
            raise ValueError(f"bad port in {value!r}") from exc
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def use_tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl") or self.tls is not None

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.use_tls else 1883)


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


ClientFactory = Callable[[str, MQTTProtocolVersion, bool], mqtt.Client]
"""Builds the paho client: (client id, protocol, persistent session) → client."""


def paho_client(client_id: str, protocol: MQTTProtocolVersion, persistent: bool) -> mqtt.Client:
    if protocol is MQTTProtocolVersion.MQTTv5:
        # MQTT 5 expresses persistence with clean_start/session expiry at connect.
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=not persistent,
    )


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
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        manual_ack: bool = False,
        client_factory: ClientFactory = paho_client,
    ) -> None:
        self.connection = connection
        self.client_id = client_id
        self.name = name
        self.persistent = persistent
        self.will = will
        self._on_connected = on_connected
        self._on_message = on_message
        self._manual_ack = manual_ack
        self._factory = client_factory
        self.protocol = (
            MQTTProtocolVersion.MQTTv311
            if connection.protocol == "3.1.1"
            else MQTTProtocolVersion.MQTTv5
        )
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._sock: socket.socket | None = None
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._v5_confirmed = False
        self._closing = False
        #: set on the first SUBACK (tests and `edge check` wait for it)
        self.subscribed = asyncio.Event()
        self.callback_errors = 0
        self.connects = 0
        self.connect_failures = 0
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

    def subscribe(self, topics: list[tuple[str, int]]) -> None:
        if topics:
            self._client_or_fail().subscribe(topics)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a received message (with ``manual_ack``)."""
        if self._client is not None:
            self._client.ack(mid, qos)

    async def run(self) -> None:
        """Connect, keep connected, reconnect with backoff; until cancelled or
        :meth:`disconnect`."""
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        delay = self.connection.reconnect_min_s
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
                    log.warning(
                        "mqtt connect failed", session=self.name, error=str(exc), retry_in_s=delay
                    )
                    # The backoff itself, not synchronisation.
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                    delay = min(delay * 2, self.connection.reconnect_max_s)
                    continue
                delay = self.connection.reconnect_min_s
                async with self.attempted:
                    self.attempted.notify_all()
                misc = asyncio.create_task(self._misc_loop(), name=f"{self.name}-misc")
                try:
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
        finally:
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

    def _client_or_fail(self) -> mqtt.Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> mqtt.Client:
        conn = self.connection
        client = self._factory(self.client_id, self.protocol, self.persistent)
        if conn.username is not None:
            password = conn.password.get_secret_value() if conn.password else None
            client.username_pw_set(conn.username, password)
        if conn.use_tls:
            client.tls_set_context(self._tls_context(conn.tls or TlsConfig()))
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

    def _tls_context(self, tls: TlsConfig) -> ssl.SSLContext:
        context = _TlsContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
        try:
            if tls.ca_file:
                context.load_verify_locations(cafile=tls.ca_file)
            else:
                context.load_default_certs()
            if tls.cert_file:
                context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"TLS certificate files of {self.name}: {exc}") from exc
        if tls.insecure_skip_hostname:
            log.warning("TLS host name check disabled", session=self.name)
            context.check_hostname = False
        return context

    def set_will(self, will: Will) -> None:
        """Change the Will for the next connect (its timestamp is the connect time)."""
        self.will = will
        if self._client is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)

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
                protocol="5" if self.protocol is MQTTProtocolVersion.MQTTv5 else "3.1.1",
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

    def _blocking_connect(self, client: mqtt.Client) -> None:
        conn = self.connection
        if self.protocol is MQTTProtocolVersion.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = conn.session_expiry_s if self.persistent else 0
            client.connect(
                conn.host,
                conn.port,
                conn.keepalive_s,
                clean_start=not self.persistent,
                properties=props,
            )
        else:
            client.connect(conn.host, conn.port, conn.keepalive_s)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)  # keep-alive ticks, as paho's own loop does
            client = self._client
            if client is not None:
                client.loop_misc()

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
            except Exception:
                self.callback_errors += 1
                log.exception("mqtt callback failed", session=self.name, callback=fn.__name__)

        guarded.__name__ = fn.__name__
        return guarded

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        call_on_loop(self._loop, self._loop_thread, fn, *args)

    def _handle_connect(self, _c: mqtt.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)

    def _handle_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any
    ) -> None:
        self.last_error = str(code)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(f"connection closed before CONNACK: {code}"))
        self._up.clear()
        self._down.set()

    def _handle_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, code: ReasonCode, _p: Any
    ) -> None:
        done = self._acks.pop(mid, None)
        if done is None or done.done():
            return  # QoS 0, or a message of a replaced client
        if code.is_failure:
            done.set_exception(PublishRejected(f"broker rejected message {mid}: {code}"))
        else:
            done.set_result(None)

    def _handle_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        self.subscribed.set()

    def _handle_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            self._on_message(message)

    def _socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._watch, client, sock)

    def _watch(self, client: mqtt.Client, sock: socket.socket) -> None:
        if self._loop is None:
            return
        self._sock = sock
        self._loop.add_reader(sock, self._readable, client)

    def _readable(self, client: mqtt.Client) -> None:
        try:
            client.loop_read()
        except Exception:
            self.callback_errors += 1
            log.exception("mqtt read failed", session=self.name)

    def _writable(self, client: mqtt.Client) -> None:
        try:
            client.loop_write()
        except Exception:
            self.callback_errors += 1
            log.exception("mqtt write failed", session=self.name)

    def _socket_close(self, _client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _unwatch(self, sock: socket.socket) -> None:
        if self._loop is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if self._sock is sock:
            self._sock = None

    def _register_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._add_writer, client, sock)

    def _add_writer(self, client: mqtt.Client, sock: socket.socket) -> None:
        if self._loop is not None and sock.fileno() != -1:
            self._loop.add_writer(sock, self._writable, client)

    def _unregister_write(self, _client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: socket.socket) -> None:
        if self._loop is not None and sock.fileno() != -1:
            self._loop.remove_writer(sock)

    def _close_socket(self) -> None:
        sock = self._sock
        if sock is not None:
            self._unwatch(sock)
        if self._client is not None:
            # paho's own close: it calls on_disconnect and resets its state.
            self._client._sock_close()
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
