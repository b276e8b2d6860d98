"""The OPC UA source section of the edge YAML, validated before anything connects.

One section describes one OPC UA server::

    type: opcua
    name: line1-cnc
    endpoint: opc.tcp://10.0.0.5:4840
    namespace: urn:zhizao:simulator          # for unqualified browse-path segments
    security:
      policy: Basic256Sha256
      mode: SignAndEncrypt
      certificate: pki/edge-cert.der
      private_key: pki/edge-key.pem
      trust_list: pki/trusted               # folder of trusted server certificates
    nodes:
      - {preset: machinery, device: CNC-101, root: Machines/CNC-101}
      - device: CNC-101
        kind: metric
        name: spindle_speed
        unit: rpm
        node: nsu=urn:zhizao:simulator;s=CNC-101.SpindleSpeed
        deadband: {type: absolute, value: 5}
      - device: CNC-101
        kind: count
        name: good
        browse_path: Machines/CNC-101/GoodPartCount

Addresses never carry a bare namespace index: indexes are assigned by the server
and may change when it restarts, so a NodeId names its namespace by URI
(``nsu=<uri>;s=...``; namespace 0 may be written ``i=2258``) and a browse path
segment is either ``Name`` (in the section's ``namespace``) or ``{<uri>}Name``.
Browse paths start at the Objects folder and are re-resolved on every connect.

Security mode ``None`` is accepted only with ``allow_insecure: true``; the
collector logs a warning whenever it uses it.
"""

from __future__ import annotations

import binascii
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.config_yaml import compose, read_text
from edge.counters import check_counter_keys
from edge.quantities import PointName, printable
from zhizao.errors import ConfigError
from zhizao.wire import CountName, PointKind, StateClass

#: The companion-spec namespaces the presets look for.
MACHINERY_NS = "http://opcfoundation.org/UA/Machinery/"
ROBOTICS_NS = "http://opcfoundation.org/UA/Robotics/"
UA_NS = "http://opcfoundation.org/UA/"

_DEVICE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
# nsu=<uri>;<id>  or a namespace-0 id alone.  ns=<index> is refused on purpose.
_NODEID_RE = re.compile(r"^(?:nsu=(?P<uri>[^;]+);)?(?P<type>[isgb])=(?P<id>.+)$", re.DOTALL)
_SEGMENT_RE = re.compile(r"^(?:\{(?P<uri>[^}]+)\})?(?P<name>[^/{}]+)$")


