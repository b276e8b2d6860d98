"""The edge YAML config: identity, uplink, spool, HTTP (health, metrics) and sources.

::

    identity: {enterprise: 91330106MA2XXXXX0Y, edge_id: edge-01}
    uplink:
      url: mqtts://platform.example.cn:8883
      username: edge-01
      password: "..."
      tls: {ca_file: ca.pem}
      batch_max_points: 500
      batch_max_wait_s: 1s
    spool: {path: /var/lib/zhizao/edge/spool.db, max_bytes: 1GiB, max_age: 7d}
    http: {host: 127.0.0.1, port: 9108}
    sources:
      - {type: opcua, ...}            # edge.opcua.config.OpcUaSourceConfig
      - {type: mqtt, ...}             # edge.mqtt.config.MqttSourceConfig

:func:`load_config` reads the file with a YAML loader that keeps line numbers and
bounds what a file may stand for (:mod:`edge.config_yaml`: aliases, depth, size), and
turns a pydantic error into :class:`zhizao.errors.ConfigError` naming the file and
line, the key path as written (``sources[1].topics[0].fields[2].kind``) and what
was expected. Relative paths (spool, certificates) are relative to the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.config_yaml import compose, format_key, read_text
from edge.mqtt.config import MqttSourceConfig
from edge.opcua.config import OpcUaSourceConfig
from edge.quantities import ByteSize, Duration
from edge.spool import Durability
from zhizao.codes import validate_credit_code
from zhizao.errors import ConfigError, InvalidValue
from zhizao.mqtt import BrokerConnection
from zhizao.wire import MAX_PAYLOAD_BYTES, MAX_POINTS_PER_BATCH

_DEVICE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

SourceConfig = Annotated[OpcUaSourceConfig | MqttSourceConfig, Field(discriminator="type")]


class _Strict(BaseModel):
    # inf and NaN are floats YAML can write (1.0e+400, .nan); no key of ours means them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class IdentityConfig(_Strict):
    """Who this edge is: its enterprise (unified social credit code) and its id."""

    enterprise: str
    edge_id: Annotated[str, Field(pattern=_DEVICE_RE)]

    @field_validator("enterprise")
    @classmethod
    def _credit_code(cls, value: str) -> str:
        try:
            return validate_credit_code(value)
        except InvalidValue as exc:
            raise ValueError(exc.rule) from exc


class UplinkConfig(BrokerConnection):
    """The platform broker, and how batches are formed for it."""

    #: A batch leaves when it has this many points ...
    batch_max_points: Annotated[int, Field(ge=1, le=MAX_POINTS_PER_BATCH)] = 500
    #: ... or when its oldest point has waited this long.
    batch_max_wait_s: Duration = 1.0
    #: Upper bound of a batch's payload.
    batch_max_bytes: Annotated[ByteSize, Field(le=MAX_PAYLOAD_BYTES // 2)] = 1024 * 1024
    #: Batches published and not yet acknowledged at any time.
    inflight_batches: Annotated[int, Field(ge=1, le=1000)] = 8


class SpoolConfig(_Strict):
    path: Path
    max_bytes: ByteSize = 256 * 1024 * 1024
    max_age: Duration = 7 * 86400.0
    durability: Durability = Durability.FSYNC

    @field_validator("path")
    @classmethod
    def _relative_to_file(cls, value: Path, info: ValidationInfo) -> Path:
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        return value if value.is_absolute() or base is None else Path(base) / value


class HttpConfig(_Strict):
    """Where /health and /metrics are served; port 0 picks a free one, null disables."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] | None = 9108


class EdgeConfig(_Strict):
    identity: IdentityConfig
    uplink: UplinkConfig
    spool: SpoolConfig
    http: HttpConfig = HttpConfig()
    sources: Annotated[list[SourceConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_source_names(self) -> EdgeConfig:
        seen: dict[str, int] = {}
        for index, source in enumerate(self.sources):
            if source.name in seen:
                raise ValueError(
                    f"sources[{index}].name {source.name!r} is already used by "
                    f"sources[{seen[source.name]}]; each source needs its own name"
                )
            seen[source.name] = index
        return self


# -- loading -------------------------------------------------------------------------

_Path = tuple[str | int, ...]


def _written_path(loc: tuple[int | str, ...], data: Any) -> _Path:
    """The error location as the user wrote it: union tags pydantic adds are dropped."""
    path: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(current, dict):
            if part in current:
                path.append(part)
                current = current[part]
            elif last or not isinstance(part, str):
                path.append(part)
            # else: a union tag such as "mqtt" or "NodeMapping": not a key of the file
            continue
        if isinstance(current, list) and isinstance(part, int) and part < len(current):
            path.append(part)
            current = current[part]
            continue
        if isinstance(part, int) or last:
            path.append(part)
    return tuple(path)


def _problem(error: Any) -> str:
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; docs/edge.md lists the keys)"
    if kind == "union_tag_invalid":
        return f"unknown source type: {message}"
    if kind == "union_tag_not_found":
        return "each source needs a type: opcua or mqtt"
    return message


def parse_config(
    data: Any, *, source: str, lines: dict[_Path, int] | None = None, base_dir: Path | None = None
) -> EdgeConfig:
    """Validate an already parsed document (the demo builds one in code)."""
    if not isinstance(data, dict):
        raise ConfigError(source, "", "expected a mapping with identity, uplink, spool, sources")
    try:
        return EdgeConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        path = _written_path(tuple(first["loc"]), data)
        line = None
        for cut in range(len(path), -1, -1):
            if lines and path[:cut] in lines:
                line = lines[path[:cut]]
                break
        problem = _problem(first)
        if len(errors) > 1:
            more = len(errors) - 1
            problem += f" (and {more} more problem{'s' if more > 1 else ''})"
        where = f"{source}:{line}" if line is not None else source
        raise ConfigError(where, format_key(path), problem) from exc


def load_config(path: Path | str) -> EdgeConfig:
    """Read and validate an edge YAML file; raise ConfigError naming file, line, key."""
    path = Path(path)
    data, lines = compose(read_text(path), str(path))
    return parse_config(data, source=str(path), lines=lines, base_dir=path.parent)
