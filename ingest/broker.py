"""The MQTT side of ingest: paho-mqtt driven from the asyncio event loop.

paho runs without its own thread: the client's socket is registered with the event
loop (``add_reader``/``add_writer``, the pattern of paho's ``loop_asyncio``
example), so every MQTT callback runs on the loop thread and the pipeline needs no
locks. Only the TCP (and TLS) connect runs in a worker thread: to a broker host that
drops packets it blocks for paho's connect timeout, and the loop must meanwhile keep
committing, acknowledging nothing stale, and answering health checks. The socket
callbacks paho fires in that thread hop onto the loop. Reconnecting is an explicit
task with backoff.

Flow control, the reason memory stays bounded however fast the broker pushes and
however large its messages:

* messages are acknowledged manually (``manual_ack=True``) and only after their
  batch is committed;
* with MQTT 5 the client announces a Receive Maximum of ``max_inflight``: the broker
  keeps at most that many unacknowledged messages in flight to this worker and
  holds the rest in the session queue;
* MQTT 3.1.1 has no such property, so the adapter stops reading the socket when
  ``max_inflight`` messages are buffered and resumes at half (TCP backpressure);
* whatever the protocol, it also stops reading when the payloads received and not yet
  acknowledged reach ``inflight_max_bytes``, and resumes when acknowledgements bring
  them down to half: a count alone would let 4000 messages of 4 MiB in;
* no packet above ``max_packet_bytes`` is taken: with MQTT 5 the CONNECT's Maximum
  Packet Size makes the broker drop it for this worker; with 3.1.1 it is dropped (and
  acknowledged, or it would come back after every reconnect) as it arrives;
* after a burst, once the window has drained, freed memory is handed back to the
  system (:mod:`ingest.memory`).

So at most ``inflight_max_bytes`` plus one message (the one that crossed the bound)
plus one partly read packet are held, the broker keeping the rest.

After a disconnect, message ids of the old connection mean nothing to the new one:
each connection has a generation number and acknowledgements for an older
generation are dropped. The broker redelivers those messages (persistent session),
and the idempotent writes absorb the ones that were already committed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.convert import Inbound
from ingest.memory import TrimAfterBurst, trim
from ingest.metrics import IngestMetrics
from ingest.settings import IngestSettings
from zhizao.aio import call_on_loop
from zhizao.backoff import Backoff
from zhizao.wire import subscription_filter

log = structlog.get_logger("ingest.broker")


class ClientFactory(Protocol):
    def __call__(self, settings: IngestSettings) -> mqtt.Client: ...


class BufferedClient(mqtt.Client):
    """paho's client reading the socket in 64 KiB chunks instead of per field.

    paho reads each packet with a recv for the command byte, one per length byte and
    one for the rest: three or more system calls per message, which dominates at one
    point per message. This serves those reads from a buffer filled by large recvs.
    Whoever drives the socket must keep reading while :attr:`buffered` is non-zero,
    since the selector does not know about bytes already taken off the socket.
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


