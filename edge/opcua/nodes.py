"""Which variables a source reads, and their NodeIds on the server of this session.

:func:`build_targets` turns the config into :class:`Target` s, one per hand-mapped node
and one per input of a preset (pure, no server). :func:`resolve` finds each target's
NodeId afresh for every session, because NodeIds and browse paths name namespaces by
URI and a server may renumber its namespaces and nodes on restart:

- a NodeId (``nsu=<uri>;s=...``) gets today's namespace index;
- hand-written browse paths go to the server in TranslateBrowsePaths calls of a
  thousand;
- a preset's root is resolved once per session and its inputs are found below it; a
  segment without a namespace (a name the server chose, such as the robot's safety
  state) is matched by browse name among the children.

A target that does not resolve is returned with its problem; the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.object_ids import ObjectIds

from edge.opcua.config import (
    NodeMapping,
    OpcUaSourceConfig,
    ReadMode,
    TimestampChoice,
    looks_like_node_id,
    parse_browse_path,
    parse_node_id,
)
from edge.opcua.presets import PresetState, Segment, preset_inputs

OBJECTS_FOLDER = ua.NodeId.from_string(f"i={ObjectIds.ObjectsFolder}")
_TRANSLATE_CHUNK = 1000


@dataclass
class Target:
    """One variable to read, resolved to a NodeId for the current session."""

    label: str  # "nodes.3" or "nodes.0.item_state": where it is in the config
    address: str  # as written, for messages
    device: str
    mode: ReadMode
    timestamp: TimestampChoice
    sampling_interval_ms: float
    queue_size: int
    mapping: NodeMapping | None = None
    preset: PresetState | None = None
    preset_key: str | None = None
    node_id: ua.NodeId | None = None


def build_targets(config: OpcUaSourceConfig) -> list[Target]:
    """Every variable the config reads, not yet resolved."""
    targets: list[Target] = []
    for index, mapping in enumerate(config.nodes):
        label = f"nodes.{index}"
        if isinstance(mapping, NodeMapping):
            targets.append(
                Target(
                    label=label,
                    address=mapping.node or mapping.browse_path or "",
                    device=mapping.device,
                    mode=mapping.mode or config.mode,
                    timestamp=mapping.timestamp or config.timestamp,
                    sampling_interval_ms=(
                        mapping.sampling_interval_ms
                        if mapping.sampling_interval_ms is not None
                        else config.sampling_interval_ms
                    ),
                    queue_size=mapping.queue_size or config.queue_size,
                    mapping=mapping,
                )
            )
            continue
        preset = PresetState(mapping)
        for item in preset_inputs(mapping):
            targets.append(
                Target(
                    label=f"{label}.{item.key}",
                    address=f"{mapping.root}/{'/'.join(name for _, name in item.path)}",
                    device=mapping.device,
                    mode=mapping.mode or config.mode,
                    timestamp=mapping.timestamp or config.timestamp,
                    sampling_interval_ms=(
                        mapping.sampling_interval_ms
                        if mapping.sampling_interval_ms is not None
                        else config.sampling_interval_ms
                    ),
                    # State inputs must not lose a short state between two publishes.
                    queue_size=max(config.queue_size, 10),
                    preset=preset,
                    preset_key=item.key,
                )
            )
    return targets


class _Namespaces:
    def __init__(self, array: Sequence[str]) -> None:
        self._index = {uri: index for index, uri in enumerate(array)}

    def index(self, uri: str) -> int:
        try:
            return self._index[uri]
        except KeyError:
            raise LookupError(f"the server has no namespace {uri!r}") from None


def _node_id(text: str, namespaces: _Namespaces) -> ua.NodeId:
    uri, kind, ident = parse_node_id(text)
    index = namespaces.index(uri)
    return ua.NodeId.from_string(f"ns={index};{kind}={ident}")


async def resolve(
    client: Client, config: OpcUaSourceConfig, targets: list[Target]
) -> dict[str, str]:
    """Set ``node_id`` on every target that resolves; returns label → problem for the rest."""
    namespaces = _Namespaces(await client.get_namespace_array())
    failures: dict[str, str] = {}
    # Hand-written browse paths go to the server in batches of (target, path).
    pending: list[tuple[Target, ua.RelativePath]] = []
    roots: dict[str, ua.NodeId | str] = {}
    for target in targets:
        target.node_id = None
        try:
            if target.mapping is None:
                problem = await _resolve_preset_input(client, config, target, namespaces, roots)
                if problem:
                    failures[target.label] = problem
            elif target.mapping.node is not None:
                target.node_id = _node_id(target.mapping.node, namespaces)
            else:
                segments = parse_browse_path(target.address, config.namespace)
                pending.append((target, _relative_path(segments, namespaces)))
        except (LookupError, ValueError) as exc:
            failures[target.label] = str(exc)
    for start in range(0, len(pending), _TRANSLATE_CHUNK):
        chunk = pending[start : start + _TRANSLATE_CHUNK]
        results = await _translate(client, [(OBJECTS_FOLDER, path) for _, path in chunk])
        for (target, _), result in zip(chunk, results, strict=True):
            if result.StatusCode.is_good() and result.Targets:
                target.node_id = _target_node(result)
            else:
                failures[target.label] = (
                    f"browse path {target.address!r} not found: {result.StatusCode.name}"
                )
    return failures


async def _resolve_preset_input(
    client: Client,
    config: OpcUaSourceConfig,
    target: Target,
    namespaces: _Namespaces,
    roots: dict[str, ua.NodeId | str],
) -> str:
    """Resolve one input of a preset below its (cached) root; returns a problem or ''."""
    if target.preset is None:
        return "neither a mapping nor a preset"
    mapping = target.preset.mapping
    if mapping.root not in roots:
        roots[mapping.root] = await _resolve_root(client, config, mapping.root, namespaces)
    root = roots[mapping.root]
    if isinstance(root, str):
        return root
    item = next(i for i in preset_inputs(mapping) if i.key == target.preset_key)
    node_id, problem = await _walk(client, root, list(item.path), namespaces)
    if node_id is None:
        return "" if item.optional else problem
    target.node_id = node_id
    return ""


async def _resolve_root(
    client: Client, config: OpcUaSourceConfig, text: str, namespaces: _Namespaces
) -> ua.NodeId | str:
    try:
        if looks_like_node_id(text):
            return _node_id(text, namespaces)
        segments: list[Segment] = list(parse_browse_path(text, config.namespace))
    except (LookupError, ValueError) as exc:
        return str(exc)
    node_id, problem = await _walk(client, OBJECTS_FOLDER, segments, namespaces)
    return node_id if node_id is not None else f"preset root {text!r}: {problem}"


async def _walk(
    client: Client, start: ua.NodeId, segments: list[Segment], namespaces: _Namespaces
) -> tuple[ua.NodeId | None, str]:
    """Follow segments from start; a segment without namespace matches by name alone."""
    node = start
    while segments:
        known: list[Segment] = []
        while segments and segments[0][0] is not None:
            known.append(segments.pop(0))
        if known:
            try:
                path = _relative_path(known, namespaces)
            except LookupError as exc:
                return None, str(exc)
            (result,) = await _translate(client, [(node, path)])
            if not (result.StatusCode.is_good() and result.Targets):
                names = "/".join(name for _, name in known)
                return None, f"{names} not found: {result.StatusCode.name}"
            node = _target_node(result)
        if segments:
            _, wanted = segments.pop(0)
            children = await client.get_node(node).get_children()
            for child in children:
                if (await child.read_browse_name()).Name == wanted:
                    node = child.nodeid
                    break
            else:
                return None, f"{wanted} not found"
    return node, ""


def _target_node(result: ua.BrowsePathResult) -> ua.NodeId:
    """The first target as a local NodeId (asyncua may hand out an ExpandedNodeId)."""
    target = result.Targets[0].TargetId
    return ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)


_RESERVED = "/.<>:#!&"


def _relative_path(segments: Sequence[Segment], namespaces: _Namespaces) -> ua.RelativePath:
    """The OPC UA relative path text (Part 4 A.2) with today's namespace indexes."""
    parts = []
    for uri, name in segments:
        if uri is None:
            raise LookupError(f"segment {name!r} has no namespace")
        escaped = "".join(f"&{char}" if char in _RESERVED else char for char in name)
        parts.append(f"/{namespaces.index(uri)}:{escaped}")
    return ua.RelativePath.from_string("".join(parts))


async def _translate(
    client: Client, paths: Sequence[tuple[ua.NodeId, ua.RelativePath]]
) -> list[ua.BrowsePathResult]:
    browse_paths = []
    for origin, relative in paths:
        browse_path = ua.BrowsePath()
        browse_path.StartingNode = origin
        browse_path.RelativePath = relative
        browse_paths.append(browse_path)
    results: list[ua.BrowsePathResult] = await client.uaclient.translate_browsepaths_to_nodeids(
        browse_paths
    )
    return results
