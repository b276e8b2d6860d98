"""Edge configs that could hang or break the edge are refused, each naming file, line and key.

A billion-laughs file, a structure that contains itself, nesting thousands deep, numbers
beyond what their key can hold (a port of 10**30, an interval of 1.0e+400 = inf, a NodeId
integer beyond uint32), NaN durations, names with control characters: each is a
ConfigError that says where and what was expected, quickly, never another exception.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.config import load_config
from edge.config_yaml import MAX_NODES
from edge.opcua.config import load_source_file
from edge.settings import apply_settings, edge_settings
from zhizao.errors import ConfigError

from .test_config import GOOD, write

OPCUA_SOURCE = """\
  - type: opcua
    name: line1-opcua
    endpoint: opc.tcp://127.0.0.1:4840/
    namespace: urn:zhizao:simulator
    security: {policy: None, mode: None, allow_insecure: true}
    nodes:
      - {device: CNC-101, kind: metric, name: spindle_speed,
         node: "nsu=urn:zhizao:simulator;s=CNC-101.SpindleSpeed"}
      - {device: CNC-101, kind: metric, name: feed,
         node: "nsu=urn:zhizao:simulator;s=CNC-101.Feed", sampling_interval_ms: 100}
"""
WITH_OPCUA = GOOD + OPCUA_SOURCE


# YAML 1.1 (PyYAML) reads 1e400 as text and 1.0e+400 as the float inf: both are refused.


def refused(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert str(path) in str(error)
    return error


def test_the_base_configs_load(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, WITH_OPCUA))
    assert [s.type for s in config.sources] == ["mqtt", "opcua"]


def billion_laughs() -> str:
    lines = ['a: ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines[0] = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_file_is_refused_at_the_key_that_explodes(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text.encode()) < 1024  # 9**9 values in under a kilobyte
    error = refused(tmp_path, text)
    assert "aliases" in error.problem
    assert f"{MAX_NODES:,}" in error.problem
    assert error.key == "f"  # 9**6 = 531,441 values: the first level beyond the bound
    assert error.source.endswith(":6")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("  max_age: 2d\n", "  max_age: 2d\n  loop: &me [1, *me]\n")
    error = refused(tmp_path, text)
    assert error.key == "spool.loop[1]"
    assert "contains itself" in error.problem


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    text = WITH_OPCUA.replace(
        "    security: {policy: None, mode: None, allow_insecure: true}\n",
        "    security: &insecure {policy: None, mode: None, allow_insecure: true}\n",
    ) + OPCUA_SOURCE.replace("line1-opcua", "line2-opcua").replace(
        "    security: {policy: None, mode: None, allow_insecure: true}\n",
        "    security: *insecure\n",
    )
    config = load_config(write(tmp_path, text))
    assert [s.name for s in config.sources] == ["press", "line1-opcua", "line2-opcua"]


def test_deep_nesting_is_refused_before_the_parser_recurses(tmp_path: Path) -> None:
    depth = 100_000  # far beyond Python's recursion limit
    error = refused(tmp_path, GOOD + "extra: " + "[" * depth + "]" * depth + "\n")
    assert "nested more than 32 levels" in error.problem
    assert error.key.startswith("extra[0][0]")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ZHIZAO_EDGE_UPLINK_TLS_CA_FILE", "/nonexistent/ca.crt", "no such file"),
        ("ZHIZAO_EDGE_UPLINK_TLS_KEY_FILE", "/etc/hostname", "without cert_file"),
        ("ZHIZAO_EDGE_UPLINK_URL", "http://broker:8883", "expected a broker URL"),
    ],
)
def test_uplink_overrides_from_the_environment_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    config = load_config(write(tmp_path, GOOD))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        apply_settings(config, edge_settings())
    assert caught.value.key == variable
    assert expected in caught.value.problem


def test_uplink_url_credentials_and_tls_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.fix_mqtt import make_pki

    ca = make_pki(tmp_path / "pki").ca
    monkeypatch.setenv("ZHIZAO_EDGE_UPLINK_URL", "mqtts://broker.internal:8883")
    monkeypatch.setenv("ZHIZAO_EDGE_UPLINK_TLS_CA_FILE", str(ca))
    monkeypatch.setenv("ZHIZAO_EDGE_UPLINK_USERNAME", "91330106MA2XXXXX0Y/edge/edge-01")
    monkeypatch.setenv("ZHIZAO_EDGE_UPLINK_PASSWORD", "p@ss")
    config = apply_settings(load_config(write(tmp_path, GOOD)), edge_settings())
    uplink = config.uplink
    assert (uplink.host, uplink.port, uplink.use_tls) == ("broker.internal", 8883, True)
    assert uplink.tls is not None
    assert uplink.tls.ca_file == ca
    assert uplink.username == "91330106MA2XXXXX0Y/edge/edge-01"
    assert uplink.password is not None
    assert uplink.password.get_secret_value() == "p@ss"


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("  batch_max_wait_s", "  keepalive_s: 1.0e+400\n  batch_max_wait_s",
         "uplink.keepalive_s", "finite"),
        ("batch_max_wait_s: 250ms", "batch_max_wait_s: 1.0e+400", "uplink.batch_max_wait_s",
         "finite"),
        ("batch_max_wait_s: 250ms", "batch_max_wait_s: .nan", "uplink.batch_max_wait_s",
         "finite"),
        ("batch_max_wait_s: 250ms", "batch_max_wait_s: -.inf", "uplink.batch_max_wait_s",
         "finite"),
        ("max_age: 2d", "max_age: " + "9" * 400 + "d", "spool.max_age", "finite"),
        ("max_age: 2d", "max_age: 100000d", "spool.max_age", "at most 366 days"),
        ("max_age: 2d", "max_age: 0", "spool.max_age", "greater than 0"),
        ("max_bytes: 64MiB", "max_bytes: " + str(10**30), "spool.max_bytes", "at most 1 PiB"),
        ("max_bytes: 64MiB", "max_bytes: 1.0e+400", "spool.max_bytes", "expected a size"),
        ("edge_id: edge-01\n", "edge_id: edge-01\nhttp: {port: " + str(10**30) + "}\n",
         "http.port", "less than or equal to 65535"),
        ("  max_age: 2d", "  max_age: 2d\n  durability: " + "9" * 5000, "spool.durability",
         "cannot read the value"),
        ("{path: temperature, name: temperature}", "{path: temperature, name: \"temp\\0\"}",
         "sources[0].topics[0].fields[0].name", "U+0000"),
        ("{path: temperature, name: temperature}", "{path: temperature, name: \"a\\tb\"}",
         "sources[0].topics[0].fields[0].name", "U+0009"),
        ("{path: temperature, name: temperature}", "{path: temperature, name: \"" + "x" * 129
         + "\"}", "sources[0].topics[0].fields[0].name", "at most 128"),
        ("{path: temperature, name: temperature}",
         "{path: temperature, name: temperature, ideal_cycle_s: .inf}",
         "sources[0].topics[0].fields[0].ideal_cycle_s", "finite"),
        ("broker: {url: \"mqtt://127.0.0.1:1883\"}",
         "broker: {url: \"mqtt://127.0.0.1:1883\", session_expiry_s: " + str(2**32) + "}",
         "sources[0].broker.session_expiry_s", "4294967295"),
        ("    name: press\n", "    name: press\n    offline_after: .nan\n",
         "sources[0].offline_after", "finite"),
        ("    name: press\n", "    name: press\n    plausibility_factor: .inf\n",
         "sources[0].plausibility_factor", "finite"),
    ],
)  # fmt: skip
def test_numbers_beyond_their_key_and_bad_names_are_refused(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    assert old in GOOD
    error = refused(tmp_path, GOOD.replace(old, new))
    assert error.key == key, error
    assert expected in error.problem, error
    assert ":" in error.source.removeprefix(str(tmp_path))  # file:line


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("s=CNC-101.SpindleSpeed", "i=4294967296", "sources[1].nodes[0].node",
         "at most 4294967295"),
        ("s=CNC-101.SpindleSpeed", "i=12abc", "sources[1].nodes[0].node", "digits"),
        ("s=CNC-101.SpindleSpeed", "g=not-a-guid", "sources[1].nodes[0].node", "GUID"),
        ("s=CNC-101.SpindleSpeed", "b=***", "sources[1].nodes[0].node", "base64"),
        ("nsu=urn:zhizao:simulator;s=CNC-101.SpindleSpeed", "ns=70000;i=1",
         "sources[1].nodes[0].node", "namespace index"),
        ("s=CNC-101.SpindleSpeed", "s=CNC\\u0000101", "sources[1].nodes[0].node", "U+0000"),
        ("sampling_interval_ms: 100", "sampling_interval_ms: 1.0e+400",
         "sources[1].nodes[1].sampling_interval_ms", "finite"),
        ("sampling_interval_ms: 100", "sampling_interval_ms: 1.0e+30",
         "sources[1].nodes[1].sampling_interval_ms", "less than or equal to 86400000"),
        ("sampling_interval_ms: 100", "queue_size: " + str(10**30),
         "sources[1].nodes[1].queue_size", "less than or equal to 10000"),
        ("sampling_interval_ms: 100", "kind: count, max_increment: " + str(10**30),
         "sources[1].nodes[1].max_increment", "less than or equal to 9223372036854775807"),
        ("name: feed", "name: \"feed\\x1b[31m\"", "sources[1].nodes[1].name", "U+001B"),
        ("    namespace: urn:zhizao:simulator\n",
         "    namespace: urn:zhizao:simulator\n    buffer_size: " + str(10**30) + "\n",
         "sources[1].buffer_size", "less than or equal to 10000000"),
        ("    namespace: urn:zhizao:simulator\n",
         "    namespace: urn:zhizao:simulator\n    reconnect: {initial_s: .nan}\n",
         "sources[1].reconnect.initial_s", "finite"),
    ],
)  # fmt: skip
def test_opcua_numbers_and_addresses_beyond_their_type_are_refused(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    assert old in OPCUA_SOURCE
    error = refused(tmp_path, GOOD + OPCUA_SOURCE.replace(old, new, 1))
    assert error.key == key, error
    assert expected in error.problem, error


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    with path.open("wb") as handle:
        handle.write(GOOD.encode())
        handle.write(b"# padding\n" * (1024 * 1024))
    with pytest.raises(ConfigError, match="larger than 8 MiB"):
        load_config(path)


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_bytes(GOOD.replace("edge-01", "边缘-01").encode("gb18030"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_an_impossible_date_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    error = refused(tmp_path, GOOD.replace("  max_age: 2d", "  max_age: 2026-13-45"))
    assert error.source.endswith(":10")
    assert "cannot read the value" in error.problem


def test_the_opcua_source_file_loader_has_the_same_bounds(tmp_path: Path) -> None:
    path = tmp_path / "opcua.yaml"
    path.write_text(billion_laughs(), encoding="utf-8")
    with pytest.raises(ConfigError, match="aliases"):
        load_source_file(path)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ZHIZAO_EDGE_HTTP_PORT", str(10**30), "less than or equal to 65535"),
        ("ZHIZAO_EDGE_HTTP_PORT", "nine", "valid integer"),
        ("ZHIZAO_EDGE_UPLINK_USERNAME", "edge\x0001", "U+0000"),
    ],
)
def test_environment_overrides_beyond_their_type_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    if "\x00" in value:
        # An environment cannot hold NUL; the settings factory takes the same value
        # as an explicit override (a systemd credential read into the process).
        with pytest.raises(ConfigError) as caught:
            edge_settings(uplink_username=value)
    else:
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError) as caught:
            edge_settings()
    assert caught.value.key == variable
    assert expected in caught.value.problem
    assert "environment" in caught.value.source


def test_an_environment_port_is_applied_within_its_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZHIZAO_EDGE_HTTP_PORT", "9200")
    config = apply_settings(load_config(write(tmp_path, GOOD)), edge_settings())
    assert config.http.port == 9200
    assert os.environ["ZHIZAO_EDGE_HTTP_PORT"] == "9200"


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("  max_age: 2d", "  max_age: !!timestamp ''", "spool.max_age", "cannot read the value"),
        ("  max_age: 2d", "  max_age: !!int ''", "spool.max_age", "cannot read the value"),
    ],
)
def test_explicit_tags_over_values_they_do_not_fit_name_the_key(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    """PyYAML itself fails with AttributeError or IndexError here (found by fuzzing)."""
    error = refused(tmp_path, GOOD.replace(old, new))
    assert error.key == key
    assert expected in error.problem
    assert error.source.endswith(":10")


def test_a_control_character_in_the_file_names_its_line(tmp_path: Path) -> None:
    error = refused(tmp_path, GOOD.replace("  max_age: 2d", "  max_age: 2d\x1f"))
    assert error.source.endswith(":10")
    assert "U+001F" in error.problem
