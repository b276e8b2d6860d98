"""Reading an edge YAML file with bounds, so that no file can hang or exhaust the edge.

YAML can say a lot in a few bytes: an anchor used ten times in a list that is itself
anchored and used ten times, nine levels deep, is a 1 KB file that stands for 10**9
values ("billion laughs"). PyYAML builds such a file cheaply (an alias is the same
Python object again), but everything that walks the result afterwards (the line
index, pydantic's validation) walks every expansion and never finishes.

:func:`compose` therefore counts while it composes, in a :class:`yaml.SafeLoader`
subclass:

- the **expanded size** of every node, an alias counting as everything it stands
  for, bottom-up and memoised per node, so counting is linear in the file; a node
  whose expanded size passes :data:`MAX_NODES` stops the read at that node, whose key
  the error names;
- the **depth** of nesting, bounded by :data:`MAX_DEPTH` before PyYAML's recursive
  composer can hit Python's recursion limit;
- an alias inside its own anchor (a recursive structure) is refused: no config
  needs one and nothing downstream could walk it.

The file itself is bounded by :data:`MAX_BYTES` before it is read. Values the
constructor cannot build (an integer of 5,000 digits, the date 2026-13-45) become
errors at their line, not a ``ValueError`` from deep inside PyYAML. Every problem
is a :class:`zhizao.errors.ConfigError` naming the file, the line and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from zhizao.errors import ConfigError

#: Nodes a file may stand for after its aliases are expanded. A large real config
#: (a few thousand mapped OPC UA nodes) has some tens of thousands.
MAX_NODES = 200_000
#: Levels of nesting; real configs have about six (sources[0].nodes[3].deadband.type).
MAX_DEPTH = 32
#: An edge config is a few kilobytes; this leaves room for generated ones.
MAX_BYTES = 8 * 1024 * 1024

Path_ = tuple[str | int, ...]


class _Refused(yaml.MarkedYAMLError):
    """A bound was passed; carries the key path where it happened."""

    def __init__(self, problem: str, mark: yaml.Mark | None, path: Path_) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.path = path


def _part(index: object) -> str | int | None:
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)
    if isinstance(index, int):
        return index
    return None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts expanded nodes and depth while composing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        #: id(node) -> expanded size, recorded when the node is complete.
        self._sizes: dict[int, int] = {}
        #: id(node) -> where it was written, for errors of the constructor.
        self._where: dict[int, Path_] = {}
        self._path: list[str | int] = []
        self._depth = 0

    # PyYAML passes the key node (mappings) or the position (sequences) as ``index``;
    # its stubs say int.
    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        part = _part(index)
        if part is not None:
            self._path.append(part)
        try:
            if self.check_event(yaml.AliasEvent):
                self._check_alias()
                return super().compose_node(parent, index)
            if self._depth >= MAX_DEPTH:
                raise self._refused(
                    f"nested more than {MAX_DEPTH} levels deep; an edge config needs a handful",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            self._depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            if node is not None:
                self._finish(node)
            return node
        finally:
            if part is not None:
                self._path.pop()

    def _refused(self, problem: str, mark: yaml.Mark | None) -> _Refused:
        return _Refused(problem, mark, tuple(self._path))

    def _check_alias(self) -> None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        target = self.anchors.get(event.anchor)
        # A node's size is recorded when it is complete: an alias to an anchor without
        # one points into the node being composed, i.e. the structure contains itself.
        # (An undefined alias is PyYAML's own error, raised by the composer.)
        if target is not None and id(target) not in self._sizes:
            raise self._refused(
                f"the alias *{event.anchor} is inside its own anchor &{event.anchor} "
                "(a structure that contains itself); write the values out",
                event.start_mark,
            )

    def _finish(self, node: yaml.Node) -> None:
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes[id(item)] for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes[id(key)] + self._sizes[id(value)] for key, value in node.value)
        self._sizes[id(node)] = size
        self._where[id(node)] = tuple(self._path)
        if size > MAX_NODES:
            raise self._refused(
                f"stands for more than {MAX_NODES:,} values once its aliases are expanded "
                "(aliases used inside aliases, many times over); write the values out",
                node.start_mark,
            )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, AttributeError, IndexError, TypeError) as exc:
            # int("9" * 5000) passes Python's digit limit; 2026-13-45 is no date; and
            # PyYAML's constructors fail with AttributeError or IndexError on an explicit
            # tag over a value it does not fit (!!timestamp '', !!int '') (found by
            # tests/edge/test_fuzz_config.py).
            raise _Refused(
                f"cannot read the value {_preview(node)}: {exc}",
                node.start_mark,
                self._where.get(id(node), ()),
            ) from exc


def _preview(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = str(node.value)
        return repr(text if len(text) <= 40 else text[:40] + "…")
    return "here"


def _line_index(root: yaml.Node) -> dict[Path_, int]:
    """The line (1-based) of every key and list item, aliases followed (bounded above)."""
    lines: dict[Path_, int] = {}
    stack: list[tuple[yaml.Node, Path_]] = [(root, ())]
    while stack:
        current, path = stack.pop()
        lines.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                lines[(*path, key)] = key_node.start_mark.line + 1
                stack.append((value_node, (*path, key)))
        elif isinstance(current, yaml.SequenceNode):
            for position, item in enumerate(current.value):
                stack.append((item, (*path, position)))
    return lines


def format_key(path: Path_) -> str:
    """``sources[0].nodes[3].sampling_interval_ms``: a key path as the file nests it."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def compose(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML within the bounds; also return the line of every key and list item.

    Raises ConfigError naming ``source``, the line and, where one applies, the key.
    """
    try:
        # The reader checks every character when it is built (no control characters).
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"{source}:{line}",
            "",
            f"contains the character U+{exc.character:04X} at line {line}, which YAML does not "
            "allow (a control character); delete it",
        ) from exc
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Refused as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(where, format_key(exc.path), str(exc.problem)) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if mark is None:
            raise ConfigError(source, "", f"not valid YAML: {exc.problem or exc}") from exc
        raise ConfigError(
            f"{source}:{mark.line + 1}",
            "",
            f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: "
            f"{exc.problem or exc}",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return data, ({} if node is None else _line_index(node))


def read_text(path: Path) -> str:
    """The file's text, refusing files beyond :data:`MAX_BYTES` before reading them."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the file: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(
            str(path), "", f"is larger than {MAX_BYTES // (1024 * 1024)} MiB; not an edge config"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), "", f"is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc
