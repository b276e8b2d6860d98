"""``zhizao edge check`` for an OPC UA source: connect, resolve, read every mapped variable.

What an installer runs first, before the collector: it connects with the configured
security (:mod:`edge.opcua.client`), resolves every target as a session would
(:mod:`edge.opcua.nodes`), reads each resolved variable once and reports, per
variable, its NodeId in a form to paste into the config, its value and quality, or
what went wrong. Nothing is subscribed and nothing is sent anywhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.ua.uaerrors import UaError

from edge.opcua.client import OpcUaClientFactory, asyncua_client, connect, read_values
from edge.opcua.config import OpcUaSourceConfig
from edge.opcua.nodes import build_targets, resolve
from edge.opcua.values import quality_of
from zhizao.wire import Quality

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeCheck:
    """What ``zhizao edge check`` prints for one mapped variable."""

    label: str
    device: str
    name: str
    address: str
    node_id: str | None
    value: Any = None
    quality: Quality | None = None
    error: str | None = None


def _display(node_id: ua.NodeId, namespaces: Sequence[str]) -> str:
    """``nsu=<uri>;s=...``: what a person can paste into the config."""
    text = node_id.to_string()
    if not text.startswith("ns="):
        return text
    index, _, rest = text.partition(";")
    number = int(index.removeprefix("ns="))
    uri = namespaces[number] if number < len(namespaces) else None
    return f"nsu={uri};{rest}" if uri else text


async def check_source(
    config: OpcUaSourceConfig, *, client_factory: OpcUaClientFactory = asyncua_client
) -> list[NodeCheck]:
    """Connect, resolve every mapped variable, read it: what an installer runs first.

    Raises the connection error if the server cannot be reached at all (the CLI
    prints it); per-variable problems are in the returned checks.
    """
    if config.security.insecure:
        log.warning("OPC UA source %s uses security mode None (allow_insecure)", config.name)
    client = await connect(config, client_factory)
    try:
        targets = build_targets(config)
        failures = await resolve(client, config, targets)
        readable = [t for t in targets if t.node_id is not None]
        nodes = [client.get_node(t.node_id) for t in readable if t.node_id is not None]
        values = await read_values(client, nodes)
        read = dict(zip((t.label for t in readable), values, strict=True))
        namespaces = await client.get_namespace_array()
        checks: list[NodeCheck] = []
        for target in targets:
            name = target.mapping.name if target.mapping is not None else str(target.preset_key)
            node_id = _display(target.node_id, namespaces) if target.node_id is not None else None
            if target.label in failures:
                checks.append(
                    NodeCheck(
                        target.label,
                        target.device,
                        name,
                        target.address,
                        None,
                        error=failures[target.label],
                    )
                )
                continue
            if target.node_id is None:
                checks.append(
                    NodeCheck(
                        target.label,
                        target.device,
                        name,
                        target.address,
                        None,
                        error="optional input absent",
                    )
                )
                continue
            value = read[target.label]
            quality = quality_of(value.StatusCode)
            raw = value.Value.Value if value.Value is not None else None
            error = None
            if quality is Quality.BAD and value.StatusCode is not None:
                error = f"status {value.StatusCode.name}"
            checks.append(
                NodeCheck(
                    target.label,
                    target.device,
                    name,
                    target.address,
                    node_id,
                    value=getattr(raw, "Text", raw),
                    quality=quality,
                    error=error,
                )
            )
        return checks
    finally:
        with contextlib.suppress(OSError, TimeoutError, UaError, ConnectionError):
            await client.disconnect()
