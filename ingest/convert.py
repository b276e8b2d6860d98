"""From one MQTT message to fact rows and dead letters: validate, authorise, convert.

Checks, in order, each failure naming exactly what was wrong:

1. the topic is an uplink topic (``zhizao/v1/{enterprise}/edge/{edge}/data|status``);
2. the payload follows the contract (version, schema); bad points of an otherwise
   sound batch are rejected one by one (:func:`zhizao.wire.decode_batch`);
3. the enterprise and edge in the payload are those of the topic;
4. the edge is registered, to that enterprise;
5. every point's device is in that enterprise's ledger;
6. every point's timestamp is not further ahead of ingest's clock than allowed
   (the contract itself rejects anything before 2000);
7. values fit their columns (a count above 2^31 - 1 cannot be stored).

A failure of 1-4 dead-letters the message; 5-7 dead-letter the point and keep the
others. Nothing here raises for bad input: one bad message must never stop the
worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from ingest.directory import Directory, EdgeRef
from zhizao.errors import ContractError
from zhizao.storage.deadletters import DeadLetterRow
from zhizao.storage.facts import (
    COUNTER_CODES,
    QUALITY_CODES,
    ConnectivityRow,
    CountRow,
    EdgeStatusRow,
    EventRow,
    FactBatch,
    MetricRow,
    StateRow,
)
from zhizao.wire import (
    CONNECTIVITY_EVENT,
    Connectivity,
    DecodedBatch,
    EdgeStatus,
    Point,
    PointKind,
    Quality,
    StateClass,
    decode_batch,
    decode_status,
    parse_topic,
)

_INT4_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as received, with what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1
    retain: bool = False
    generation: int = 0
    received_ms: int = 0


@dataclass(slots=True)
class Converted:
    facts: FactBatch = field(default_factory=FactBatch)
    dead: list[DeadLetterRow] = field(default_factory=list)
    points: int = 0
    edge_pk: int | None = None
    seq: int | None = None
    newest_ts_ms: int | None = None
    #: Retained deaths: stored only if the edge's last known status is online
    #: (see :func:`zhizao.storage.facts.write_missed_deaths`).
    missed_deaths: list[EdgeStatusRow] = field(default_factory=list)
    message_dead: bool = False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _seq_hint(payload: bytes) -> tuple[str | None, str | None, int | None]:
    """Enterprise, edge and seq of a payload that failed validation, if readable."""
    try:
        document = json.loads(payload)
    except ValueError:
        return None, None, None
    if not isinstance(document, dict):
        return None, None, None
    seq = document.get("seq")
    ent = document.get("enterprise")
    edge = document.get("edge")
    return (
        ent if isinstance(ent, str) else None,
        edge if isinstance(edge, str) else None,
        seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63 else None,
    )


class Converter:
    def __init__(
        self,
        directory: Directory,
        *,
        max_future_ms: int,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._directory = directory
        self._max_future_ms = max_future_ms
        self._clock_ms = clock_ms

    async def _sender_problem(
        self, enterprise: str, edge_id: str, payload_enterprise: str, payload_edge: str
    ) -> tuple[EdgeRef | None, str | None]:
        """The edge, or why the sender may not publish this (checks 3 and 4)."""
        if payload_enterprise != enterprise or payload_edge != edge_id:
            return None, (
                f"sender: payload says enterprise {payload_enterprise} edge {payload_edge!r},"
                f" topic says enterprise {enterprise} edge {edge_id!r}"
            )
        edge = await self._directory.edge(edge_id)
        if edge is None:
            return None, f"sender: edge {edge_id!r} is not registered"
        if edge.enterprise != enterprise:
            return None, (
                f"sender: edge {edge_id!r} is registered to enterprise {edge.enterprise},"
                f" not {enterprise}"
            )
        return edge, None

    async def _decode_status(
        self, payload: bytes, enterprise: str, edge_id: str
    ) -> tuple[tuple[EdgeStatus, EdgeRef] | None, str | None]:
        try:
            status = decode_status(payload)
        except ContractError as exc:
            return None, f"contract: {exc}"
        edge, problem = await self._sender_problem(
            enterprise, edge_id, status.enterprise, status.edge
        )
        if edge is None:
            return None, problem
        return (status, edge), None

    async def convert(self, msg: Inbound) -> Converted:  # noqa: PLR0911 - one exit per check
        received = msg.received_ms or self._clock_ms()
        out = Converted()

        def reject_message(
            reason: str,
            enterprise: str | None = None,
            edge: str | None = None,
            seq: int | None = None,
        ) -> Converted:
            out.dead.append(
                DeadLetterRow(msg.topic, reason, msg.payload, received, enterprise, edge, seq)
            )
            out.message_dead = True
            return out

        try:
            topic = parse_topic(msg.topic)
        except ContractError as exc:
            return reject_message(f"topic: {exc.reason}")
        if topic.channel == "status":
            if not msg.payload:
                # An empty retained message clears the retained status: nothing to store.
                return out
            status, problem = await self._decode_status(msg.payload, topic.enterprise, topic.edge)
            if problem is not None or status is None:
                return reject_message(problem or "status", topic.enterprise, topic.edge)
            return self._status(msg, *status, received, out)

        try:
            decoded = decode_batch(msg.payload)
        except ContractError as exc:
            _, _, seq = _seq_hint(msg.payload)
            return reject_message(f"contract: {exc}", topic.enterprise, topic.edge, seq)
        batch = decoded.batch
        edge, problem = await self._sender_problem(
            topic.enterprise, topic.edge, batch.enterprise, batch.edge
        )
        if edge is None:
            return reject_message(problem or "sender", topic.enterprise, topic.edge, batch.seq)
        out.edge_pk = edge.pk
        out.seq = batch.seq
        out.points = len(batch.points) + len(decoded.rejected)
        await self._points(msg.topic, decoded, edge, received, out)
        return out

    async def _points(  # noqa: PLR0912, PLR0915 - one branch per point kind and check
        self, topic: str, decoded: DecodedBatch, edge: EdgeRef, received: int, out: Converted
    ) -> None:
        batch = decoded.batch
        enterprise = batch.enterprise

        def reject_point(index: int, reason: str, raw: bytes) -> None:
            out.dead.append(
                DeadLetterRow(
                    topic, reason, raw, received, enterprise, batch.edge, batch.seq, index
                )
            )

        for rejected in decoded.rejected:
            reject_point(
                rejected.index,
                f"contract: {rejected.reason}",
                json.dumps(rejected.raw, ensure_ascii=False, default=str).encode(),
            )
        # Indexes of the good points in the original payload, skipping rejected ones.
        bad_indexes = {r.index for r in decoded.rejected}
        original_index = (
            range(len(batch.points))
            if not bad_indexes
            else [i for i in range(out.points) if i not in bad_indexes]
        )
        devices = await self._directory.devices(enterprise)
        newest = 0
        limit = received + self._max_future_ms
        facts = out.facts
        # Locals for the per-point loop: it runs for every point ingest receives.
        metric_ids = self._directory.metric_cache
        add_metric = facts.metrics.append
        qualities = QUALITY_CODES
        metric_kind = PointKind.METRIC
        good = Quality.GOOD
        for index, point in zip(original_index, batch.points, strict=True):
            device_id = devices.get(point.device)
            if device_id is None:
                devices = await self._directory.refresh_devices(enterprise)
                device_id = devices.get(point.device)
                if device_id is None:
                    reject_point(
                        index,
                        f"device: {point.device!r} is not in the ledger of enterprise {enterprise}",
                        point.model_dump_json(exclude_none=True).encode(),
                    )
                    continue
            ts = point.ts
            if ts > limit:
                reject_point(
                    index,
                    f"ts: {ts} is {(ts - received) / 1000:.0f} s ahead of ingest's clock"
                    f" (limit {self._max_future_ms / 1000:.0f} s)",
                    point.model_dump_json(exclude_none=True).encode(),
                )
                continue
            kind = point.kind
            if kind is metric_kind:
                mid = metric_ids.get(point.name)
                if mid is None:
                    await self._directory.intern_metrics([point.name])
                    mid = metric_ids[point.name]
                # A plain tuple: a NamedTuple's Python-level __new__ costs more than the
                # rest of the loop body. Same shape, so the writer cannot tell.
                # Identity test first: hashing an Enum member for the dict runs Python code.
                quality = point.quality
                q = 0 if quality is good else qualities[quality]
                add_metric(cast(MetricRow, (device_id, mid, ts, float(point.value), q)))
            elif kind is PointKind.STATE:
                facts.states.append(
                    StateRow(
                        device_id,
                        ts,
                        StateClass(str(point.value)),
                        point.raw,
                        point.reason,
                        QUALITY_CODES[point.quality],
                    )
                )
            elif kind is PointKind.COUNT:
                quantity = int(point.value)
                if quantity > _INT4_MAX:
                    reject_point(
                        index,
                        f"value: count increment {quantity} exceeds {_INT4_MAX}",
                        point.model_dump_json(exclude_none=True).encode(),
                    )
                    continue
                facts.counts.append(CountRow(device_id, ts, COUNTER_CODES[point.name], quantity))
            elif point.name == CONNECTIVITY_EVENT:
                facts.connectivity.append(
                    ConnectivityRow(
                        device_id, ts, point.value == Connectivity.ONLINE, edge.pk, point.reason
                    )
                )
            else:
                facts.events.append(EventRow(device_id, ts, point.name, _event_value(point)))
            if ts > newest:  # noqa: PLR1730 - cheaper than a call to max() per point
                newest = ts
        out.newest_ts_ms = newest or None

    def _status(
        self, msg: Inbound, status: EdgeStatus, edge: EdgeRef, received: int, out: Converted
    ) -> Converted:
        if status.status is Connectivity.ONLINE:
            if status.ts > received + self._max_future_ms:
                out.dead.append(
                    DeadLetterRow(
                        msg.topic,
                        f"ts: {status.ts} is ahead of ingest's clock",
                        msg.payload,
                        received,
                        status.enterprise,
                        status.edge,
                    )
                )
                out.message_dead = True
                return out
            out.facts.edge_status.append(
                EdgeStatusRow(
                    edge.pk, status.ts, True, status.reason, status.last_seq, status.software
                )
            )
            return out
        # A Will carries the connect time; the death happened when it was sent, which
        # is (within the broker's delay) when it is received.
        row = EdgeStatusRow(
            edge.pk, received, False, status.reason, status.last_seq, status.software
        )
        if msg.retain:
            out.missed_deaths.append(row)
        else:
            out.facts.edge_status.append(row)
        return out


def _event_value(point: Point) -> str:
    value = point.value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
