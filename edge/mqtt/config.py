"""The MQTT source section of the edge YAML: devices publishing JSON on a local broker.

::

    type: mqtt
    name: line1-mqtt
    broker: {url: "mqtt://10.0.0.2:1883", username: edge, password: "..."}
    offline_after: 60s                # silent longer: connectivity offline event
    devices: [press-01, press-02]     # expected devices: offline if they never publish
    topics:
      - topic: plant/{line}/{device}/telemetry
        device: "{device}"            # placeholders of the topic, default "{device}"
        timestamp: {path: ts, format: epoch_ms}   # absent: time of receipt
        fields:
          - {path: spindle.speed, name: spindle_speed, kind: metric}
          - {path: status, name: state, kind: state,
             state_map: {RUN: RUNNING, IDLE: IDLE, ALARM: UNPLANNED_STOP}}
          - {path: counters.good, name: good, kind: count}   # cumulative total

A topic template is a topic filter whose levels may hold ``{placeholders}``
(one level each, also inside a level: ``dev-{device}``), ``+`` or a final ``#``. The
collector subscribes with every placeholder replaced by ``+`` and takes the values
of the placeholders from each message's topic. Field paths are dotted, with list
indexes as numbers (``axes.0.temp``).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.counters import check_counter_keys
from edge.quantities import Duration, PointName
from zhizao.mqtt import BrokerConnection
from zhizao.wire import CountName, PointKind, StateClass

_DEVICE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    # inf and NaN are floats YAML can write (1.0e+400, .nan); no key of ours means them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A compiled topic template: the subscription filter and a matcher."""

    text: str
    filter: str
    placeholders: tuple[str, ...]
    pattern: re.Pattern[str]

    @classmethod
    def compile(cls, text: str) -> TopicTemplate:
        if not text or text.startswith("$"):
            raise ValueError("a topic template must be a non-empty topic filter not under $")
        levels = text.split("/")
        filters: list[str] = []
        regex: list[str] = []
        names: list[str] = []
        for index, level in enumerate(levels):
            if level == "#":
                if index != len(levels) - 1:
                    raise ValueError("'#' may only be the last level of a topic")
                filters.append("#")
                regex.append(".*" if index == 0 else "(?:.*)")
                continue
            if level == "+":
                filters.append("+")
                regex.append("[^/]*")
                continue
            if "+" in level or "#" in level:
                raise ValueError(f"level {level!r}: '+' and '#' must fill a whole level")
            found = _PLACEHOLDER_RE.findall(level)
            if not found:
                if "{" in level or "}" in level:
                    raise ValueError(f"level {level!r}: placeholders look like {{name}}")
                filters.append(level)
                regex.append(re.escape(level))
                continue
            for name in found:
                if name in names:
                    raise ValueError(f"placeholder {{{name}}} appears twice")
                names.append(name)
            filters.append("+")
            parts = _PLACEHOLDER_RE.split(level)
            # split() alternates literal text and placeholder names.
            regex.append(
                "".join(
                    re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)"
                    for i, part in enumerate(parts)
                )
            )
        joined = "/".join(regex)
        if levels[-1] == "#" and len(levels) > 1:
            # "a/#" also matches "a" itself (MQTT 3.1.1 §4.7.1.2).
            joined = "/".join(regex[:-1]) + "(?:/.*)?"
        return cls(text, "/".join(filters), tuple(names), re.compile(f"^{joined}$"))

    def match(self, topic: str) -> dict[str, str] | None:
        found = self.pattern.match(topic)
        return found.groupdict() if found else None


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class TimestampSpec(_Strict):
    """Where a message's time is and how it is written."""

    path: Annotated[str, Field(min_length=1)]
    #: auto: numbers above 1e11 are epoch ms, smaller ones epoch s; strings ISO 8601.
    format: Literal["auto", "epoch_ms", "epoch_s", "iso8601"] = "auto"


