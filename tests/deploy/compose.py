"""deploy/compose as Docker Compose reads it: the file, the .env, interpolation.

Interpolation follows the Compose Specification ("Interpolation"): ``$$`` is a literal
``$``; ``${VAR}`` and ``$VAR``; ``${VAR:-default}`` (unset or empty) and
``${VAR-default}`` (unset); ``${VAR:?message}`` (unset or empty) and ``${VAR?message}``
(unset) are errors naming the variable. Values are interpolated after YAML parsing, as
Compose does, so a ``$`` can never change the YAML structure.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

COMPOSE_DIR = Path(__file__).parents[2] / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset (or empty): Compose refuses to start."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"required variable {name} is missing a value: {message}")


def read_env(path: Path) -> dict[str, str]:
    """A .env file: KEY=VALUE lines, # comments, no quoting (the examples use none)."""
    pairs: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: {line!r} is not KEY=VALUE"
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate_text(text: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        value = env.get(name)
        op, arg = match["op"], match["arg"] or ""
        unset_or_empty = value is None or value == ""
        if op == ":-":
            return arg if unset_or_empty else str(value)
        if op == "-":
            return arg if value is None else value
        if op == ":?":
            if unset_or_empty:
                raise MissingVariable(name, arg)
            return str(value)
        if op == "?":
            if value is None:
                raise MissingVariable(name, arg)
            return value
        return value or ""

    return _VAR.sub(one, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def raw() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def variables(node: Any) -> set[str]:
    """Every variable the file refers to."""
    found: set[str] = set()
    if isinstance(node, str):
        for match in _VAR.finditer(node):
            if not match["escaped"]:
                found.add(match["braced"] or match["named"])
    elif isinstance(node, list):
        for item in node:
            found |= variables(item)
    elif isinstance(node, dict):
        for value in node.values():
            found |= variables(value)
    return found


def required(node: Any) -> set[str]:
    """The variables the file requires (``${VAR:?...}``)."""
    text = yaml.safe_dump(node)
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", text))


def chosen_env() -> dict[str, str]:
    """.env.example as an installation fills it in: every secret of its own."""
    env = read_env(ENV_EXAMPLE)
    for key, value in env.items():
        if value == "" or "change-me" in value:
            env[key] = f"chosen-{key.lower().replace('_', '-')}-0123456789abcdef0123456789"
    return env


def service_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(key): str(value) for key, value in environment.items()}
