"""From one MQTT message to fact rows and dead letters: validate, authorise, convert.

Checks, in order, each failure naming exactly what was wrong:

1. the topic is an uplink topic (``zhizao/v1/{enterprise}/edge/{edge}/data|status``);
2. the payload follows the contract (version, schema); bad points of an otherwise
   sound batch are rejected one by one (:func:`zhizao.wire.decode_batch`);
3. the enterprise and edge in the payload are those of the topic;
4. the edge is registered, to that enterprise;
5. every point's device is in that enterprise's ledger and, when the ledger lists the
   devices the edge serves (服务设备), on that list;
6. every point's timestamp is not further ahead of ingest's clock than allowed
   (the contract itself rejects anything before 2000);
7. values fit their columns (a count above 2^31 - 1 cannot be stored);
8. a metric's name is one the enterprise has, or a new one within its limit of
   distinct names (``max_metric_names``, :mod:`ingest.directory`).

A failure of 1-4 dead-letters the message; 5-8 dead-letter the point and keep the
others. Nothing here raises for bad input: one bad message must never stop the
worker. Every dead letter carries the enterprise and edge of its topic when the topic
could be read, so an operator finds it by enterprise.

A data message also gets a digest of its bytes: the writer compares it with the
digest stored for the same sequence number to tell a replay (the same batch again)
from a conflict (another batch under a number already used). An edge re-sends a batch
with the very bytes it sent first (the spool keeps ``sent_at``), so bytes are the
content.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from ingest.directory import Directory, EdgeRef, MetricLimit
from zhizao.errors import ContractError, DataRefused
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
    MAX_SEQ,
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
    read_json,
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
    #: From the topic, for dead letters the writer makes of this message.
    enterprise: str | None = None
    edge_id: str | None = None
    #: Of the payload's bytes, for data messages of a known edge (see module doc).
    digest: bytes | None = None

    def message_letter(self, msg: Inbound, reason: str) -> DeadLetterRow:
        """This message as one dead letter, with its topic's enterprise and edge."""
        return DeadLetterRow(
            msg.topic,
            reason,
            msg.payload,
            msg.received_ms,
            self.enterprise,
            self.edge_id,
            self.seq,
        )


class PointRows(NamedTuple):
    """The fact rows of one point of a message, with its index and JSON."""

    point_index: int
    facts: FactBatch
    raw: bytes


