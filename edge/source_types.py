"""The source types the edge knows: ``type`` of a ``sources:`` entry → collector builder.

A new collector type is added here by hand, next to its config model in the
``sources`` union of :mod:`edge.config`; nothing is ever loaded by string path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.mqtt.collector import MqttCollector
from edge.mqtt.config import MqttSourceConfig
from edge.opcua.collector import OpcUaCollector
from edge.opcua.config import OpcUaSourceConfig
from edge.source import Collector
from zhizao.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CollectorContext:
    """What a builder may need besides its own section."""

    enterprise: str
    edge_id: str


def _opcua(config: Any, context: CollectorContext) -> Collector:
    if not isinstance(config, OpcUaSourceConfig):
        raise TypeError(f"expected an OPC UA source section, got {type(config).__name__}")
    return OpcUaCollector(config)


def _mqtt(config: Any, context: CollectorContext) -> Collector:
    if not isinstance(config, MqttSourceConfig):
        raise TypeError(f"expected an MQTT source section, got {type(config).__name__}")
    # Stable per edge and source: the broker keeps the persistent session under it.
    return MqttCollector(config, client_id=f"zhizao-{context.edge_id}-{config.name}")


CollectorBuilder = Callable[[Any, CollectorContext], Collector]

COLLECTORS: dict[str, CollectorBuilder] = {
    "opcua": _opcua,
    "mqtt": _mqtt,
}


def build_collector(
    config: OpcUaSourceConfig | MqttSourceConfig, context: CollectorContext
) -> Collector:
    try:
        builder = COLLECTORS[config.type]
    except KeyError as exc:
        raise ConfigError("sources", config.name, f"no collector for type {config.type!r}") from exc
    return builder(config, context)
