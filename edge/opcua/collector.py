"""The OPC UA collector: subscribe (or poll), normalise, hand points to the sink.

Lifecycle (edge.source): the config was validated before construction;
``run(sink)`` loops over *sessions* until cancelled; ``close()`` ends the current one.

One session is: connect (with the configured security, checking the server
certificate against the trust list) → read the namespace array (NodeIds and browse
paths name namespaces by URI, so indexes are looked up afresh each time) → resolve
every mapping (browse paths in one TranslateBrowsePaths call per thousand) →
``online`` for every device the server serves → one subscription with a heartbeat
item on Server_ServerStatus_CurrentTime plus the mapped items, and a poll task for
``mode: poll`` mappings → consume until the connection is lost, the heartbeat goes
silent for ``heartbeat_timeout_s``, or a task fails. Then ``offline`` for every
device, disconnect, back off (exponential, capped, reset after a session that
worked) and start over with a new client. Starting over from nothing, instead of
asyncua's own auto-reconnect, is what re-resolves browse paths after a server
restart that renumbered its nodes.

A mapping that cannot be resolved or monitored is recorded in ``node_errors``,
logged and counted in ``health``; the others keep flowing. A value with a bad status
is recorded the same way and not forwarded (metrics with a value and an uncertain
status are forwarded with quality ``uncertain``).

Notifications flow through asyncua's iterator-mode subscription queue, bounded at
``buffer_size`` with the DROP_OLDEST overflow policy: a stalled sink costs the oldest
values, never the edge's memory. Conversion of one notification is wrapped so a value
the code did not expect is logged and counted, and the next one still flows.

This module is the session: its loop, subscription, polling, heartbeat, counters'
re-baselining and connectivity. The rest is apart, so that the pure parts are tested
without a server:

- :mod:`edge.opcua.client`: building, securing and connecting the asyncua client;
- :mod:`edge.opcua.nodes`: the targets a config reads and their resolution to NodeIds;
- :mod:`edge.opcua.values`: a DataValue to points (pure);
- :mod:`edge.opcua.presets`: where a preset's inputs are, and judging them (pure);
- :mod:`edge.opcua.check`: ``zhizao edge check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError

from edge.counters import CumulativeCounter, Step
from edge.opcua.client import (
    ITEMS_PER_REQUEST,
    OpcUaClientFactory,
    asyncua_client,
    connect,
    read_values,
)
from edge.opcua.config import NodeMapping, OpcUaSourceConfig, ReadMode
from edge.opcua.nodes import Target, build_targets, resolve
from edge.opcua.presets import PresetReading, PresetState, judge_batch
from edge.opcua.values import (
    Reading,
    Rejected,
    count_points,
    metric_point,
    new_counter,
    reading_of,
    state_point,
)
from edge.sink import Sink
from edge.source import SourceHealth
from zhizao.backoff import Backoff
from zhizao.wire import CONNECTIVITY_EVENT, Connectivity, Point, PointKind

log = logging.getLogger(__name__)

Clock = Callable[[], int]

SERVER_CURRENT_TIME = ua.NodeId.from_string(f"i={ObjectIds.Server_ServerStatus_CurrentTime}")
SERVER_START_TIME = ua.NodeId.from_string(f"i={ObjectIds.Server_ServerStatus_StartTime}")
_MAX_BATCH_EVENTS = 1000
_DISCONNECT_TIMEOUT_S = 5.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SessionLost(Exception):
    """The session ended: connection lost, heartbeat silent, or the server refused."""


class OpcUaCollector:
    """Reads one OPC UA server into a sink (see the module docstring)."""

    def __init__(
        self,
        config: OpcUaSourceConfig,
        *,
        client_factory: OpcUaClientFactory = asyncua_client,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.config = config
        self._client_factory = client_factory
        self._clock = clock
        self._health = SourceHealth(name=config.name)
        #: label → problem, for mappings that are not flowing right now
        self.node_errors: dict[str, str] = {}
        #: label -> counter; re-baselined on every new session (see edge.counters)
        self._counters: dict[str, CumulativeCounter] = {}
        #: why the counters were last re-baselined, for the counter event
        self._rebaseline_reason = ""
        #: the server's ServerStatus/StartTime as read at the last connect
        self._server_started: datetime | None = None
        #: preset inputs of the batch being taken, in arrival order
        self._pending: list[PresetReading] = []
        self._client: Client | None = None
        self._lost: asyncio.Event | None = None
        self._devices_online: bool | None = None
        self.sessions = 0  # sessions established, for tests and metrics
        if config.security.insecure:
            log.warning(
                "OPC UA source %s uses security mode None (allow_insecure): "
                "values and credentials travel in clear text",
                config.name,
            )

    @property
    def health(self) -> SourceHealth:
        return self._health

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        try:
            await self._sessions(sink)
        except Exception as exc:
            # Not a failure the loop knows (a bug, a failing sink): the supervisor restarts
            # the collector, and until then its devices are not observed. Say so, so the
            # gap is OFFLINE time and not the last state stretched over it.
            self._health.connected = False
            await self._drop_client()
            try:
                await self._set_connectivity(
                    sink, online=False, reason=f"OPC UA collector failed: {exc!r}"[:256]
                )
            except Exception:
                log.exception("OPC UA %s: cannot report the devices offline", self.config.name)
            raise
        finally:
            await self._drop_client()

    async def _sessions(self, sink: Sink) -> None:
        reconnect = self.config.reconnect
        # No jitter: one edge's sessions to one server do not retry in step.
        backoff = Backoff(reconnect.initial_s, reconnect.max_s, reconnect.factor, jitter=(1.0, 1.0))
        while True:
            points_before = self._health.points_read
            try:
                await self._session(sink)
            except SessionLost as exc:
                self._error(f"session ended: {exc}")
            except (OSError, TimeoutError, UaError, ConnectionError) as exc:
                self._error(f"cannot connect to {self.config.endpoint}: {exc!r}")
            finally:
                self._health.connected = False
                await self._drop_client()
            await self._set_connectivity(sink, online=False)
            if self._health.points_read > points_before:
                # The session worked: this is a fresh failure, start the backoff over.
                backoff.reset()
            delay = backoff.next_delay()
            log.info("OPC UA %s: reconnecting in %.1f s", self.config.name, delay)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._drop_client()

    # -- one session --------------------------------------------------------------

    async def _session(self, sink: Sink) -> None:
        client = await connect(self.config, self._client_factory)
        self._client = client
        lost = asyncio.Event()
        self._lost = lost

        async def on_lost(exc: Exception) -> None:
            log.warning("OPC UA %s: connection lost: %r", self.config.name, exc)
            lost.set()

        client.connection_lost_callback = on_lost
        await self._rebaseline_counters(client)
        targets = build_targets(self.config)
        failures = await resolve(client, self.config, targets)
        for target in targets:
            if target.label in failures:
                self._node_error(target, failures[target.label])
            else:
                self.node_errors.pop(target.label, None)
        self._expect_preset_inputs(targets)
        self.sessions += 1
        self._health.connected = True
        await self._set_connectivity(sink, online=True)

        resolved = [t for t in targets if t.node_id is not None]
        subscribed = [t for t in resolved if t.mode is ReadMode.SUBSCRIBE]
        polled = [t for t in resolved if t.mode is ReadMode.POLL]
        subscription = await client.create_subscription(
            self.config.publishing_interval_ms,
            handler=None,
            queue_maxsize=self.config.buffer_size,
            overflow=OverflowPolicy.DROP_OLDEST,
        )
        heartbeat = _HeartBeat()
        handles = await self._monitor(subscription, subscribed)
        try:
            # _watch ends only by raising SessionLost, which cancels the other tasks.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._consume(subscription, handles, heartbeat, sink))
                group.create_task(self._watch(lost, heartbeat))
                if polled:
                    group.create_task(self._poll(client, polled, sink))
        except* SessionLost as ended:
            raise ended.exceptions[0] from None

    async def _monitor(
        self, subscription: Subscription, targets: Sequence[Target]
    ) -> dict[int, Target | None]:
        """Create the monitored items; returns client handle → target (None: heartbeat)."""
        requests: list[ua.MonitoredItemCreateRequest] = []
        owners: list[Target | None] = []
        heartbeat = _request(SERVER_CURRENT_TIME, handle=1, sampling_ms=1000.0, queue=1)
        requests.append(heartbeat)
        owners.append(None)
        for index, target in enumerate(targets, start=2):
            assert target.node_id is not None  # noqa: S101 - resolved targets only
            mapping = target.mapping
            requests.append(
                _request(
                    target.node_id,
                    handle=index,
                    sampling_ms=target.sampling_interval_ms,
                    queue=target.queue_size,
                    deadband=mapping.deadband if mapping is not None else None,
                )
            )
            owners.append(target)
        handles: dict[int, Target | None] = {}
        retry: list[tuple[ua.MonitoredItemCreateRequest, Target]] = []
        results: list[int | ua.StatusCode] = []
        # In chunks: a server needs a while for thousands of items, and one request
        # that outlives the request timeout would cost the whole session.
        for start in range(0, len(requests), ITEMS_PER_REQUEST):
            chunk = requests[start : start + ITEMS_PER_REQUEST]
            results += await subscription.create_monitored_items(chunk)
        for request, owner, result in zip(requests, owners, results, strict=True):
            handle = request.RequestedParameters.ClientHandle
            if not isinstance(result, ua.StatusCode):
                handles[handle] = owner
                continue
            if owner is None:
                raise SessionLost(f"server refuses the heartbeat item: {result.name}")
            if request.RequestedParameters.Filter is not None and result.value in (
                StatusCodes.BadFilterNotAllowed,
                StatusCodes.BadMonitoredItemFilterUnsupported,
                StatusCodes.BadDeadbandFilterInvalid,
            ):
                log.warning(
                    "OPC UA %s: %s: server refuses the deadband (%s); reading every change",
                    self.config.name,
                    owner.label,
                    result.name,
                )
                request.RequestedParameters.Filter = None
                retry.append((request, owner))
                continue
            self._node_error(owner, f"cannot monitor {owner.address}: {result.name}")
        if retry:
            again = await subscription.create_monitored_items([r for r, _ in retry])
            for (request, owner), result in zip(retry, again, strict=True):
                if isinstance(result, ua.StatusCode):
                    self._node_error(owner, f"cannot monitor {owner.address}: {result.name}")
                else:
                    handles[request.RequestedParameters.ClientHandle] = owner
        return handles

    async def _consume(
        self,
        subscription: Subscription,
        handles: dict[int, Target | None],
        heartbeat: _HeartBeat,
        sink: Sink,
    ) -> None:
        events = aiter(subscription)
        async for event in events:
            batch: list[Point] = []
            self._take(event, handles, heartbeat, batch)
            # Take what is already queued so the sink sees batches, not single points,
            # and the inputs of a preset from one publish are judged together.
            for _ in range(_MAX_BATCH_EVENTS):
                more = await _queued(events)
                if more is None:
                    break
                self._take(more, handles, heartbeat, batch)
            batch.extend(self._flush_presets())
            if batch:
                await sink.put(batch)
                self._health.points_read += len(batch)

    def _take(
        self,
        event: object,
        handles: dict[int, Target | None],
        heartbeat: _HeartBeat,
        batch: list[Point],
    ) -> None:
        if not isinstance(event, DataChangeEvent):
            log.info("OPC UA %s: subscription status event %r", self.config.name, event)
            return
        handle = event.data.subscription_data.client_handle
        if handle not in handles:
            return
        target = handles[handle]
        if target is None:
            heartbeat.beat()
            return
        try:
            batch.extend(self._convert(target, event.data.monitored_item.Value))
        except (ValueError, TypeError, ArithmeticError) as exc:
            # One odd value must not stop the others.
            self._node_error(target, f"value not understood: {exc!r}")

    async def _watch(self, lost: asyncio.Event, heartbeat: _HeartBeat) -> None:
        timeout = self.config.heartbeat_timeout_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(timeout / 4, 1.0)):
                    await lost.wait()
            if lost.is_set():
                raise SessionLost("connection lost")
            if heartbeat.silent_for() > timeout:
                raise SessionLost(
                    f"subscription silent for more than {timeout:.0f} s (heartbeat on "
                    "Server_ServerStatus_CurrentTime); rebuilding"
                )

    async def _poll(self, client: Client, targets: Sequence[Target], sink: Sink) -> None:
        interval = min(
            (t.mapping.poll_interval_ms if t.mapping and t.mapping.poll_interval_ms else 0.0)
            or self.config.poll_interval_ms
            for t in targets
        )
        nodes = [client.get_node(t.node_id) for t in targets if t.node_id is not None]
        # A poll reads the same value again and again; only a change is a new point.
        seen: dict[str, tuple[str, Any, Any]] = {}
        while True:
            try:
                values = await read_values(client, nodes)
            except (UaError, TimeoutError, ConnectionError, OSError) as exc:
                raise SessionLost(f"poll failed: {exc!r}") from exc
            batch: list[Point] = []
            for target, value in zip(targets, values, strict=True):
                key = (repr(value.Value), value.SourceTimestamp, value.StatusCode)
                if seen.get(target.label) == key:
                    continue
                seen[target.label] = key
                try:
                    batch.extend(self._convert(target, value))
                except (ValueError, TypeError, ArithmeticError) as exc:
                    self._node_error(target, f"value not understood: {exc!r}")
            batch.extend(self._flush_presets())
            if batch:
                await sink.put(batch)
                self._health.points_read += len(batch)
            await asyncio.sleep(interval / 1000)

    # -- values to points ---------------------------------------------------------

    def _convert(self, target: Target, value: ua.DataValue | None) -> list[Point]:
        """The points of one value (edge.opcua.values); a rejected one is a node error."""
        if value is None:
            return []
        reading = reading_of(value, target.timestamp, self._clock())
        if isinstance(reading, Rejected):
            self._node_error(target, f"{target.address}: {reading.reason}")
            return []
        self.node_errors.pop(target.label, None)
        if target.preset is not None:
            return self._preset_point(target, reading)
        mapping = target.mapping
        assert mapping is not None  # noqa: S101 - a target has a mapping or a preset
        if mapping.kind is PointKind.METRIC:
            return [metric_point(mapping, reading)]
        if mapping.kind is PointKind.COUNT:
            return self._count_point(target, mapping, reading)
        return self._state_point(target, mapping, reading)

    def _state_point(self, target: Target, mapping: NodeMapping, reading: Reading) -> list[Point]:
        point = state_point(mapping, reading)
        if isinstance(point, Rejected):
            self._node_error(target, point.reason)
            return []
        return [point]

    def _count_point(self, target: Target, mapping: NodeMapping, reading: Reading) -> list[Point]:
        counter = self._counters.get(target.label)
        if counter is None:
            counter = self._counters[target.label] = new_counter(
                mapping, self.config.plausibility_factor
            )
        counted = count_points(mapping, counter, reading, rebaseline_reason=self._rebaseline_reason)
        if isinstance(counted, Rejected):
            self._node_error(target, counted.reason)
            return []
        step, device, name = counted.step, mapping.device, mapping.name
        if step.step in (Step.RESET, Step.WRAP) or step.step.is_anomaly:
            # A wrap is routine for a counter with a small rollover; the others are not.
            log.log(
                logging.INFO if step.step is Step.WRAP else logging.WARNING,
                "OPC UA %s: %s counter %s: %s from %s to %d (+%d)",
                self.config.name,
                device,
                name,
                step.step.value,
                step.previous,
                counted.total,
                step.implied,
            )
        if step.step is Step.REBASELINE:
            self._health.count(self._health.counter_rebaselines, device, name)
        elif step.step.is_anomaly:
            self._health.count(self._health.counter_anomalies, device, name)
        return list(counted.points)

    def _preset_point(self, target: Target, reading: Reading) -> list[Point]:
        """Queue one input; its machine is judged after the batch (edge.opcua.presets)."""
        if target.preset is not None and target.preset_key is not None:
            self._pending.append(
                PresetReading(
                    reading.ts,
                    target.preset_key,
                    reading.raw,
                    reading.quality,
                    target.preset,
                    target.label,
                )
            )
        return []

    def _flush_presets(self) -> list[Point]:
        pending, self._pending = self._pending, []
        points, problems = judge_batch(pending)
        for problem in problems:
            self._problem(problem.label, problem.device, problem.message)
        return points

    def _expect_preset_inputs(self, targets: Iterable[Target]) -> None:
        presets: dict[int, PresetState] = {}
        for target in targets:
            if target.preset is not None and target.preset_key is not None:
                preset = presets.setdefault(id(target.preset), target.preset)
                if target.node_id is not None:
                    preset.expected.add(target.preset_key)

    async def _rebaseline_counters(self, client: Client) -> None:
        """A new session: which counters' next total is only a baseline (edge.counters).

        The server's ServerStatus/StartTime tells a restarted server (its counters may
        come back with any value) from a network outage. After a restart, or when the
        start time cannot be read, every counter re-baselines. After an outage of the
        same server process the counters went on counting, so the parts made meanwhile
        were really made: a counter keeps its baseline where the plausibility guard can
        judge the gap (its ideal cycle time is known), and re-baselines where nothing
        could catch a counter preset behind an unchanged server (a PLC behind a gateway).
        """
        try:
            started = await client.get_node(SERVER_START_TIME).read_value()
        except (UaError, TimeoutError, ConnectionError, OSError) as exc:
            log.info("OPC UA %s: cannot read ServerStatus/StartTime: %r", self.config.name, exc)
            started = None
        started = started if isinstance(started, datetime) else None
        previous, self._server_started = self._server_started, started
        same_server = started is not None and started == previous
        if started is not None and previous is not None and started != previous:
            self._rebaseline_reason = (
                f"OPC UA server restarted (StartTime {previous.isoformat()} -> "
                f"{started.isoformat()})"
            )
        elif same_server:
            self._rebaseline_reason = (
                "OPC UA session re-established; no ideal cycle time to check the gap against"
            )
        else:
            self._rebaseline_reason = "OPC UA session re-established (server start time unknown)"
        for counter in self._counters.values():
            if not (same_server and counter.ideal_cycle_s is not None):
                counter.rebaseline()

    # -- connectivity, errors --------------------------------------------------------

    async def _set_connectivity(
        self, sink: Sink, *, online: bool, reason: str | None = None
    ) -> None:
        if self._devices_online is online:
            return
        self._devices_online = online
        ts = self._clock()
        value = Connectivity.ONLINE if online else Connectivity.OFFLINE
        await sink.put(
            [
                Point(
                    device=device,
                    ts=ts,
                    kind=PointKind.EVENT,
                    name=CONNECTIVITY_EVENT,
                    value=value.value,
                    reason=None
                    if online
                    else reason or f"OPC UA server {self.config.endpoint} unreachable",
                )
                for device in self.config.devices
            ]
        )

    def _error(self, message: str) -> None:
        log.warning("OPC UA %s: %s", self.config.name, message)
        self._health.errors += 1
        self._health.last_error = message

    def _node_error(self, target: Target, message: str) -> None:
        self._problem(target.label, target.device, message)

    def _problem(self, label: str, device: str, message: str) -> None:
        if self.node_errors.get(label) == message:
            return  # the same problem again: counted once, logged once
        self.node_errors[label] = message
        self._error(f"{label} ({device}): {message}")

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            async with asyncio.timeout(_DISCONNECT_TIMEOUT_S):
                await client.disconnect()
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            # The server is usually gone already; the socket is closed either way.
            log.debug("OPC UA %s: disconnect: %r", self.config.name, exc)


async def _queued(events: AsyncIterator[object]) -> object | None:
    """The next event if one is queued already, else None, without waiting.

    Not ``Subscription.next_event(timeout=...)``: it uses ``asyncio.wait_for``, which on
    Python 3.11 can swallow a cancellation that arrives as an item does, and under a
    steady stream the collector then never stops. ``asyncio.timeout(0)`` expires on the
    next loop iteration, and a queue that has an item returns it without suspending.
    """
    try:
        async with asyncio.timeout(0):
            return await anext(events)
    except TimeoutError:
        return None


class _HeartBeat:
    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self.last


def _request(
    node_id: ua.NodeId,
    *,
    handle: int,
    sampling_ms: float,
    queue: int,
    deadband: Any = None,
) -> ua.MonitoredItemCreateRequest:
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = sampling_ms
    params.QueueSize = queue
    params.DiscardOldest = True
    if deadband is not None:
        flt = ua.DataChangeFilter()
        flt.Trigger = ua.DataChangeTrigger.StatusValue
        flt.DeadbandType = (
            ua.DeadbandType.Absolute if deadband.type == "absolute" else ua.DeadbandType.Percent
        )
        flt.DeadbandValue = deadband.value
        params.Filter = flt
    item = ua.ReadValueId()
    item.NodeId = node_id
    item.AttributeId = AttributeIds.Value
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = item
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request