def point_json(raw: Any) -> bytes:
    """A point (as parsed, or rejected) as JSON for its dead letter.

    Readable text where it can be (Chinese names stay Chinese); escaped where it
    cannot, since a lone surrogate has no UTF-8 form. Either way replay reads it back.
    """
    try:
        return json.dumps(raw, ensure_ascii=False, default=str).encode()
    except UnicodeEncodeError:
        return json.dumps(raw, default=str).encode()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _seq_hint(payload: bytes) -> tuple[str | None, str | None, int | None]:
    """Enterprise, edge and seq of a payload that failed validation, if readable."""
    try:
        document = read_json(payload)
    except ContractError:
        return None, None, None
    if not isinstance(document, dict):
        return None, None, None
    seq = document.get("seq")
    ent = document.get("enterprise")
    edge = document.get("edge")
    return (
        ent if isinstance(ent, str) else None,
        edge if isinstance(edge, str) else None,
        seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ else None,
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
        out.enterprise, out.edge_id = topic.enterprise, topic.edge
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
        out.digest = hashlib.blake2b(msg.payload, digest_size=16).digest()
        out.points = len(batch.points) + len(decoded.rejected)
        await self._points(msg.topic, decoded, edge, received, out)
        return out

    async def rows_by_point(self, msg: Inbound) -> list[PointRows]:
        """The fact rows of each good point of a data message, one point at a time.

        For the writer, when the database refuses a message it took as a whole: it
        then looks for the points to blame. Empty for a status message or one that is
        dead as a whole.
        """
        try:
            topic = parse_topic(msg.topic)
            decoded = decode_batch(msg.payload)
        except ContractError:
            return []
        batch = decoded.batch
        if topic.channel != "data":
            return []
        edge, _ = await self._sender_problem(
            topic.enterprise, topic.edge, batch.enterprise, batch.edge
        )
        if edge is None:
            return []
        received = msg.received_ms or self._clock_ms()
        pieces: list[PointRows] = []
        for index, point in zip(_good_indexes(decoded), batch.points, strict=True):
            one = Converted()
            single = DecodedBatch(batch.model_copy(update={"points": [point]}))
            await self._points(msg.topic, single, edge, received, one, indexes=[index])
            if one.facts:
                pieces.append(
                    PointRows(index, one.facts, point.model_dump_json(exclude_none=True).encode())
                )
        return pieces

    async def _intern(
        self, enterprise: str, names: list[str]
    ) -> tuple[MetricLimit | None, dict[str, str]]:
        """Make new metric names known: the limit that refused some, and names the
        database refused (with why)."""
        if not names:
            return None, {}
        try:
            return await self._directory.intern_metrics(enterprise, names), {}
        except DataRefused:
            pass
        # One bad name (a NUL in it) must cost its own points only: name by name.
        limit: MetricLimit | None = None
        bad: dict[str, str] = {}
        for name in dict.fromkeys(names):
            try:
                limit = await self._directory.intern_metrics(enterprise, [name]) or limit
            except DataRefused as exc:
                bad[name] = f"database: {exc}"
        return limit, bad

    async def _points(  # noqa: PLR0912, PLR0915 - one branch per point kind and check
        self,
        topic: str,
        decoded: DecodedBatch,
        edge: EdgeRef,
        received: int,
        out: Converted,
        *,
        indexes: list[int] | None = None,
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
            reject_point(rejected.index, f"contract: {rejected.reason}", point_json(rejected.raw))
        original_index = _good_indexes(decoded) if indexes is None else indexes
        devices, edge = await self._publishable(enterprise, edge, batch.edge)
        newest = 0
        limit = received + self._max_future_ms
        facts = out.facts
        metric_ids = self._directory.metrics(enterprise)
        # Filled at the batch's first unknown name (see below); nothing to do when all
        # its names are known, as they almost always are.
        interned = False
        metric_limit: MetricLimit | None = None
        bad_names: dict[str, str] = {}
        # Locals for the per-point loop: it runs for every point ingest receives.
        add_metric = facts.metrics.append
        qualities = QUALITY_CODES
        metric_kind = PointKind.METRIC
        good = Quality.GOOD
        for index, point in zip(original_index, batch.points, strict=True):
            device_id = devices.get(point.device)
            if device_id is None:
                devices, edge = await self._publishable(enterprise, edge, batch.edge, refresh=True)
                device_id = devices.get(point.device)
                if device_id is None:
                    reject_point(
                        index,
                        await self._unpublishable(point.device, enterprise, batch.edge),
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
                if mid is None and not interned:
                    # All new names of the batch in one look-up: a batch of a thousand
                    # new names costs one round trip, and names beyond the enterprise's
                    # limit (or refused by the database) dead-letter their points.
                    interned = True
                    unknown = [  # in arrival order: the first new names are admitted
                        p.name
                        for p in batch.points
                        if p.kind is metric_kind and p.name not in metric_ids
                    ]
                    metric_limit, bad_names = await self._intern(enterprise, unknown)
                    mid = metric_ids.get(point.name)
                if mid is None:
                    why = bad_names.get(point.name)
                    if why is None:
                        why = (
                            metric_limit.reason(point.name)
                            if metric_limit is not None
                            else f"metric name {point.name!r} was not interned"
                        )
                    reject_point(index, why, point.model_dump_json(exclude_none=True).encode())
                    continue
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

    # -- the devices an edge may publish for (check 5) --------------------------------
    # A separate block, so that the per-point loop stays one dict look-up: the ids of
    # the devices the edge serves are picked once per message.

    async def _publishable(
        self, enterprise: str, edge: EdgeRef, edge_id: str, *, refresh: bool = False
    ) -> tuple[dict[str, int], EdgeRef]:
        """Device ids by code that ``edge`` may publish for, and the edge as now known.

        ``refresh`` (after a miss) re-reads the enterprise's devices and the edge's list,
        each at most every ``registry_miss_retry_s``: a device just added to the ledger
        or to the edge's 服务设备 is accepted without a restart.
        """
        directory = self._directory
        if refresh:
            ids = await directory.refresh_devices(enterprise)
            again = await directory.refresh_edge(edge_id)
            if again is not None and again.enterprise == enterprise:
                edge = again
        else:
            ids = await directory.devices(enterprise)
        if edge.serves is None:
            return ids, edge
        return {code: ids[code] for code in edge.serves if code in ids}, edge

    async def _unpublishable(self, device: str, enterprise: str, edge_id: str) -> str:
        if device in await self._directory.devices(enterprise):
            return (
                f"device: {device!r} is not served by edge {edge_id!r}"
                f" (not in its 服务设备 list in the ledger of enterprise {enterprise})"
            )
        return f"device: {device!r} is not in the ledger of enterprise {enterprise}"

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


def _good_indexes(decoded: DecodedBatch) -> range | list[int]:
    """Indexes of the good points in the original payload, skipping rejected ones."""
    points = len(decoded.batch.points)
    if not decoded.rejected:
        return range(points)
    bad = {r.index for r in decoded.rejected}
    return [i for i in range(points + len(bad)) if i not in bad]


def _event_value(point: Point) -> str:
    value = point.value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
