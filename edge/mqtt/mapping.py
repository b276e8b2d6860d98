"""From an MQTT message (topic, JSON payload) to points: pure logic, no I/O.

A message is *malformed* when its payload is not a JSON object, its timestamp is
missing or unreadable, its device code is not valid, or one of its mapped values
does not fit its kind (text for a metric, an unmapped state). The good fields of a
partly bad message still become points; the message is counted once as malformed
with the reasons. A mapped field that is simply absent is not an error: devices
often publish partial updates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from edge.counters import (
    CumulativeCounter,
    Step,
    anomaly_event,
    as_total,
    rebaseline_event,
)
from edge.mqtt.config import (
    FieldMapping,
    MqttSourceConfig,
    TimestampSpec,
    TopicMapping,
    TopicTemplate,
)
from zhizao.wire import (
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    Point,
    PointKind,
    Quality,
    StateClass,
)

_MISSING = object()


@dataclass(slots=True)
class Mapped:
    """What one message became."""

    device: str | None = None
    points: list[Point] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    matched: bool = True


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path (list indexes as numbers), or ``_MISSING``."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


class BadValue(ValueError):
    """A payload value that cannot become what the mapping says."""


def parse_timestamp(raw: Any, spec: TimestampSpec, zone: ZoneInfo) -> int:
    """Epoch ms from a payload value; raises ValueError saying what was wrong."""
    fmt = spec.format
    if isinstance(raw, bool):
        raise BadValue(f"timestamp {spec.path!r} is a boolean")
    if isinstance(raw, str) and fmt in ("auto", "epoch_ms", "epoch_s"):
        try:
            raw = float(raw)
        except ValueError:
            if fmt != "auto":
                raise BadValue(f"timestamp {spec.path!r}={raw!r} is not a number") from None
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise BadValue(f"timestamp {spec.path!r} is not finite")
        if fmt == "iso8601":
            raise BadValue(f"timestamp {spec.path!r}={raw!r} is not ISO 8601 text")
        seconds = fmt == "epoch_s" or (fmt == "auto" and abs(raw) < 1e11)
        ms = round(raw * 1000) if seconds else round(raw)
    elif isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise BadValue(f"timestamp {spec.path!r}={raw!r} is not ISO 8601") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        ms = round(moment.timestamp() * 1000)
    else:
        raise BadValue(f"timestamp {spec.path!r} is a {type(raw).__name__}, not a time")
    if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        raise BadValue(f"timestamp {spec.path!r}={raw!r} is outside 2000..2100")
    return ms


class _Malformed(Exception):
    """The whole message is unusable (not JSON, no readable timestamp)."""


class Mapper:
    """Turns messages of one MQTT source into points; keeps counter baselines."""

    def __init__(self, config: MqttSourceConfig) -> None:
        self.config = config
        self._zone = ZoneInfo(config.timezone)
        self._topics = [(t, TopicTemplate.compile(t.topic)) for t in config.topics]
        self._counters: dict[tuple[str, str], CumulativeCounter] = {}

    def rebaseline(self, device: str) -> None:
        """The device's next totals are baselines: it was offline and may have restarted."""
        for (owner, _), counter in self._counters.items():
            if owner == device:
                counter.rebaseline()

    def map(self, topic: str, payload: bytes, received_ms: int) -> Mapped:
        for mapping, template in self._topics:
            captured = template.match(topic)
            if captured is None:
                continue
            result = Mapped()
            try:
                self._map(mapping, captured, payload, received_ms, result)
            except _Malformed as exc:
                result.problems.append(str(exc))
            return result
        return Mapped(matched=False)

    def _map(
        self,
        mapping: TopicMapping,
        captured: dict[str, str],
        payload: bytes,
        received_ms: int,
        result: Mapped,
    ) -> None:
        try:
            result.device = mapping.device.format(**captured)
        except (KeyError, IndexError, ValueError) as exc:
            raise _Malformed(f"device template {mapping.device!r}: {exc}") from exc
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Malformed(f"payload is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise _Malformed(f"payload is a JSON {type(document).__name__}, not an object")
        ts = received_ms
        if mapping.timestamp is not None:
            raw_ts = lookup(document, mapping.timestamp.path)
            if raw_ts is _MISSING:
                raise _Malformed(f"timestamp {mapping.timestamp.path!r} is missing")
            try:
                ts = parse_timestamp(raw_ts, mapping.timestamp, self._zone)
            except ValueError as exc:
                raise _Malformed(str(exc)) from exc
        quality = self._quality(mapping, document, result)
        for spec in mapping.fields:
            raw = lookup(document, spec.path)
            if raw is _MISSING or raw is None:
                continue
            device = spec.device.format(**captured) if spec.device else result.device
            try:
                point = self._point(spec, device, ts, raw, quality)
            except (ValueError, ValidationError) as exc:
                result.problems.append(f"{spec.path}: {_short(exc)}")
                continue
            if point is not None:
                result.points.append(point)

    def _quality(self, mapping: TopicMapping, document: Any, result: Mapped) -> Quality:
        if mapping.quality_path is None:
            return Quality.GOOD
        raw = lookup(document, mapping.quality_path)
        if raw is _MISSING:
            return Quality.GOOD
        try:
            return Quality(str(raw).lower())
        except ValueError:
            result.problems.append(
                f"quality {mapping.quality_path!r}={raw!r} is not good, uncertain or bad"
            )
            return Quality.GOOD

    def _point(
        self, spec: FieldMapping, device: str, ts: int, raw: Any, quality: Quality
    ) -> Point | None:
        kind = spec.kind
        if kind is PointKind.METRIC:
            return Point(
                device=device, ts=ts, kind=kind, name=spec.name, value=_number(raw), quality=quality
            )
        if kind is PointKind.STATE:
            key = _state_key(raw)
            return Point(
                device=device,
                ts=ts,
                kind=kind,
                name=spec.name,
                value=_state(spec, key).value,
                quality=quality,
                raw=key[:256],
            )
        if kind is PointKind.COUNT:
            return self._count(spec, device, ts, raw, quality)
        value = raw if isinstance(raw, bool | int | float | str) else json.dumps(raw)
        return Point(device=device, ts=ts, kind=kind, name=spec.name, value=value, quality=quality)

    def _count(
        self, spec: FieldMapping, device: str, ts: int, raw: Any, quality: Quality
    ) -> Point | None:
        total = as_total(raw)
        if total is None:
            raise BadValue(f"count {raw!r} is not a whole number")
        if not spec.cumulative:
            return Point(
                device=device,
                ts=ts,
                kind=PointKind.COUNT,
                name=spec.name,
                value=total,
                quality=quality,
            )
        counter = self._counters.get((device, spec.name))
        if counter is None:
            counter = self._counters[device, spec.name] = CumulativeCounter(
                bits=spec.counter_bits,
                rollover=spec.rollover,
                max_increment=spec.max_increment,
                ideal_cycle_s=self.config.ideal_cycle_s.get(device, spec.ideal_cycle_s),
                factor=self.config.plausibility_factor,
            )
        step = counter.update(total, ts)
        if step.step is Step.INVALID:
            limit = (
                f"the rollover {spec.rollover}"
                if spec.rollover is not None
                else f"a {spec.counter_bits}-bit counter"
            )
            raise BadValue(f"total {total} does not fit {limit}; not counted")
        if step.step is Step.REBASELINE:
            return rebaseline_event(
                device,
                spec.name,
                ts=ts,
                step=step,
                total=total,
                reason="MQTT device back after being offline",
            )
        if step.step.is_anomaly:
            return anomaly_event(device, spec.name, ts=ts, step=step, total=total, guard=counter)
        if step.increment == 0:
            return None  # a baseline, or no new parts: nothing to count
        reason = None if step.step is Step.COUNT else f"counter {step.step.value}"
        return Point(
            device=device,
            ts=ts,
            kind=PointKind.COUNT,
            name=spec.name,
            value=step.increment,
            quality=quality,
            reason=reason,
        )


def _number(raw: Any) -> float | int | bool:
    if isinstance(raw, bool | int | float):
        return raw
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            raise BadValue(f"{raw!r} is not a number") from None
    raise BadValue(f"a {type(raw).__name__} is not a number")


def _state(spec: FieldMapping, key: str) -> StateClass:
    if spec.state_map is not None:
        if key not in spec.state_map:
            raise BadValue(f"state {key!r} is not in the state_map")
        return spec.state_map[key]
    try:
        return StateClass(key)
    except ValueError:
        raise BadValue(f"{key!r} is not a state class (add a state_map)") from None


def _state_key(raw: Any) -> str:
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    if isinstance(raw, bool):
        return str(raw).lower()
    return str(raw)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        return str(first["msg"]).removeprefix("Value error, ")
    return str(exc)