class FieldMapping(_Strict):
    """One value in the payload and the point it becomes."""

    path: Annotated[str, Field(min_length=1, max_length=1024)]
    name: PointName
    kind: PointKind = PointKind.METRIC
    #: Device template for this field only (else the topic mapping's).
    device: str | None = None
    #: Raw value (as text) → state class, for kind: state. Without it the raw value
    #: must already be a state class name.
    state_map: dict[str, StateClass] | None = None
    #: kind: count: the device reports a running total (default) that the edge turns
    #: into increments, or increments already (cumulative: false).
    cumulative: bool = True
    #: counter width for wrap detection of cumulative totals ...
    counter_bits: Annotated[int, Field(ge=8, le=64)] = 32
    #: ... or the value it wraps to 0 at (rollover: 1000 counts 999 -> 0 as one part)
    rollover: Annotated[int, Field(ge=2, le=2**64)] | None = None
    #: the device's ideal cycle time: an increment beyond what it allows is an anomaly
    ideal_cycle_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    #: an increment above this is an anomaly, whatever the elapsed time
    max_increment: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    unit: str | None = None

    @field_validator("state_map", mode="before")
    @classmethod
    def _keys_as_text(cls, value: object) -> object:
        # YAML reads `1: RUNNING` with an int key; payload values are matched as text.
        if isinstance(value, dict):
            return {str(key): state for key, state in value.items()}
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> FieldMapping:
        if self.kind is PointKind.COUNT and self.name not in CountName.__members__.values():
            raise ValueError("a count field's name must be 'good' or 'reject'")
        if self.state_map is not None and self.kind is not PointKind.STATE:
            raise ValueError("state_map is only for kind: state")
        check_counter_keys(
            self.kind, self.counter_bits, self.rollover, self.ideal_cycle_s, self.max_increment
        )
        if not self.cumulative and (
            self.rollover is not None
            or self.ideal_cycle_s is not None
            or self.max_increment is not None
        ):
            raise ValueError(
                "rollover, ideal_cycle_s and max_increment are for cumulative totals"
                " (cumulative: true)"
            )
        return self


class TopicMapping(_Strict):
    """A topic template and the fields read from its messages."""

    topic: str
    device: str = "{device}"
    timestamp: TimestampSpec | None = None
    #: Optional path of a quality value (good, uncertain, bad); default good.
    quality_path: str | None = None
    fields: Annotated[list[FieldMapping], Field(min_length=1)]

    @field_validator("topic")
    @classmethod
    def _template(cls, value: str) -> str:
        TopicTemplate.compile(value)
        return value

    @model_validator(mode="after")
    def _device_from_topic(self) -> TopicMapping:
        known = set(TopicTemplate.compile(self.topic).placeholders)
        for where, template in [("device", self.device)] + [
            (f"fields.{i}.device", f.device) for i, f in enumerate(self.fields) if f.device
        ]:
            unknown = [name for name in template_fields(template) if name not in known]
            if unknown:
                raise ValueError(
                    f"{where} uses {{{unknown[0]}}}, which is not a placeholder of the topic "
                    f"{self.topic!r} (it has: {', '.join(sorted(known)) or 'none'})"
                )
        return self

    @property
    def template(self) -> TopicTemplate:
        return TopicTemplate.compile(self.topic)


class MqttSourceConfig(_Strict):
    """A local MQTT broker and the device topics to read from it."""

    type: Literal["mqtt"]
    name: Annotated[str, Field(pattern=_DEVICE_RE)] = "mqtt"
    broker: BrokerConnection
    qos: Literal[0, 1] = 1
    #: A device silent for longer is reported offline (connectivity event).
    offline_after: Duration = 60.0
    #: Devices expected on this broker: reported offline if they never publish, and
    #: listed by `zhizao edge check`.
    devices: list[Annotated[str, Field(pattern=_DEVICE_RE)]] = []
    #: Time zone of ISO 8601 timestamps written without an offset.
    timezone: str = "Asia/Shanghai"
    #: A counter increment above elapsed / ideal_cycle_s * this + 1 is an anomaly.
    plausibility_factor: Annotated[float, Field(gt=0, le=1000)] = 2.0
    #: Ideal cycle time per device (seconds), for the counters of devices that share a
    #: topic mapping; it takes precedence over a count field's own ideal_cycle_s.
    ideal_cycle_s: dict[
        Annotated[str, Field(pattern=_DEVICE_RE)], Annotated[float, Field(gt=0, le=86_400)]
    ] = {}
    topics: Annotated[list[TopicMapping], Field(min_length=1)]

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (expected e.g. Asia/Shanghai)") from exc
        return value
