"""Ingest on the demo's embedded amqtt broker (MQTT 3.1.1, persistent session)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.ingest.support import Worker, data_messages, register, wait_for_count, worker_settings
from zhizao.embedded import EmbeddedBroker


def _publish_311(url: str, messages: list[tuple[str, bytes]]) -> None:
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub-311",
                         protocol=MQTTProtocolVersion.MQTTv311)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_ingest_on_the_demo_broker(db_url: str) -> None:
    a, b = await register(db_url)
    async with EmbeddedBroker() as broker:
        worker = Worker(worker_settings(db_url, broker.url, mqtt_protocol="3.1.1",
                                        client_id="demo-ingest"))
        await worker.connected()
        try:
            messages = data_messages(a, range(20), 10) + data_messages(b, range(20), 10)
            await asyncio.to_thread(_publish_311, broker.url, messages)
            await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 400)
        finally:
            await worker.close()