class SecurityMode(StrEnum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class SecurityPolicy(StrEnum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class TimestampChoice(StrEnum):
    SOURCE = "source"  # the device's own time (OPC UA SourceTimestamp), server time if absent
    SERVER = "server"  # the OPC UA server's time of the value
    RECEIPT = "receipt"  # the edge's clock when the value arrived


class ReadMode(StrEnum):
    SUBSCRIBE = "subscribe"
    POLL = "poll"


def parse_node_id(text: str) -> tuple[str, str, str]:
    """Split ``nsu=<uri>;s=Name`` into (namespace uri, identifier type, identifier).

    Raises ValueError with the expected form; ``ns=<index>`` is refused because the
    index of a namespace is the server's choice and changes across restarts.
    """
    if text.startswith("ns="):
        raise ValueError(
            f"{text!r} uses a namespace index; write the namespace URI instead "
            "(nsu=<uri>;s=<name>), because indexes change when the server restarts"
        )
    match = _NODEID_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a NodeId; expected nsu=<uri>;s=<name> (or i=, g=, b=)")
    uri, kind, ident = match["uri"] or UA_NS, match["type"], match["id"]
    _check_identifier(text, kind, ident)
    printable(uri)
    return uri, kind, ident


_GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")


def _check_identifier(text: str, kind: str, ident: str) -> None:
    """The identifier fits its type (OPC 10000-3 §8.2): what a server could ever hold."""
    if kind == "i":
        if not ident.isascii() or not ident.isdigit():
            raise ValueError(f"{text!r}: a numeric identifier (i=) is digits only")
        if len(ident) > 10 or int(ident) > UINT32_MAX:
            raise ValueError(f"{text!r}: a numeric identifier (i=) is at most {UINT32_MAX}")
    elif kind == "g" and not _GUID_RE.match(ident):
        raise ValueError(
            f"{text!r}: a GUID identifier (g=) looks like 09087e75-8e5e-499b-954f-f2a9603db28a"
        )
    elif kind == "b":
        try:
            binascii.a2b_base64(ident, strict_mode=True)
        except binascii.Error as exc:
            raise ValueError(f"{text!r}: an opaque identifier (b=) is base64 ({exc})") from exc
    elif len(ident) > 4096:
        raise ValueError(f"{text!r}: a string identifier (s=) is at most 4096 characters")
    else:
        printable(ident)


def parse_browse_path(text: str, default_namespace: str | None) -> list[tuple[str, str]]:
    """Split ``A/{uri}B/C`` into (namespace uri, name) segments."""
    parts = text.strip("/").split("/")
    if not text.strip("/") or any(not part for part in parts):
        raise ValueError(f"{text!r} is not a browse path; expected Name/Name/... segments")
    segments: list[tuple[str, str]] = []
    for part in parts:
        match = _SEGMENT_RE.match(part)
        if match is None:
            raise ValueError(f"browse path segment {part!r} is neither Name nor {{uri}}Name")
        uri = match["uri"] or default_namespace
        if uri is None:
            raise ValueError(
                f"browse path segment {part!r} has no namespace: write {{uri}}{part} "
                "or set `namespace` on the source"
            )
        segments.append((uri, match["name"]))
    return segments


def looks_like_node_id(text: str) -> bool:
    return text.startswith(("nsu=", "ns=")) or bool(re.match(r"^[isgb]=", text))


class _Strict(BaseModel):
    # inf and NaN are floats YAML can write (1.0e+400, .nan); no key of ours means them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: OPC UA intervals are Durations in ms; beyond a day is a typo, not a setting.
IntervalMs = Annotated[float, Field(gt=0, le=86_400_000)]
#: Timeouts and backoff in seconds, likewise bounded by a day.
Seconds = Annotated[float, Field(gt=0, le=86_400)]
#: Counter increments are stored as 64-bit integers.
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1


class Deadband(_Strict):
    type: Literal["absolute", "percent"]
    value: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError("a percent deadband must be between 0 and 100")
        return self


class Reconnect(_Strict):
    """Exponential backoff between connection attempts."""

    initial_s: Seconds = 1.0
    max_s: Seconds = 60.0
    factor: Annotated[float, Field(ge=1, le=100)] = 2.0

    @model_validator(mode="after")
    def _ordered(self) -> Reconnect:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must not be smaller than initial_s")
        return self


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths are relative to the config file when the loader says where it is."""
    if value is None or value.is_absolute():
        return value
    base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
    return Path(base) / value if base else value


class Security(_Strict):
    policy: SecurityPolicy = SecurityPolicy.BASIC256SHA256
    mode: SecurityMode = SecurityMode.SIGN_AND_ENCRYPT
    certificate: Path | None = None  # the edge's application instance certificate (DER/PEM)
    private_key: Path | None = None
    private_key_password: str | None = None
    trust_list: Path | None = None  # folder of trusted server certificates (DER/PEM)
    allow_insecure: bool = False
    username: str | None = None
    password: str | None = None

    _paths = field_validator("certificate", "private_key", "trust_list")(_resolve_path)

    @model_validator(mode="after")
    def _consistent(self) -> Security:
        if self.mode is SecurityMode.NONE or self.policy is SecurityPolicy.NONE:
            if self.mode is not SecurityMode.NONE or self.policy is not SecurityPolicy.NONE:
                raise ValueError("policy None and mode None go together")
            if not self.allow_insecure:
                raise ValueError(
                    "security mode None sends everything in clear text; set "
                    "allow_insecure: true to accept that explicitly"
                )
            return self
        missing = [
            key
            for key in ("certificate", "private_key", "trust_list")
            if getattr(self, key) is None
        ]
        if missing:
            raise ValueError(
                f"mode {self.mode.value} needs {', '.join(missing)} "
                "(client certificate, its key, and a folder of trusted server certificates)"
            )
        return self

    @property
    def insecure(self) -> bool:
        return self.mode is SecurityMode.NONE


def _state_key(raw: Any) -> str:
    """The string a raw value is looked up by in a state map (YAML keys may be ints/bools)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


class NodeMapping(_Strict):
    """One hand-mapped variable."""

    device: Annotated[str, Field(pattern=_DEVICE_RE)]
    kind: Literal[PointKind.METRIC, PointKind.STATE, PointKind.COUNT]
    name: PointName
    node: str | None = None
    browse_path: str | None = None
    unit: str | None = None
    state_map: dict[str, StateClass] | None = None
    #: the state class for a raw value the map does not name; None reports an error
    state_default: StateClass | None = None
    sampling_interval_ms: Annotated[float, Field(ge=0, le=86_400_000)] | None = None
    deadband: Deadband | None = None
    queue_size: Annotated[int, Field(ge=1, le=10_000)] | None = None
    mode: ReadMode | None = None
    poll_interval_ms: IntervalMs | None = None
    timestamp: TimestampChoice | None = None
    #: a cumulative counter wraps to 0 after 2**counter_bits - 1 ...
    counter_bits: Literal[16, 32, 64] = 32
    #: ... or at this value (rollover: 1000 counts 999 -> 0 as one part)
    rollover: Annotated[int, Field(ge=2, le=2**64)] | None = None
    #: the device's ideal cycle time: an increment beyond what it allows is an anomaly
    ideal_cycle_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    #: an increment above this is an anomaly, whatever the elapsed time
    max_increment: Annotated[int, Field(ge=1, le=INT64_MAX)] | None = None

    @field_validator("state_map", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {_state_key(k): v for k, v in value.items()}
        return value

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str | None) -> str | None:
        if value is not None:
            parse_node_id(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NodeMapping:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node (nsu=<uri>;s=...) or browse_path")
        if self.kind is PointKind.STATE and not self.state_map:
            raise ValueError("a state node needs a state_map from raw values to state classes")
        if self.kind is not PointKind.STATE and self.state_map:
            raise ValueError("state_map is only for kind: state")
        if self.kind is PointKind.COUNT and self.name not in CountName.__members__.values():
            raise ValueError("a count node's name must be 'good' or 'reject'")
        if self.deadband is not None and self.kind is not PointKind.METRIC:
            raise ValueError("a deadband only makes sense for kind: metric")
        check_counter_keys(
            self.kind, self.counter_bits, self.rollover, self.ideal_cycle_s, self.max_increment
        )
        return self

    def state_for(self, raw: Any) -> StateClass | None:
        if self.state_map is None:
            return None
        return self.state_map.get(_state_key(raw), self.state_default)


class Preset(StrEnum):
    MACHINERY = "machinery"  # OPC 40001-1 MachineryItemState x MachineryOperationMode
    ROBOTICS = "robotics"  # OPC 40010-1 SafetyState: OperationalMode, EmergencyStop, ProtectiveStop


class PresetMapping(_Strict):
    """A machine's state from a companion specification, without a node list.

    ``root`` is the machine object (Machinery) or the MotionDeviceSystem (Robotics),
    as a browse path or a NodeId.
    """

    preset: Preset
    device: Annotated[str, Field(pattern=_DEVICE_RE)]
    root: Annotated[str, Field(min_length=1)]
    name: PointName = "state"
    #: Robotics: the SafetyState object under SafetyStates (servers name it freely)
    safety_state: Annotated[str, Field(min_length=1, max_length=256), AfterValidator(printable)] = (
        "SafetyState"
    )
    sampling_interval_ms: Annotated[float, Field(ge=0, le=86_400_000)] | None = None
    mode: ReadMode | None = None
    timestamp: TimestampChoice | None = None

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        if looks_like_node_id(value):
            parse_node_id(value)
        return value


# The tags appear in pydantic's error locations; they are class names so that no key
# a person writes (``node:``, ``preset:``) is mistaken for one, or one for a key.
_NODE_TAG, _PRESET_TAG = "NodeMapping", "PresetMapping"


def _mapping_tag(value: Any) -> str:
    if isinstance(value, dict):
        return _PRESET_TAG if "preset" in value else _NODE_TAG
    return _PRESET_TAG if isinstance(value, PresetMapping) else _NODE_TAG


Mapping = Annotated[
    Annotated[NodeMapping, Tag(_NODE_TAG)] | Annotated[PresetMapping, Tag(_PRESET_TAG)],
    Discriminator(_mapping_tag),
]


class OpcUaSourceConfig(_Strict):
    """One OPC UA server and what to read from it."""

    type: Literal["opcua"]
    name: Annotated[str, Field(pattern=_DEVICE_RE)] = "opcua"
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://.+")]
    security: Security
    namespace: (
        Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(printable)] | None
    ) = None
    timestamp: TimestampChoice = TimestampChoice.SOURCE
    mode: ReadMode = ReadMode.SUBSCRIBE
    publishing_interval_ms: IntervalMs = 500.0
    sampling_interval_ms: Annotated[float, Field(ge=0, le=86_400_000)] = 500.0
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 10
    poll_interval_ms: IntervalMs = 1000.0
    #: the Server_ServerStatus_CurrentTime heartbeat: no change for this long means
    #: the subscription went silent and is rebuilt
    heartbeat_timeout_s: Seconds = 10.0
    request_timeout_s: Seconds = 4.0
    reconnect: Reconnect = Reconnect()
    #: bounded buffer between subscription and sink; when full the oldest goes first
    buffer_size: Annotated[int, Field(ge=10, le=10_000_000)] = 100_000
    #: a counter increment above elapsed / ideal_cycle_s * this + 1 is an anomaly
    plausibility_factor: Annotated[float, Field(gt=0, le=1000)] = 2.0
    nodes: Annotated[list[Mapping], Field(min_length=1)]

    @model_validator(mode="after")
    def _paths_resolve(self) -> OpcUaSourceConfig:
        for index, mapping in enumerate(self.nodes):
            path = mapping.browse_path if isinstance(mapping, NodeMapping) else mapping.root
            if path is not None and not looks_like_node_id(path):
                try:
                    parse_browse_path(path, self.namespace)
                except ValueError as exc:
                    raise ValueError(f"nodes.{index}: {exc}") from exc
        seen: dict[tuple[str, str, str], int] = {}
        for index, mapping in enumerate(self.nodes):
            if isinstance(mapping, NodeMapping) and mapping.kind is not PointKind.METRIC:
                key = (mapping.device, mapping.kind.value, mapping.name)
                if key in seen:
                    raise ValueError(
                        f"nodes.{index} maps {key[0]} {key[1]} {key[2]!r} again "
                        f"(first at nodes.{seen[key]})"
                    )
                seen[key] = index
        return self

    @property
    def devices(self) -> list[str]:
        """The devices this server serves, in config order."""
        return list(dict.fromkeys(mapping.device for mapping in self.nodes))


def describe_validation_error(error: ValidationError) -> tuple[str, str]:
    """The key (dotted path) and problem of a pydantic error, for ConfigError."""
    first = error.errors(include_url=False)[0]
    # The union tag (right after a list index) is not a key a person wrote; leave it
    # out of the dotted path.
    loc: list[str] = []
    previous: object = None
    for part in first["loc"]:
        if not (isinstance(previous, int) and part in (_NODE_TAG, _PRESET_TAG)):
            loc.append(str(part))
        previous = part
    more = error.error_count() - 1
    problem = first["msg"].removeprefix("Value error, ")
    # Checks across the section (browse paths need its namespace) name the node in
    # the message, as a model-level error has no location of its own.
    nested = re.match(r"^(nodes\.\d+): (.*)$", problem, re.DOTALL)
    if nested and not loc:
        loc, problem = [nested[1]], nested[2]
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ".".join(loc), problem


def load_source_file(path: Path) -> OpcUaSourceConfig:
    """Read one OPC UA source section from its own YAML file (samples, `edge check`).

    Raises ConfigError naming the file, the key and the problem.
    """
    document, _ = compose(read_text(path), str(path))
    if not isinstance(document, dict):
        raise ConfigError(str(path), "", "expected a mapping with type: opcua at the top")
    try:
        return OpcUaSourceConfig.model_validate(document, context={"base_dir": path.parent})
    except ValidationError as exc:
        key, problem = describe_validation_error(exc)
        raise ConfigError(str(path), key, problem) from exc
