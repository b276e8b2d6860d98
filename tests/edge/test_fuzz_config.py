"""Fuzzing the edge config loader: generated YAML, aliases, wrong types and extremes.

The property: :func:`edge.config.load_config` either returns a config or raises its
ConfigError, which names the file and a key or a line; never another exception, and
never a hang (an alias bomb is refused while it is composed). Three generators:

- **mutations** of a valid config: a value at a random key path replaced by an
  extreme (10**30, 1.0e+400, .nan, -1, a control character, 10,000 characters, a list,
  a mapping, null), a random key added, a section deleted;
- **alias structures**: anchors reused inside anchors at random depth and fan-out,
  alone or grafted into a valid config, up to a billion laughs;
- **any YAML**: documents of random structure (nested mappings and lists of random
  scalars, with tags YAML knows) and plain random text.

The example count is ``ZHIZAO_FUZZ_EXAMPLES`` (default 40); docs/robustness.md records
a longer run.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import EdgeConfig, load_config
from zhizao.errors import ConfigError

from .test_config_limits import WITH_OPCUA

EXAMPLES = int(os.environ.get("ZHIZAO_FUZZ_EXAMPLES", "40"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE: dict[str, Any] = yaml.safe_load(WITH_OPCUA)

EXTREMES: list[object] = [
    10**30, -(10**30), 2**63, 2**64, -1, 0, 1e400, float("-inf"), float("nan"), 1e-300,
    "", " ", "\x00", "a\x1bb", "x" * 10_000, "ns=70000;i=1", "nsu=u;i=99999999999",
    "9" * 5000 + "d", "1e400", "-5s", "100000d", "1 GiB", True, None, [], {}, [1, [2, [3]]],
    {"type": "opcua"}, "{device}", "#", "$SYS/x", "..", "/etc/passwd",
]  # fmt: skip


def paths(document: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found: list[tuple[object, ...]] = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += paths(value, (*prefix, index))
    return found


PATHS = paths(BASE)


def replaced(document: dict[str, Any], path: tuple[object, ...], value: object) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


def check(tmp_path: Path, text: str) -> None:
    """The property: a config, or a ConfigError naming the file and a key or a line."""
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome: EdgeConfig | ConfigError
    try:
        outcome = load_config(path)
    except ConfigError as exc:
        outcome = exc
    if isinstance(outcome, EdgeConfig):
        return
    assert outcome.source.startswith(str(path))
    at_line = outcome.source[len(str(path)) :].startswith(":")
    assert outcome.key or at_line or outcome.problem.startswith(("expected a mapping", "is ")), (
        outcome
    )
    assert outcome.problem


def dump(document: object) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@fuzz
@given(
    path=st.sampled_from(PATHS),
    value=st.sampled_from(EXTREMES) | st.integers() | st.floats() | st.text(max_size=50),
)
def test_an_extreme_at_any_key_is_loaded_or_named(tmp_path: Path, path: tuple[object, ...],
                                                   value: object) -> None:  # fmt: skip
    check(tmp_path, dump(replaced(BASE, path, value)))


@fuzz
@given(
    path=st.sampled_from([p for p in PATHS if len(p) <= 3]),
    key=st.text(min_size=1, max_size=20),
    value=st.sampled_from(EXTREMES),
    delete=st.booleans(),
)
def test_added_and_deleted_keys_are_loaded_or_named(
    tmp_path: Path, path: tuple[object, ...], key: str, value: object, delete: bool
) -> None:
    document = copy.deepcopy(BASE)
    target: Any = document
    for part in path[:-1]:
        target = target[part]
    if delete and isinstance(target, dict | list):
        del target[path[-1]]  # type: ignore[arg-type]
    elif isinstance(target, dict):
        target[key] = value
    check(tmp_path, dump(document))


@st.composite
def alias_structures(draw: st.DrawFn) -> str:
    levels = draw(st.integers(min_value=1, max_value=12))
    fanout = draw(st.integers(min_value=1, max_value=12))
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"a{level}: &a{level} [{refs}]")
    bomb = "\n".join(lines) + "\n"
    where = draw(st.sampled_from(["alone", "extra key", "as nodes", "merge key"]))
    if where == "alone":
        return bomb
    if where == "extra key":
        return WITH_OPCUA + bomb
    last = f"*a{levels - 1}"
    if where == "merge key":
        return bomb + WITH_OPCUA.replace(
            "  edge_id: edge-01\n", f"  edge_id: edge-01\n  <<: {last}\n"
        )
    return bomb + WITH_OPCUA.replace("    nodes:\n", f"    nodes: {last}\n    old_nodes:\n")


@fuzz
@given(text=alias_structures())
@pytest.mark.timeout(120)  # a hang guard: a bomb must be refused while it is composed
def test_alias_structures_are_loaded_or_refused_quickly(tmp_path: Path, text: str) -> None:
    check(tmp_path, text)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(EXTREMES[:20]),
)
KEYS = st.sampled_from([*BASE, "type", "nodes", "name", "url"]) | st.text(max_size=8)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)
TAGS = ["", "!!str ", "!!int ", "!!float ", "!!binary ", "!!timestamp ", "!!set ", "!!omap "]


@fuzz
@given(document=documents, tag=st.sampled_from(TAGS), raw=st.text(max_size=200))
def test_any_yaml_document_or_text_is_loaded_or_named(
    tmp_path: Path, document: object, tag: str, raw: str
) -> None:
    check(tmp_path, dump(document))
    check(tmp_path, f"identity: {tag}{raw!r}\n" + WITH_OPCUA.split("\n", 3)[3])
    check(tmp_path, raw)
