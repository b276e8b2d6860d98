"""The simulator's OPC UA server: CNC machines (OPC 40001-style) and robots (OPC 40010-style).

Address space (``{sim}`` is ``urn:zhizao:simulator``; NodeIds are strings in it,
``s=<code>.<Variable>``, or ``s=g<generation>/<code>.<Variable>`` after a restart
with ``renumber``)::

    Objects/{sim}Machines/{sim}<code>
        {Machinery}MachineryBuildingBlocks/{Machinery}MachineryItemState/CurrentState
        {Machinery}MachineryBuildingBlocks/{Machinery}MachineryOperationMode/CurrentState
        {sim}GoodPartCount, {sim}RejectPartCount   UInt32 cumulative, wrap at 2**bits
        {sim}SpindleSpeed (rpm), {sim}SpindleTemperature, {sim}CoolantTemperature (°C)
        {sim}PlcStatus   Int32: 0 off, 1 run, 2 idle, 3 setup, 4 fault (a raw PLC code)
    Objects/{sim}Robots/{sim}<code>/{Robotics}SafetyStates/{sim}SafetyState/{DI}ParameterSet
        {Robotics}OperationalMode  Int32 (0 OTHER, 1 MANUAL_REDUCED_SPEED, 3 AUTOMATIC)
        {Robotics}EmergencyStop, {Robotics}ProtectiveStop  Boolean

A restart with ``renumber`` also registers a filler namespace first, so every
namespace index moves: a client that kept indexes or NodeIds from before fails,
one that re-resolves by URI and browse path does not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from edge.opcua.config import MACHINERY_NS, ROBOTICS_NS
from edge.opcua.presets import DI_NS
from edge.simulator.scenario import Device, DeviceType
from zhizao.wire import StateClass

log = logging.getLogger(__name__)

SIM_NS = "urn:zhizao:simulator"
#: the server's application URI; a server certificate for the simulator must name it
APPLICATION_URI = "urn:zhizao:simulator:server"

#: CNC state class → (MachineryItemState, MachineryOperationMode)
MACHINERY_STATES: dict[StateClass, tuple[str, str]] = {
    StateClass.RUNNING: ("Executing", "Processing"),
    StateClass.IDLE: ("NotExecuting", "Processing"),
    StateClass.SETUP: ("NotExecuting", "Setup"),
    StateClass.UNPLANNED_STOP: ("OutOfService", "Processing"),
    StateClass.PLANNED_STOP: ("NotAvailable", "None"),
}
#: the raw PLC status word of a CNC
PLC_STATUS: dict[StateClass, int] = {
    StateClass.PLANNED_STOP: 0,
    StateClass.RUNNING: 1,
    StateClass.IDLE: 2,
    StateClass.SETUP: 3,
    StateClass.UNPLANNED_STOP: 4,
}
#: robot state class → (OperationalMode, EmergencyStop, ProtectiveStop). A planned stop
#: looks like idle on a robot's safety state (see edge.opcua.presets).
ROBOT_STATES: dict[StateClass, tuple[int, bool, bool]] = {
    StateClass.RUNNING: (3, False, False),
    StateClass.IDLE: (0, False, False),
    StateClass.SETUP: (1, False, False),
    StateClass.UNPLANNED_STOP: (3, True, False),
    StateClass.PLANNED_STOP: (0, False, False),
}


@dataclass
class Security:
    """Server certificate and key; with them the server offers Basic256Sha256."""

    certificate: Path
    private_key: Path
    allow_none: bool = True


class SimServer:
    """One asyncua server holding every OPC UA device of a scenario."""

    def __init__(
        self,
        devices: list[Device],
        port: int,
        *,
        host: str = "127.0.0.1",
        security: Security | None = None,
    ) -> None:
        self.devices = [d for d in devices if d.type is not DeviceType.MQTT]
        self.port = port
        self.host = host
        self.security = security
        self.generation = 0
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}  # "<code>.<Variable>" → node
        self._values: dict[str, tuple[Any, ua.VariantType, datetime]] = {}
        self._removed: set[str] = set()  # stay removed across restarts, like a changed PLC program
        self._sim_ns = 0
        #: ServerStatus/StartTime of the modelled server process (see start)
        self._started_at: datetime | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/zhizao/sim/"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self, *, renumber: bool = False, same_process: bool = False) -> None:
        """Serve. ``same_process``: the stop before was a network outage, not a restart.

        A network drop is simulated by stopping the listener and starting it again, but in
        the modelled factory the server process never stopped: it keeps its
        ServerStatus/StartTime, which is how a client tells an outage from a restart.
        """
        if self._server is not None:
            return
        if renumber:
            self.generation += 1
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("zhizao factory simulator")
        await server.set_application_uri(APPLICATION_URI)
        if self.security is not None:
            await server.load_certificate(str(self.security.certificate))
            await server.load_private_key(str(self.security.private_key))
            policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
            if self.security.allow_none:
                policies.append(ua.SecurityPolicyType.NoSecurity)
            server.set_security_policy(policies)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.generation:
            # Move every namespace index, as a server with other plugins loaded would.
            for filler in range(self.generation):
                await server.register_namespace(f"urn:zhizao:simulator:filler:{filler}")
        namespaces = {
            uri: await server.register_namespace(uri)
            for uri in (SIM_NS, MACHINERY_NS, ROBOTICS_NS, DI_NS)
        }
        self._nodes = {}
        await self._build(server, namespaces)
        await server.start()
        self._server = server
        start_time = server.get_node(f"i={ObjectIds.Server_ServerStatus_StartTime}")
        if same_process and self._started_at is not None:
            await server.write_attribute_value(
                start_time.nodeid,
                ua.DataValue(ua.Variant(self._started_at, ua.VariantType.DateTime)),
            )
        else:
            self._started_at = cast(datetime, await start_time.read_value())
        # Values survive a restart, as a machine's memory does.
        for key, (value, variant, ts) in list(self._values.items()):
            await self.write(key, value, variant, ts)
        log.info("simulator OPC UA server on %s (generation %d)", self.endpoint, self.generation)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def restart(self, *, renumber: bool = False) -> None:
        await self.stop()
        await self.start(renumber=renumber)

    def _node_id(self, index: int, key: str) -> ua.NodeId:
        prefix = f"g{self.generation}/" if self.generation else ""
        return ua.NodeId(ua.String(f"{prefix}{key}"), ua.Int16(index))

    async def _build(self, server: Server, ns: dict[str, int]) -> None:
        sim = self._sim_ns = ns[SIM_NS]
        objects = server.nodes.objects
        machines = await objects.add_folder(
            self._node_id(sim, "Machines"), ua.QualifiedName("Machines", sim)
        )
        robots = await objects.add_folder(
            self._node_id(sim, "Robots"), ua.QualifiedName("Robots", sim)
        )
        for device in self.devices:
            if device.type is DeviceType.CNC:
                await self._build_cnc(machines, device, ns)
            else:
                await self._build_robot(robots, device, ns)

    async def _variable(
        self,
        parent: Node,
        key: str,
        *,
        name: str,
        ns_index: int,
        value: Any,
        variant: ua.VariantType,
    ) -> Node | None:
        if key in self._removed:
            return None
        node = await parent.add_variable(
            self._node_id(self._sim_ns, key),
            ua.QualifiedName(name, ns_index),
            ua.Variant(value, variant),
        )
        self._nodes[key] = node
        if key not in self._values:
            self._values[key] = (value, variant, datetime.now(UTC))
        return node

    async def _build_cnc(self, parent: Node, device: Device, ns: dict[str, int]) -> None:
        sim, machinery = ns[SIM_NS], ns[MACHINERY_NS]
        code = device.code
        machine = await parent.add_object(self._node_id(sim, code), ua.QualifiedName(code, sim))
        blocks = await machine.add_object(
            self._node_id(sim, f"{code}.MachineryBuildingBlocks"),
            ua.QualifiedName("MachineryBuildingBlocks", machinery),
        )
        for block, initial in (
            ("MachineryItemState", "NotAvailable"),
            ("MachineryOperationMode", "None"),
        ):
            holder = await blocks.add_object(
                self._node_id(sim, f"{code}.{block}"), ua.QualifiedName(block, machinery)
            )
            await self._variable(
                holder,
                f"{code}.{block}.CurrentState",
                name="CurrentState",
                ns_index=0,
                value=ua.LocalizedText(initial, "en"),
                variant=ua.VariantType.LocalizedText,
            )
        start = device.counter_start
        for name, value, variant in (
            ("GoodPartCount", start, ua.VariantType.UInt32),
            ("RejectPartCount", start, ua.VariantType.UInt32),
            ("SpindleSpeed", 0.0, ua.VariantType.Double),
            ("SpindleTemperature", 25.0, ua.VariantType.Double),
            ("CoolantTemperature", 22.0, ua.VariantType.Double),
            ("PlcStatus", 0, ua.VariantType.Int32),
        ):
            await self._variable(
                machine, f"{code}.{name}", name=name, ns_index=sim, value=value, variant=variant
            )

    async def _build_robot(self, parent: Node, device: Device, ns: dict[str, int]) -> None:
        sim, robotics, di = ns[SIM_NS], ns[ROBOTICS_NS], ns[DI_NS]
        code = device.code
        robot = await parent.add_object(self._node_id(sim, code), ua.QualifiedName(code, sim))
        states = await robot.add_object(
            self._node_id(sim, f"{code}.SafetyStates"), ua.QualifiedName("SafetyStates", robotics)
        )
        state = await states.add_object(
            self._node_id(sim, f"{code}.SafetyState"), ua.QualifiedName("SafetyState", sim)
        )
        params = await state.add_object(
            self._node_id(sim, f"{code}.ParameterSet"), ua.QualifiedName("ParameterSet", di)
        )
        for name, value, variant in (
            ("OperationalMode", 0, ua.VariantType.Int32),
            ("EmergencyStop", False, ua.VariantType.Boolean),
            ("ProtectiveStop", False, ua.VariantType.Boolean),
        ):
            await self._variable(
                params, f"{code}.{name}", name=name, ns_index=robotics, value=value, variant=variant
            )

    # -- writing -------------------------------------------------------------------

    async def write(self, key: str, value: Any, variant: ua.VariantType, ts: datetime) -> None:
        """Set ``<code>.<Variable>`` with the simulated source timestamp ``ts``."""
        self._values[key] = (value, variant, ts)
        server, node = self._server, self._nodes.get(key)
        if server is None or node is None:
            return  # down, or the node was removed: the machine's value changes unseen
        await server.write_attribute_value(
            node.nodeid,
            # asyncua annotates timestamps with its DateTime marker subclass of datetime.
            ua.DataValue(
                ua.Variant(value, variant),
                SourceTimestamp=cast(ua.DateTime, ts),
                ServerTimestamp=cast(ua.DateTime, ts),
            ),
        )

    async def set_state(self, device: Device, state: StateClass, ts: datetime) -> None:
        code = device.code
        if device.type is DeviceType.CNC:
            item, mode = MACHINERY_STATES[state]
            text = ua.VariantType.LocalizedText
            await self.write(
                f"{code}.MachineryOperationMode.CurrentState",
                ua.LocalizedText(mode, "en"),
                text,
                ts,
            )
            await self.write(
                f"{code}.MachineryItemState.CurrentState", ua.LocalizedText(item, "en"), text, ts
            )
            await self.write(f"{code}.PlcStatus", PLC_STATUS[state], ua.VariantType.Int32, ts)
            return
        mode_value, emergency, protective = ROBOT_STATES[state]
        await self.write(f"{code}.OperationalMode", mode_value, ua.VariantType.Int32, ts)
        await self.write(f"{code}.EmergencyStop", emergency, ua.VariantType.Boolean, ts)
        await self.write(f"{code}.ProtectiveStop", protective, ua.VariantType.Boolean, ts)

    async def silence_subscriptions(self) -> int:
        """Stop publishing on every subscription while the connection stays up.

        Fault injection for the silent-subscription case some PLC servers show after
        a firmware hiccup: no data, no keep-alive, no error. Returns how many.
        """
        if self._server is None:
            return 0
        subscriptions = list(self._server.iserver.subscription_service.subscriptions.values())
        for subscription in subscriptions:
            await subscription.stop()
        return len(subscriptions)

    async def remove(self, key: str) -> bool:
        """Delete ``<code>.<Variable>`` from the address space (fault injection)."""
        self._removed.add(key)
        node = self._nodes.pop(key, None)
        if node is None or self._server is None:
            return False
        await self._server.delete_nodes([node])
        return True
