"""The edge configuration that reads a simulated factory: what an installer would
write for it by hand, built from the scenario so the demo and the end-to-end tests
cannot drift from the simulator.

CNC machines are read through the OPC 40001 Machinery preset, robots through the
OPC 40010 Robotics preset, both with their part counters and process values; MQTT
devices through the JSON mapping of ``edge/simulator/README.md``. Every counter gets
its device's ideal cycle time from the scenario, so the edge's plausibility guard
(edge.counters) is on in the demo as it should be in a factory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.config import EdgeConfig, parse_config
from edge.simulator.scenario import DeviceType, Scenario

NAMESPACE = "urn:zhizao:simulator"


def _opcua_nodes(scenario: Scenario) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for device in scenario.devices:
        if device.type is DeviceType.CNC:
            root = f"Machines/{device.code}"
            nodes.append({"preset": "machinery", "device": device.code, "root": root})
            nodes.append(
                {
                    "device": device.code,
                    "kind": "count",
                    "name": "good",
                    "browse_path": f"{root}/GoodPartCount",
                    "counter_bits": device.counter_bits,
                    "ideal_cycle_s": device.ideal_cycle_s,
                }
            )
            nodes.append(
                {
                    "device": device.code,
                    "kind": "count",
                    "name": "reject",
                    "browse_path": f"{root}/RejectPartCount",
                    "counter_bits": device.counter_bits,
                    "ideal_cycle_s": device.ideal_cycle_s,
                }
            )
            for name, variable in (
                ("spindle_speed", "SpindleSpeed"),
                ("spindle_temperature", "SpindleTemperature"),
            ):
                nodes.append(
                    {
                        "device": device.code,
                        "kind": "metric",
                        "name": name,
                        "browse_path": f"{root}/{variable}",
                    }
                )
        elif device.type is DeviceType.ROBOT:
            nodes.append(
                {"preset": "robotics", "device": device.code, "root": f"Robots/{device.code}"}
            )
    return nodes


def edge_config_for(
    scenario: Scenario,
    *,
    enterprise: str,
    edge_id: str,
    opcua_endpoint: str,
    device_broker_url: str | None,
    uplink_url: str,
    spool_path: Path,
    uplink_protocol: str = "auto",
    http_port: int | None = None,
    offline_after_s: float = 60.0,
    reconnect_s: tuple[float, float] = (1.0, 60.0),
) -> EdgeConfig:
    """An edge config for ``scenario`` as served by :func:`edge.simulator.run.run_simulator`.

    ``offline_after_s`` is in wall seconds: the MQTT collector's silence timeout.
    ``reconnect_s`` is the OPC UA reconnect backoff (first and longest wait, wall seconds).
    """
    sources: list[dict[str, Any]] = []
    nodes = _opcua_nodes(scenario)
    if nodes:
        sources.append(
            {
                "type": "opcua",
                "name": "sim-opcua",
                "endpoint": opcua_endpoint,
                "namespace": NAMESPACE,
                # The simulator listens on loopback without security; production
                # configs use SignAndEncrypt (edge/samples/opcua.yaml).
                "security": {"policy": "None", "mode": "None", "allow_insecure": True},
                "reconnect": {"initial_s": reconnect_s[0], "max_s": reconnect_s[1]},
                "nodes": nodes,
            }
        )
    mqtt_devices = [d.code for d in scenario.devices if d.type is DeviceType.MQTT]
    if mqtt_devices:
        if device_broker_url is None:
            raise ValueError("the scenario has MQTT devices: a device broker URL is needed")
        sources.append(
            {
                "type": "mqtt",
                "name": "sim-mqtt",
                # The same protocol as the uplink: the demo's amqtt speaks 3.1.1 only, and
                # "auto" would first try MQTT 5 against it.
                "broker": {"url": device_broker_url, "protocol": uplink_protocol},
                "offline_after": offline_after_s,
                "devices": mqtt_devices,
                "ideal_cycle_s": {
                    d.code: d.ideal_cycle_s for d in scenario.devices if d.type is DeviceType.MQTT
                },
                "topics": [
                    {
                        "topic": "plant/{line}/{device}/telemetry",
                        "timestamp": {"path": "ts", "format": "epoch_ms"},
                        "fields": [
                            {
                                "path": "status",
                                "name": "state",
                                "kind": "state",
                                "state_map": {
                                    0: "PLANNED_STOP",
                                    1: "RUNNING",
                                    2: "IDLE",
                                    3: "SETUP",
                                    4: "UNPLANNED_STOP",
                                },
                            },
                            {"path": "good_total", "name": "good", "kind": "count"},
                            {"path": "reject_total", "name": "reject", "kind": "count"},
                            {"path": "temperature", "name": "temperature", "kind": "metric"},
                        ],
                    }
                ],
            }
        )
    return parse_config(
        {
            "identity": {"enterprise": enterprise, "edge_id": edge_id},
            "uplink": {"url": uplink_url, "protocol": uplink_protocol, "batch_max_wait_s": 0.2},
            "spool": {"path": str(spool_path)},
            "http": {"port": http_port},
            "sources": sources,
        },
        source=f"scenario {scenario.name}",
    )
