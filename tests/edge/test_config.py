"""Edge config: samples load, and every error names the file, line, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.config import load_config
from edge.mqtt.config import MqttSourceConfig, TopicTemplate
from zhizao.errors import ConfigError

SAMPLES = Path(__file__).resolve().parents[2] / "edge" / "samples"

GOOD = """\
identity:
  enterprise: 91330106MA2XXXXX0Y
  edge_id: edge-01
uplink:
  url: mqtt://127.0.0.1:1883
  batch_max_wait_s: 250ms
spool:
  path: spool.db
  max_bytes: 64MiB
  max_age: 2d
sources:
  - type: mqtt
    name: press
    broker: {url: "mqtt://127.0.0.1:1883"}
    topics:
      - topic: plant/{line}/{device}/telemetry
        fields:
          - {path: temperature, name: temperature}
          - {path: status, name: state, kind: state, state_map: {1: RUNNING}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_sample_edge_config_is_valid() -> None:
    config = load_config(SAMPLES / "edge.yaml")
    assert {s.type for s in config.sources} == {"mqtt", "opcua"}
    assert config.spool.path == SAMPLES / "spool" / "edge-01.db"


def test_sample_mqtt_source_is_valid() -> None:
    document = yaml.safe_load((SAMPLES / "mqtt.yaml").read_text(encoding="utf-8"))
    source = MqttSourceConfig.model_validate(document)
    assert source.topics[0].fields[0].state_map == {
        "0": "PLANNED_STOP",
        "1": "RUNNING",
        "2": "IDLE",
        "3": "SETUP",
        "4": "UNPLANNED_STOP",
    }


def test_units_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.uplink.batch_max_wait_s == pytest.approx(0.25)
    assert config.spool.max_bytes == 64 * 1024 * 1024
    assert config.spool.max_age == 2 * 86400
    assert config.spool.path == tmp_path / "spool.db"


@pytest.mark.parametrize(
    "case",
    [
        (
            "{path: status, name: state, kind: state,",
            "{path: status, name: state, kind: stat,",
            19,
            "sources[0].topics[0].fields[1].kind",
            "'metric', 'state', 'count' or 'event'",
        ),
        ("  edge_id: edge-01\n", "", 1, "identity.edge_id", "required key is missing"),
        ("  max_age: 2d", "  max_age: two days", 10, "spool.max_age", "expected a duration"),
        ("  - type: mqtt", "  - type: modbus", 12, "sources[0]", "unknown source type"),
        ("91330106MA2XXXXX0Y", "91330106MA2XXXXX0X", 2, "identity.enterprise", "check"),
        (
            "    name: press\n",
            "    name: press\n    colour: red\n",
            14,
            "sources[0].colour",
            "unknown key",
        ),
        (
            "      - topic: plant/{line}/{device}/telemetry",
            "      - topic: plant/{line}/{machine}/telemetry",
            16,
            "sources[0].topics[0]",
            "{device}",
        ),
    ],
)
def test_errors_name_file_line_key_and_problem(
    tmp_path: Path, case: tuple[str, str, int, str, str]
) -> None:
    old, new, line, key, problem = case
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.source == f"{path}:{line}"
    assert error.key == key
    assert problem in error.problem
    assert str(path) in str(error)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  max_bytes: 64MiB", "  max_bytes: [64MiB"))
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_config(path)
    assert caught.value.source.startswith(f"{path}:")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_source_names_must_be_unique(tmp_path: Path) -> None:
    text = GOOD + GOOD[GOOD.index("  - type: mqtt") :]
    with pytest.raises(ConfigError, match="already used"):
        load_config(write(tmp_path, text))


def test_topic_templates_capture_placeholders() -> None:
    template = TopicTemplate.compile("plant/{line}/dev-{device}/+/#")
    assert template.filter == "plant/+/+/+/#"
    assert template.match("plant/L1/dev-CNC-1/x/telemetry/a") == {"line": "L1", "device": "CNC-1"}
    assert template.match("plant/L1/CNC-1/x/telemetry") is None
    with pytest.raises(ValueError, match="last level"):
        TopicTemplate.compile("plant/#/x")
