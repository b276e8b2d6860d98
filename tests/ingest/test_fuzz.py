"""Fuzzing ingest through the real broker (issue 10): nothing a sender sends stops it.

Hypothesis generates payloads: random bytes, truncated and deeply nested JSON, every
envelope and point field with wrong types and extreme values, names with control and
SQL characters, cross-tenant devices and edges, statuses, exact resends (replays) and
numbers re-sent with other content (conflicts), interleaved with valid messages. Each
is published through a real Mosquitto to one real ingest worker and PostgreSQL, and
the test keeps an oracle of what must happen to it. At the end:

* the worker is up and healthy, and acknowledged every message;
* every valid point is stored exactly once, with its value, and nothing else is
  (so nothing crossed tenants: a row of enterprise B's device can only come from B);
* every invalid message is one dead letter holding its payload, every invalid point of
  an otherwise sound message one dead letter with its index; each with a reason, and
  the enterprise and edge of its topic.

Hypothesis is used as a generator here: the assertions run once, after the last
payload, so there is nothing to shrink. ``ZHIZAO_FUZZ_EXAMPLES`` (default 300) sets the
number of payloads and ``ZHIZAO_FUZZ_SEED`` repeats a run; the test prints its figures
and seed. The longer runs of docs/robustness.md::

    ZHIZAO_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/ingest/test_fuzz.py \\
        -q -s --timeout 0
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Factory,
    Publisher,
    Worker,
    get_health,
    letters,
    register,
    scalar,
    wait_until,
    worker_settings,
)
from zhizao.errors import ContractError
from zhizao.storage.connection import connect
from zhizao.storage.deadletters import MAX_STORED_PAYLOAD
from zhizao.wire import MAX_SEQ, StateClass, data_topic, parse_topic, status_topic

EXAMPLES = int(os.environ.get("ZHIZAO_FUZZ_EXAMPLES", "300"))
SEED = int(os.environ.get("ZHIZAO_FUZZ_SEED", str(random.randrange(2**32))))

settings.register_profile(
    "zhizao-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # Generation only: the oracle is checked after the last payload, nothing to shrink.
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

QUALITIES = {"good": 0, "uncertain": 1, "bad": 2}
REASON_PREFIXES = ("topic:", "contract:", "sender:", "device:", "ts:", "value:", "sequence:")

# -- what senders send ------------------------------------------------------------------

names = st.one_of(
    st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=128),
    st.sampled_from(
        ["temp'); DROP TABLE metric_point; --", 'a"b', "%s", "%(x)s", "\\", "温度", "x" * 128]
    ),
)
free_text = st.text(
    st.characters(exclude_categories=("Cc", "Cs"), include_characters="\t\n\r"), max_size=256
)
event_names = names.filter(lambda n: n != "connectivity" and not n.startswith("counter_anomaly"))
metric_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**1023), 2**1023),
    st.sampled_from([sys.float_info.max, -sys.float_info.max, int(sys.float_info.max), 0, -0.0]),
    st.booleans(),
)
qualities = st.sampled_from(sorted(QUALITIES))

valid_points = st.one_of(
    st.fixed_dictionaries(
        {"kind": st.just("metric"), "name": names, "value": metric_values, "quality": qualities}
    ),
    st.fixed_dictionaries(
        {"kind": st.just("state"), "name": st.just("state"),
         "value": st.sampled_from([s.value for s in StateClass]), "quality": qualities},
        optional={"raw": free_text, "reason": free_text},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("count"), "name": st.sampled_from(["good", "reject"]),
         "value": st.integers(0, 2**31 - 1)}
    ),
    st.fixed_dictionaries(
        {"kind": st.just("event"), "name": event_names,
         "value": free_text | st.integers(-(2**62), 2**62) | st.booleans()}
    ),
    st.fixed_dictionaries(
        {"kind": st.just("event"), "name": st.just("connectivity"),
         "value": st.sampled_from(["online", "offline"])},
        optional={"reason": free_text},
    ),
)

#: Wrong for any point: (field, value), or field None to replace the point itself.
_WRONG_FOR_ANY = [
    ("device", v) for v in ["", "bad device", None, 5, "a" * 65, "d\x00", "d/e"]
] + [
    ("ts", v) for v in [0, -5, 946_684_799_999, 4_102_444_800_001, "1", 1.5, None, True, []]
] + [
    ("kind", v) for v in ["", "metrics", None, 3, "METRIC"]
] + [
    ("name", v) for v in ["", "a" * 129, None, 5, "a\x00b", "a\x1fb", "\x7f", "a\x85", "\x1b[2J"]
] + [
    ("quality", v) for v in ["excellent", 1, None, "GOOD"]
] + [
    ("raw", v) for v in ["a\x00", 5, "x" * 257, "\x07"]
] + [
    ("reason", v) for v in ["a\x00", 5, "x" * 257, "\x0b"]
] + [
    ("extra", 1), ("__proto__", {}), ("'; --", "x"),
] + [
    (None, v) for v in [5, "point", [], None, [{"kind": "metric"}]]
]
#: Wrong values per kind (the point keeps its kind and name).
_WRONG_VALUE = {
    "metric": ["x", None, [], {}, 10**400, -(10**309), float("nan"), float("inf"), "a\x00"],
    "state": ["RUNNIN", "running", 1, None, [], "RUNNING\x00"],
    "count": [-1, 1.5, "3", True, None],  # too large for the column: ingest_bad
    "event": [None, [], {}, "E\x00", "E\x07"],
    "connectivity": ["on", 1, None, "online\x00"],
}
wrong_any = st.sampled_from(_WRONG_FOR_ANY)


@st.composite
def contract_bad_points(draw: st.DrawFn) -> dict[str, Any]:
    """A point the contract refuses: one field wrong (or missing) in a valid point."""
    point = dict(draw(valid_points))
    how = draw(st.sampled_from(["field", "value", "missing", "nested"]))
    if how == "value":
        kind = "connectivity" if point["name"] == "connectivity" else point["kind"]
        if kind == "count" and draw(st.booleans()):
            point["name"] = "total"
        else:
            point["value"] = draw(st.sampled_from(_WRONG_VALUE[kind]))
        return point
    if how == "missing":
        missing = draw(st.sampled_from(["device", "ts", "kind", "name", "value"]))
        point.pop(missing, None)
        point["__missing__"] = missing  # device and ts are added when it is sent
        return point
    if how == "nested":
        # Within the depth limit: the point is wrong (a value is a scalar), not the message.
        depth = draw(st.integers(1, 20))
        point["value"] = json.loads("[" * depth + "]" * depth)
        return point
    key, value = draw(wrong_any)
    if key is None:
        return {"__replace__": value}
    point[key] = value
    return point


#: Points the contract accepts but ingest refuses (unknown or foreign device, too far
#: ahead of its clock, a count its column cannot hold).
ingest_bad = st.sampled_from(["ghost-device", "foreign-device", "future", "huge-count"])


@dataclass(frozen=True)
class PointSpec:
    status: str  # "good", "contract" or "ingest"
    body: Any


point_specs = st.one_of(
    valid_points.map(lambda p: PointSpec("good", p)),
    contract_bad_points().map(lambda p: PointSpec("contract", p)),
    ingest_bad.map(lambda p: PointSpec("ingest", p)),
)

_ENVELOPE_WRONG = (
    [("v", v) for v in [2, "1", None, [], -1, 0]]
    + [("enterprise", v) for v in ["", "x", 123, None, "91330106ma2b00001x", "9" * 19]]
    + [("edge", v) for v in ["", 5, None, "bad/edge", "a" * 65]]
    + [("seq", v) for v in [-1, 2**63, 2**64, 10**400, "5", 5.5, None, True, [], 1e20]]
    + [("sent_at", v) for v in [0, -1, 10**15, "x", None, 1.5, True]]
    + [("points", v) for v in [[], None, "x", {}, 5]]
    + [("extra", 1)]
)


@dataclass(frozen=True)
class MessageSpec:
    kind: str
    factory: int  # 0: enterprise A's edge, 1: enterprise B's edge
    points: tuple[PointSpec, ...] = ()
    detail: Any = None
    text: str | None = None


messages = st.one_of(
    # valid, or with some bad points: the most common, as in a plant
    st.builds(MessageSpec, st.just("batch"), st.integers(0, 1),
              st.lists(point_specs, min_size=1, max_size=6).map(tuple)),
    st.builds(MessageSpec, st.just("batch"), st.integers(0, 1),
              st.lists(valid_points.map(lambda p: PointSpec("good", p)), min_size=1,
                       max_size=4).map(tuple),
              st.just("extreme-seq")),
    st.builds(MessageSpec, st.just("envelope"), st.integers(0, 1),
              st.just((PointSpec("good", {"kind": "metric", "name": "t", "value": 1.0}),)),
              st.sampled_from(_ENVELOPE_WRONG) | st.sampled_from(
                  ["missing:enterprise", "missing:edge", "missing:seq", "missing:sent_at",
                   "missing:points"])),
    st.builds(MessageSpec, st.just("tenant"), st.integers(0, 1),
              st.lists(valid_points.map(lambda p: PointSpec("good", p)), min_size=1,
                       max_size=3).map(tuple),
              detail=st.sampled_from(["foreign-topic", "payload-enterprise", "ghost-edge",
                                      "bad-topic"])),
    st.builds(MessageSpec, st.just("bytes"), st.integers(0, 1), detail=st.binary(max_size=300)),
    st.builds(MessageSpec, st.just("truncated"), st.integers(0, 1), detail=st.floats(0, 0.999)),
    st.builds(MessageSpec, st.just("nested"), st.integers(0, 1),
              detail=st.integers(33, 100_000) | st.tuples(
                  st.just("value"), st.integers(30, 100_000))),
    st.builds(MessageSpec, st.just("status"), st.integers(0, 1),
              detail=st.none() | st.sampled_from(
                  [("reason", "boot\x00"), ("software", "z\x1b"), ("last_seq", 2**63),
                   ("last_seq", -1), ("status", "maybe"), ("ts", 1), ("enterprise", "x"),
                   ("extra", 1), ("reason", "x" * 257), ("v", 2)]),
              text=st.none() | free_text),
    st.builds(MessageSpec, st.just("empty-status"), st.integers(0, 1)),
    st.builds(MessageSpec, st.just("replay"), st.integers(0, 1), detail=st.integers(0, 10**6)),
    st.builds(MessageSpec, st.just("conflict"), st.integers(0, 1), detail=st.integers(0, 10**6)),
)


# -- the oracle ---------------------------------------------------------------------------


@dataclass
class Oracle:
    """What publishing each message must lead to, built as they are published."""

    factories: list[Factory]
    foreign: list[str]  # a device code of the other enterprise, per factory
    rows: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    births: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: (topic, digest of the payload as the dead letter keeps it): 100,000 payloads of
    #: up to 200 kB would not fit in memory as bytes.
    message_letters: Counter[tuple[str, bytes]] = field(default_factory=Counter)
    point_letters: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    #: Messages to publish next; ``sent`` counts all published.
    outbox: list[tuple[str, bytes]] = field(default_factory=list)
    sent: int = 0
    valid: list[tuple[int, int, str, bytes]] = field(default_factory=list)  # factory, seq, ...
    next_seq: list[int] = field(default_factory=lambda: [0, 0])
    used_seqs: list[set[int]] = field(default_factory=lambda: [set(), set()])
    clock: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    #: Not the random module: hypothesis owns its state while it generates.
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    #: The message (topic, seq) each expected row comes with, to explain a failure.
    origin: dict[tuple[Any, ...], tuple[str, int]] = field(default_factory=dict)

    def ts(self) -> int:
        self.clock += 1
        return T0 + self.clock

    def seq(self, f: int, extreme: bool = False) -> int:
        if extreme:
            for candidate in (MAX_SEQ - self.rng.randrange(1000) for _ in range(10)):
                if candidate not in self.used_seqs[f]:
                    self.used_seqs[f].add(candidate)
                    return candidate
        while self.next_seq[f] in self.used_seqs[f]:
            self.next_seq[f] += 1
        self.used_seqs[f].add(self.next_seq[f])
        return self.next_seq[f]

    def point(  # noqa: PLR0911 - one exit per kind of point
        self, f: int, spec: PointSpec
    ) -> tuple[Any, tuple[Any, ...] | None]:
        """The point as sent, and the row it must become (for a good point)."""
        factory = self.factories[f]
        device = factory.devices[self.clock % len(factory.devices)]
        ts = self.ts()
        if spec.status == "ingest":
            base = {"device": device, "ts": ts, "kind": "metric", "name": "t", "value": 1.0}
            if spec.body == "ghost-device":
                return base | {"device": "GHOST-1"}, None
            if spec.body == "foreign-device":
                return base | {"device": self.foreign[f]}, None
            if spec.body == "future":
                return base | {"ts": int(time.time() * 1000) + 3 * 86_400_000}, None
            return {"device": device, "ts": ts, "kind": "count", "name": "good",
                    "value": 2**31}, None
        body = dict(spec.body)
        if "__replace__" in body:
            return body["__replace__"], None
        missing = body.pop("__missing__", None)
        point = {"device": device, "ts": ts} | body
        if missing is not None:
            point.pop(missing, None)
        if spec.status == "contract":
            return point, None
        return point, _row(point)

    def batch(self, spec: MessageSpec) -> None:
        f = spec.factory
        factory = self.factories[f]
        topic = data_topic(factory.enterprise, factory.edge)
        seq = self.seq(f, extreme=spec.detail == "extreme-seq")
        built = [self.point(f, p) for p in spec.points]
        payload = _encode(factory, seq, [p for p, _ in built])
        statuses = [p.status for p in spec.points]
        if all(s == "contract" for s in statuses):
            self.message_letters[topic, _digest(payload)] += 1  # "no valid point"
        else:
            for index, (_, row) in enumerate(built):
                if row is not None:
                    self.rows[row] += 1
                    self.origin[row] = (topic, seq)
                else:
                    self.point_letters[topic, seq, index] += 1
            if all(s == "good" for s in statuses):
                self.valid.append((f, seq, topic, payload))
        self.counts["points"] += len(statuses)
        self.counts["good points"] += statuses.count("good")
        self.send((topic, payload))

    def envelope(self, spec: MessageSpec) -> None:
        factory = self.factories[spec.factory]
        point, _ = self.point(spec.factory, spec.points[0])
        document: dict[str, Any] = {"v": 1, "enterprise": factory.enterprise,
                                    "edge": factory.edge, "seq": self.seq(spec.factory),
                                    "sent_at": T0, "points": [point]}
        if isinstance(spec.detail, str):
            del document[spec.detail.removeprefix("missing:")]
        else:
            key, value = spec.detail
            document[key] = value
        self.refused(data_topic(factory.enterprise, factory.edge), _dumps(document))

    def tenant(self, spec: MessageSpec) -> None:
        f = spec.factory
        own, other = self.factories[f], self.factories[1 - f]
        points = [self.point(f, p)[0] for p in spec.points]
        seq = self.seq(f)
        if spec.detail == "foreign-topic":  # own payload, on the other enterprise's topic
            topic, payload = data_topic(other.enterprise, own.edge), _encode(own, seq, points)
        elif spec.detail == "payload-enterprise":  # claims the other enterprise, own topic
            payload = _encode(Factory(other.enterprise, own.edge, ()), seq, points)
            topic = data_topic(other.enterprise, own.edge)
        elif spec.detail == "ghost-edge":
            ghost = Factory(own.enterprise, f"ghost-{seq % 50}", ())
            topic, payload = data_topic(own.enterprise, ghost.edge), _encode(ghost, seq, points)
        else:  # a topic segment no edge id can have
            topic = f"zhizao/v1/{own.enterprise}/edge/a b%/data"
            payload = _encode(own, seq, points)
        self.refused(topic, payload)

    def send(self, message: tuple[str, bytes]) -> None:
        self.outbox.append(message)
        self.sent += 1

    def refused(self, topic: str, payload: bytes) -> None:
        self.message_letters[topic, _digest(payload)] += 1
        self.send((topic, payload))

    def status(self, spec: MessageSpec) -> None:
        factory = self.factories[spec.factory]
        topic = status_topic(factory.enterprise, factory.edge)
        ts = self.ts()
        document: dict[str, Any] = {"v": 1, "enterprise": factory.enterprise,
                                    "edge": factory.edge, "status": "online", "ts": ts,
                                    "software": "zhizao-edge 0.1.0"}
        if spec.text is not None:
            document["reason"] = spec.text
        if spec.detail is None:
            self.births[factory.edge, ts] += 1
            self.send((topic, _dumps(document)))
            return
        key, value = spec.detail
        document[key] = value
        self.refused(topic, _dumps(document))

    def add(self, spec: MessageSpec) -> None:  # noqa: PLR0912 - one branch per kind
        self.counts["payloads"] += 1
        self.counts[spec.kind] += 1
        factory = self.factories[spec.factory]
        topic = data_topic(factory.enterprise, factory.edge)
        if spec.kind in ("replay", "conflict") and not any(
            v[0] == spec.factory for v in self.valid
        ):
            spec = MessageSpec("batch", spec.factory, (PointSpec("good", _METRIC),))
        if spec.kind == "batch":
            self.batch(spec)
        elif spec.kind == "envelope":
            self.envelope(spec)
        elif spec.kind == "tenant":
            self.tenant(spec)
        elif spec.kind == "bytes":
            # Random bytes are never a batch; the dead letter keeps them as they came.
            self.refused(topic, b"\xff" + spec.detail)
        elif spec.kind == "truncated":
            whole = _encode(factory, self.seq(spec.factory), [self.point(spec.factory, PointSpec(
                "good", _METRIC))[0]])
            self.refused(topic, whole[: int(len(whole) * spec.detail)])
        elif spec.kind == "nested":
            if isinstance(spec.detail, int):
                self.refused(topic, b"[" * spec.detail + b"]" * spec.detail)
            else:
                depth = spec.detail[1]
                point, _ = self.point(spec.factory, PointSpec("good", _METRIC))
                payload = _encode(factory, self.seq(spec.factory), [point]).replace(
                    b'"value": 1.0', b'"value": ' + b"[" * depth + b"]" * depth
                )
                self.refused(topic, payload)
        elif spec.kind == "status":
            self.status(spec)
        elif spec.kind == "empty-status":
            # Clears a retained status: nothing to store, nothing to refuse.
            self.send((status_topic(factory.enterprise, factory.edge), b""))
        else:
            mine = [v for v in self.valid if v[0] == spec.factory]
            f, seq, topic, payload = mine[spec.detail % len(mine)]
            if spec.kind == "replay":
                self.send((topic, payload))  # the same bytes: absorbed
            else:
                point, _ = self.point(f, PointSpec("good", _METRIC))
                self.refused(topic, _encode(factory, seq, [point]))  # other bytes, same seq


_METRIC = {"kind": "metric", "name": "t", "value": 1.0}


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload[:MAX_STORED_PAYLOAD], digest_size=16).digest()


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


def _encode(factory: Factory, seq: int, points: list[Any]) -> bytes:
    return _dumps({"v": 1, "enterprise": factory.enterprise, "edge": factory.edge, "seq": seq,
                   "sent_at": T0, "points": points})


def _row(point: dict[str, Any]) -> tuple[Any, ...]:
    """The row a valid point must be stored as (see ingest.convert)."""
    device, ts, kind, name, value = (point[k] for k in ("device", "ts", "kind", "name", "value"))
    quality = QUALITIES[point.get("quality", "good")]
    if kind == "metric":
        return ("metric", device, name, ts, float(value), quality)
    if kind == "state":
        return ("state", device, ts, value, point.get("raw"), point.get("reason"), quality)
    if kind == "count":
        return ("count", device, ts, 0 if name == "good" else 1, value)
    if name == "connectivity":
        return ("connectivity", device, ts, value == "online", point.get("reason"))
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return ("event", device, ts, name, text)


_STORED = {
    "metric": "SELECT 'metric', d.code, n.name, {t}, p.value, p.quality FROM metric_point p"
    " JOIN device d ON d.id = p.device_id JOIN metric_name n ON n.id = p.metric_id",
    "state": "SELECT 'state', d.code, {t}, p.state::text, p.raw, p.reason, p.quality"
    " FROM state_change p JOIN device d ON d.id = p.device_id",
    "count": "SELECT 'count', d.code, {t}, p.counter, p.quantity FROM production_count p"
    " JOIN device d ON d.id = p.device_id",
    "connectivity": "SELECT 'connectivity', d.code, {t}, p.online, p.reason"
    " FROM device_connectivity p JOIN device d ON d.id = p.device_id",
    "event": "SELECT 'event', d.code, {t}, p.name, p.value FROM device_event p"
    " JOIN device d ON d.id = p.device_id",
}
_MS = "(extract(epoch FROM p.time) * 1000)::int8"


async def _stored(db_url: str) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[str, int]]]:
    rows: Counter[tuple[Any, ...]] = Counter()
    conn = await connect(db_url, autocommit=True)
    async with conn:
        for query in _STORED.values():
            cur = await conn.execute(query.format(t=_MS).encode())
            rows.update(tuple(r) for r in await cur.fetchall())
        cur = await conn.execute(
            f"SELECT g.edge_id, {_MS} FROM edge_status p JOIN edge_gateway g ON g.id = p.edge_pk"
            " WHERE p.online"
        )
        births = Counter((str(e), int(t)) for e, t in await cur.fetchall())
    return rows, births


# -- the test -----------------------------------------------------------------------------


async def test_fuzzed_payloads_never_stop_ingest_nor_cost_good_data(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, b = await register(db_url)
    oracle = Oracle([a, b], [b.devices[0], a.devices[0]])
    worker = Worker(worker_settings(db_url, own_mosquitto.url, health_port=0))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url, client_id=f"pub-fuzz-{uuid.uuid4().hex[:8]}")
    infos: list[mqtt.MQTTMessageInfo] = []

    @seed(SEED)
    @settings(settings.get_profile("zhizao-fuzz"))
    @given(messages)
    def publish(spec: MessageSpec) -> None:
        oracle.add(spec)
        infos.extend(publisher.publish(t, p) for t, p in oracle.outbox)
        oracle.outbox.clear()

    started = time.monotonic()
    try:
        # In a thread: the worker keeps consuming on the event loop meanwhile.
        await asyncio.to_thread(publish)
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 120)
        # Last, a valid message of its own: delivery is in order (a redelivery after a
        # reconnect comes before what was queued), so once its row is stored every
        # message before it has been processed. Counting acknowledgements would not do:
        # after a reconnect, messages are received (and counted) twice.
        sentinel = {"kind": "metric", "name": "fuzz-sentinel", "value": 1.0}
        oracle.batch(MessageSpec("batch", 0, (PointSpec("good", sentinel),)))
        await asyncio.to_thread(publisher.publish_all, oracle.outbox)
        sent = oracle.sent

        async def sentinel_stored() -> bool:
            assert not worker.task.done(), "the worker stopped"
            return bool(await scalar(
                db_url, "SELECT count(*) FROM metric_point p JOIN metric_name n"
                " ON n.id = p.metric_id WHERE n.name = 'fuzz-sentinel'"
            ))

        await wait_until(sentinel_stored, within=max(120.0, sent / 20), what="every message")
        elapsed = time.monotonic() - started
        code, health = await get_health(worker.metrics.health_port or 0)
        assert (code, health["database_ok"], health["broker_connected"]) == (200, True, True)

        rows, births = await _stored(db_url)
        missing, extra = oracle.rows - rows, rows - oracle.rows
        if missing:
            lost = sorted({oracle.origin[row] for row in missing})
            found = await letters(db_url)
            why = [(x.topic, x.seq, x.point_index, x.reason) for x in found
                   if (x.topic, x.seq) in set(lost)][:5]
            raise AssertionError(
                f"seed {SEED}: {sum(missing.values())} valid points of {len(lost)} messages not"
                f" stored, e.g. {list(missing)[:3]} of {lost[:3]}; their dead letters: {why}"
            )
        assert not extra, f"seed {SEED}: {sum(extra.values())} rows nobody sent: {list(extra)[:3]}"
        assert births == oracle.births

        found = await letters(db_url)
        whole = Counter((x.topic, _digest(x.payload)) for x in found if x.point_index is None)
        points = Counter(
            (x.topic, x.seq, x.point_index) for x in found if x.point_index is not None
        )
        # A message the broker delivers again after a reconnect (at least once) is
        # dead-lettered again: the same letter twice, never one missing or unexpected.
        reconnects = int(worker.metrics.broker_connects._value.get()) - 1
        assert set(whole) == set(oracle.message_letters), (
            f"seed {SEED}: message dead letters missing {list(oracle.message_letters - whole)[:3]},"
            f" unexpected {list(whole - oracle.message_letters)[:3]}"
        )
        assert set(points) == set(oracle.point_letters), (
            f"seed {SEED}: point dead letters missing {list(oracle.point_letters - points)[:3]},"
            f" unexpected {list(points - oracle.point_letters)[:3]}"
        )
        again = (whole - oracle.message_letters).total() + (points - oracle.point_letters).total()
        if not reconnects:
            assert not again, f"seed {SEED}: {again} dead letters twice without a reconnect"
        for letter in found:
            assert letter.reason.startswith(REASON_PREFIXES), letter.reason
            try:
                topic = parse_topic(letter.topic)
            except ContractError:
                assert letter.reason.startswith("topic:"), letter.reason
                continue
            assert (letter.enterprise, letter.edge) == (topic.enterprise, topic.edge), letter
        assert not worker.task.done()
    finally:
        publisher.close()
        await worker.close()
    print(  # the figures of docs/robustness.md
        f"\nfuzz: seed {SEED}, {oracle.counts['payloads']} payloads generated,"
        f" {sent} messages sent in {elapsed:.1f} s;"
        f" {sum(oracle.rows.values())} valid points stored exactly once,"
        f" {sum(oracle.births.values())} births;"
        f" {sum(whole.values())} message and {sum(points.values())} point dead letters"
        f" ({again} of them again after {reconnects} broker reconnects);"
        f" worker up, /healthz 200; kinds {dict(sorted(oracle.counts.items()))}"
    )
