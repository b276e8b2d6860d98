"""Simulated MQTT devices: JSON telemetry on a local broker (format in README.md).

paho-mqtt runs its network loop in its own thread (``loop_start``); this adapter is
the only place that touches it, and ``publish`` is safe to call from the event
loop. Publishing is QoS 1 so a test can count what was sent.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from zhizao.wire import StateClass

log = logging.getLogger(__name__)

TOPIC_TEMPLATE = "plant/{line}/{device}/telemetry"

#: the raw status code an MQTT device sends (a PLC status word, like the CNC's PlcStatus)
STATUS_CODES: dict[StateClass, int] = {
    StateClass.PLANNED_STOP: 0,
    StateClass.RUNNING: 1,
    StateClass.IDLE: 2,
    StateClass.SETUP: 3,
    StateClass.UNPLANNED_STOP: 4,
}

#: what a broken device firmware sends (fault injection)
GARBAGE: tuple[bytes, ...] = (
    b'{"ts": 17',  # truncated JSON
    b"\xff\xfe\x00garbage",  # not UTF-8
    b'["not", "an", "object"]',
    b'{"ts": "yesterday", "status": "on fire"}',
)


def topic(line: str, device: str) -> str:
    return TOPIC_TEMPLATE.format(line=line, device=device)


def telemetry(
    ts: int, state: StateClass, good_total: int, reject_total: int, temperature: float
) -> bytes:
    document: dict[str, Any] = {
        "ts": ts,
        "status": STATUS_CODES[state],
        "good_total": good_total,
        "reject_total": reject_total,
        "temperature": round(temperature, 2),
    }
    return json.dumps(document, separators=(",", ":")).encode()


class MqttPublisher:
    """A paho client publishing for every simulated MQTT device."""

    def __init__(self, url: str, client_id: str = "zhizao-simulator") -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 1883
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,  # the demo's embedded broker (amqtt) speaks 3.1.1 only
        )
        if parsed.username:
            self._client.username_pw_set(parsed.username, parsed.password)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self.published = 0
        self.garbage_sent = 0

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if not reason.is_failure:
            self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic_name: str, payload: bytes) -> None:
        # paho queues while disconnected and sends on reconnect (QoS 1).
        self._client.publish(topic_name, payload, qos=1)
        self.published += 1

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
