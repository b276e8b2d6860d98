"""Simulator scenarios: YAML files that say what every simulated device does when.

Every time in a scenario is an offset from its ``start`` (``90s``, ``20m``,
``1h30m`` or a number of seconds), so a scenario reads the same whatever day it
is replayed on. See ``edge/simulator/README.md`` for the format and an example.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from zhizao.errors import ConfigError
from zhizao.wire import StateClass

_DURATION_RE = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)


def parse_duration(value: Any) -> float:
    """``1h30m`` → 5400.0 seconds; numbers are seconds."""
    if isinstance(value, bool):
        # ValueError, not TypeError: pydantic reports only ValueErrors as validation errors.
        raise ValueError("a duration is a number of seconds or text like 1h30m, 20m, 90s")  # noqa: TRY004
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value.strip())
        if match and any(match.groupdict().values()):
            parts = match.groupdict()
            return (
                float(parts["h"] or 0) * 3600 + float(parts["m"] or 0) * 60 + float(parts["s"] or 0)
            )
    raise ValueError(f"{value!r} is not a duration; write a number of seconds or 1h30m, 20m, 90s")


Seconds = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceType(StrEnum):
    CNC = "cnc"  # OPC UA, OPC 40001 Machinery state + counters + spindle and temperatures
    ROBOT = "robot"  # OPC UA, OPC 40010 Robotics safety state
    MQTT = "mqtt"  # JSON on the local broker


class Shift(_Strict):
    start: Seconds
    end: Seconds

    @model_validator(mode="after")
    def _ordered(self) -> Shift:
        if self.end <= self.start:
            raise ValueError("a shift ends after it starts")
        return self


class Episode(_Strict):
    """A period in which a device is in a given state (breakdown, setup, ...) or slowed."""

    at: Seconds
    duration: Annotated[Seconds, Field(gt=0)]
    state: StateClass | None = None
    speed: Annotated[float, Field(gt=0, le=1)] | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _one_effect(self) -> Episode:
        if (self.state is None) == (self.speed is None):
            raise ValueError("an episode sets either a state or a speed factor")
        if self.state is StateClass.OFFLINE:
            raise ValueError("OFFLINE is what the collector sees, use network_drops for it")
        return self


class MicroStops(_Strict):
    every: Annotated[Seconds, Field(gt=0)]
    duration: Annotated[Seconds, Field(gt=0)]


class Device(_Strict):
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
    type: DeviceType
    line: str = "L1"
    ideal_cycle_s: Annotated[float, Field(gt=0)] = 60.0
    #: every n-th part is a reject (deterministic, so ground truth is exact)
    reject_every: Annotated[int, Field(ge=2)] | None = None
    spindle_rpm: Annotated[float, Field(ge=0)] = 8000.0
    episodes: list[Episode] = []
    micro_stops: MicroStops | None = None
    #: starting value of the part counters (to exercise wrap in tests)
    counter_start: Annotated[int, Field(ge=0)] = 0
    counter_bits: Literal[16, 32] = 32


class NetworkDrop(_Strict):
    """The OPC UA server (target ``opcua``) or one MQTT device stops answering."""

    at: Seconds
    duration: Annotated[Seconds, Field(gt=0)]
    target: str = "opcua"


class FaultKind(StrEnum):
    SERVER_RESTART = "server_restart"
    NODE_REMOVED = "node_removed"
    GARBAGE_PAYLOAD = "garbage_payload"
    COUNTER_RESET = "counter_reset"


class Fault(_Strict):
    at: Seconds
    kind: FaultKind
    #: server_restart: give every node a new NodeId and shift namespace indexes
    renumber: bool = False
    #: server_restart: how long the server stays down
    down: Seconds = 0.0
    #: node_removed: "<device>.<variable>"; garbage_payload / counter_reset: a device
    target: str | None = None
    count: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _target(self) -> Fault:
        if self.kind is not FaultKind.SERVER_RESTART and self.target is None:
            raise ValueError(f"a {self.kind.value} fault needs a target")
        return self


class Scenario(_Strict):
    name: str
    start: datetime
    duration: Annotated[Seconds, Field(gt=0)]
    #: simulated seconds per wall second unless the caller overrides it
    speed: Annotated[float, Field(gt=0)] = 1.0
    #: how often (simulated seconds) metrics and MQTT telemetry are refreshed
    metric_period: Annotated[Seconds, Field(gt=0)] = 5.0
    shifts: list[Shift] = []
    devices: Annotated[list[Device], Field(min_length=1)]
    network_drops: list[NetworkDrop] = []
    faults: list[Fault] = []

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.start.tzinfo is None:
            raise ValueError("start needs a time zone, e.g. 2026-03-02T08:00:00+08:00")
        codes = [device.code for device in self.devices]
        if len(set(codes)) != len(codes):
            raise ValueError("device codes must be unique")
        known = {*codes, "opcua"}
        for drop in self.network_drops:
            if drop.target not in known:
                raise ValueError(f"network drop target {drop.target!r} is not a device or opcua")
        return self

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)


def load_scenario(path: Path) -> Scenario:
    """Read a scenario file; raises ConfigError naming the file, key and problem."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from exc
    try:
        return Scenario.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(str(path), key, first["msg"].removeprefix("Value error, ")) from exc


SCENARIOS = Path(__file__).parent / "scenarios"


def bundled(name: str) -> Path:
    """The path of a scenario shipped with zhizao (``factory``, ``smoke``)."""
    return SCENARIOS / f"{name}.yaml"


def resolve(name_or_path: str) -> Path:
    """A scenario file given as a path, or the name of a bundled one."""
    path = Path(name_or_path)
    if not path.exists() and bundled(name_or_path).exists():
        return bundled(name_or_path)
    return path