def make_client(settings: IngestSettings) -> mqtt.Client:
    v5 = settings.mqtt_protocol == "5"
    client = BufferedClient(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        # MQTT 3.1.1: a persistent session. (MQTT 5 sets clean start at connect.)
        clean_session=None if v5 else False,
        manual_ack=True,
        reconnect_on_failure=False,  # reconnecting is our task, with our backoff
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    return client


def topics(settings: IngestSettings) -> list[str]:
    prefix = f"$share/{settings.shared_group}/" if settings.shared_group else ""
    return [prefix + subscription_filter("data"), prefix + subscription_filter("status")]


class Broker:
    """One broker connection feeding ``inbox``; acknowledges on request."""

    def __init__(
        self,
        settings: IngestSettings,
        metrics: IngestMetrics,
        *,
        client_factory: ClientFactory = make_client,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.inbox: deque[Inbound] = deque()
        self.arrived = asyncio.Event()
        self.connected = asyncio.Event()
        self.generation = 0
        self._clock_ms = clock_ms
        self._client_factory = client_factory
        self._client: mqtt.Client | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._sock: Any = None
        self._reading = False
        self._paused = False
        self._lost = asyncio.Event()
        self._unacked = 0
        self._unacked_bytes = 0
        self._held = False  # paused for good (shutdown): acknowledgements do not resume
        self._trim = TrimAfterBurst(settings.inflight_max_bytes)
        # Read when scraped: setting gauges per message would cost more than the count.
        metrics.inflight.set_function(lambda: self._unacked)
        metrics.inflight_bytes.set_function(lambda: self._unacked_bytes)
        self._closing = False

    # -- acknowledgements and flow control -------------------------------------------

    @property
    def inflight_bytes(self) -> int:
        """Payload bytes received and not yet acknowledged (or forgotten)."""
        return self._unacked_bytes

    def ack(self, msg: Inbound) -> bool:
        """Acknowledge a committed message; False if its connection is gone."""
        self._release(1, len(msg.payload))
        client = self._client
        if client is None or msg.generation != self.generation or msg.qos == 0:
            return False
        rc = client.ack(msg.mid, msg.qos)
        return rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def forget(self, messages: list[Inbound]) -> None:
        """Messages dropped without acknowledgement (shutdown): only the gauges change."""
        self._release(len(messages), sum(len(m.payload) for m in messages))

    def _release(self, count: int, size: int) -> None:
        self._unacked -= count
        self._unacked_bytes -= size
        if self._paused:
            self.resume_if_drained()
        if self._trim.released(self._unacked_bytes, size):
            # Later, not now: the committer still holds the batch being acknowledged,
            # and a burst's drain comes in waves.
            self._loop.call_later(self._trim.delay_s, self._trim_memory)

    def _trim_memory(self) -> None:
        if self._trim.due(self._unacked_bytes) and trim():
            self.metrics.memory_trims.inc()

    def _full(self) -> bool:
        return (
            len(self.inbox) >= self.settings.max_inflight
            or self._unacked_bytes >= self.settings.inflight_max_bytes
        )

    def _maybe_pause(self) -> None:
        if not self._paused and self._full():
            self._paused = True
            self.metrics.paused.set(1)
            self._stop_reading()

    def resume_if_drained(self) -> None:
        if (
            self._paused
            and not self._held
            and len(self.inbox) <= self.settings.max_inflight // 2
            and self._unacked_bytes <= self.settings.inflight_max_bytes // 2
        ):
            self._paused = False
            self.metrics.paused.set(0)
            self._start_reading()
            if self._client is not None and _buffered(self._client):
                self._loop.call_soon(self._on_readable)

    def pause(self) -> None:
        """Stop taking messages (shutdown): what the broker holds stays queued there."""
        self._paused = True
        self._held = True
        self.metrics.paused.set(1)
        self._stop_reading()

    # -- socket plumbing ------------------------------------------------------------

    def _start_reading(self) -> None:
        if self._sock is not None and not self._reading and not self._paused:
            self._loop.add_reader(self._sock, self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._sock is not None and self._reading:
            self._loop.remove_reader(self._sock)
        self._reading = False

    def _on_readable(self) -> None:
        client = self._client
        if client is None:
            return
        # One loop_read handles one packet; keep going while messages keep coming,
        # bounded so that other tasks get the loop.
        for _ in range(64):
            before = self.metrics.messages_received_count
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._paused:
                return
            if self.metrics.messages_received_count == before and not _buffered(client):
                return
        if _buffered(client):
            # Bytes already off the socket: the selector will not wake us for them.
            self._loop.call_soon(self._on_readable)

    def _on_writable(self) -> None:
        if self._client is not None:
            self._client.loop_write()

    def _on_loop(self, fn: Callable[..., object], *args: Any) -> None:
        # paho fires the socket callbacks where the socket opens: in the connect thread.
        call_on_loop(self._loop, self._loop_thread, fn, *args)

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._watch, sock)

    def _watch(self, sock: Any) -> None:
        if self._closing:
            # A connect abandoned at shutdown that got through after all.
            sock.close()
            return
        self._sock = sock
        self._reading = False
        self._start_reading()

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch, sock)

    def _unwatch(self, sock: Any) -> None:
        # Hopped from another thread, the socket may be closed by now: a closed one
        # (fileno -1) has nothing left to unregister.
        open_ = sock.fileno() != -1
        if sock is self._sock:
            if self._reading and open_:
                self._loop.remove_reader(sock)
            self._reading = False
            self._sock = None
        if open_:
            self._loop.remove_writer(sock)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        if sock.fileno() != -1:
            self._loop.add_writer(sock, self._on_writable)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        if sock.fileno() != -1:
            self._loop.remove_writer(sock)

    # -- MQTT callbacks (each wrapped: one bad message must not kill the client) -------

    def _guard(self, name: str, func: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*args: Any) -> None:
            try:
                func(*args)
            except Exception:  # logged and counted: the client must live on
                self.metrics.callback_errors.inc()
                log.exception("MQTT callback failed", callback=name)

        return wrapped

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection", reason=str(reason))
            self._lost.set()
            return
        options = SubscribeOptions(qos=1)
        if self.settings.mqtt_protocol == "5":
            result, _ = client.subscribe([(t, options) for t in topics(self.settings)])
        else:
            result, _ = client.subscribe([(t, 1) for t in topics(self.settings)])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("subscribe failed", rc=int(result))
        self.metrics.broker_connects.inc()
        self.metrics.broker_connected.set(1)
        self.connected.set()
        log.info(
            "connected to broker",
            url=f"{self.settings.mqtt_host}:{self.settings.mqtt_port}",
            client_id=self.settings.client_id,
            session_present=flags.session_present,
            topics=topics(self.settings),
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.generation += 1
        self.connected.clear()
        self.metrics.broker_connected.set(0)
        if not self._closing:
            log.warning("disconnected from broker", reason=str(reason))
        self._lost.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.metrics.messages_received_count += 1
        payload = bytes(message.payload)
        if len(payload) + len(message.topic) > self.settings.max_packet_bytes:
            self._drop_oversize(client, message, len(payload))
            return
        self._unacked += 1
        self._unacked_bytes += len(payload)
        self.inbox.append(
            Inbound(
                topic=message.topic,
                payload=payload,
                mid=message.mid,
                qos=message.qos,
                retain=bool(message.retain),
                generation=self.generation,
                received_ms=self._clock_ms(),
            )
        )
        self.arrived.set()
        self._maybe_pause()

    def _drop_oversize(self, client: mqtt.Client, message: mqtt.MQTTMessage, size: int) -> None:
        # Only MQTT 3.1.1 gets here (an MQTT 5 broker honours the Maximum Packet Size).
        # Kept, it would cost its size until committed; unacknowledged, the broker would
        # send it again after every reconnect. Acknowledged out of order: Mosquitto and
        # amqtt do not mind. No dead letter, as with MQTT 5 where the broker drops it:
        # the log and zhizao_ingest_oversize_dropped_total say it happened.
        self.metrics.oversize_dropped.inc()
        log.warning(
            "message above max_packet_bytes dropped",
            topic=message.topic,
            payload_bytes=size,
            max_packet_bytes=self.settings.max_packet_bytes,
        )
        if message.qos > 0:
            client.ack(message.mid, message.qos)

    # -- lifecycle ----------------------------------------------------------------------

    def _build(self) -> mqtt.Client:
        client = self._client_factory(self.settings)
        client.on_socket_open = self._guard("socket_open", self._socket_open)
        client.on_socket_close = self._guard("socket_close", self._socket_close)
        client.on_socket_register_write = self._guard("register_write", self._register_write)
        client.on_socket_unregister_write = self._guard("unregister_write", self._unregister_write)
        client.on_connect = self._guard("connect", self._on_connect)
        client.on_disconnect = self._guard("disconnect", self._on_disconnect)
        client.on_message = self._guard("message", self._on_message)
        return client

    def _connect_once(self, client: mqtt.Client, first: bool) -> None:
        if self.settings.mqtt_protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.session_expiry_s
            props.ReceiveMaximum = self.settings.max_inflight
            props.MaximumPacketSize = self.settings.max_packet_bytes
            if first:
                client.connect(
                    self.settings.mqtt_host,
                    self.settings.mqtt_port,
                    keepalive=self.settings.keepalive_s,
                    clean_start=False,
                    properties=props,
                )
            else:
                client.reconnect()
        elif first:
            client.connect(
                self.settings.mqtt_host,
                self.settings.mqtt_port,
                keepalive=self.settings.keepalive_s,
            )
        else:
            client.reconnect()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, keep the connection alive, reconnect with backoff until ``stop``."""
        self._client = client = self._build()
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        first = True
        while not stop.is_set():
            self._lost.clear()
            if self._sock is not None:
                # Still open (a refused CONNACK before the broker hung up): close it
                # here, where the loop can unregister it; paho would close it in the
                # connect thread, and a closed socket cannot be unregistered.
                client._sock_close()
            connecting = asyncio.ensure_future(asyncio.to_thread(self._connect_once, client, first))
            await _wait_any_of(stop, connecting)
            if not connecting.done():
                # Stopping while the TCP connect still waits for the host: let the
                # thread run out on its own (paho's connect timeout) and drop the client.
                connecting.add_done_callback(_discard_result)
                break
            try:
                connecting.result()
            except (OSError, mqtt.WebsocketConnectionError) as exc:
                delay = backoff.next_delay()
                log.warning(
                    "cannot reach broker; retrying", error=str(exc), retry_in_s=round(delay, 2)
                )
                await _wait(stop, delay)
                continue
            first = False
            # Keepalive and CONNACK timeout handling: loop_misc once a second.
            while not stop.is_set() and not self._lost.is_set():
                if client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                if self.connected.is_set():
                    backoff.reset()
                await _wait_any(stop, self._lost, 1.0)
            if stop.is_set():
                break
            delay = backoff.next_delay()
            await _wait(stop, delay)

    async def close(self) -> None:
        """Disconnect cleanly: the session (and unacknowledged messages) stay on the broker."""
        self._closing = True
        client = self._client
        if client is None:
            return
        if self.connected.is_set():
            client.disconnect()
            # Let the DISCONNECT (and the last PUBACKs) leave the socket.
            for _ in range(20):
                if self._sock is None:
                    break
                client.loop_write()
                await asyncio.sleep(0.05)
                client.loop_read()
        if self._sock is not None:
            self._stop_reading()
            self._loop.remove_writer(self._sock)
            try:
                self._sock.close()
            except OSError as exc:
                log.debug("closing the broker socket failed", error=str(exc))
            self._sock = None
        self._client = None


def _buffered(client: mqtt.Client) -> bool:
    return isinstance(client, BufferedClient) and client.buffered > 0


async def _wait(stop: asyncio.Event, delay: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return


async def _wait_any_of(stop: asyncio.Event, work: asyncio.Future[Any]) -> None:
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((waiter, work), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _discard_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("abandoned broker connect failed", error=str(future.exception()))


async def _wait_any(a: asyncio.Event, b: asyncio.Event, seconds: float) -> None:
    tasks = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
