"""OPC UA source config: the sample validates; errors name the file, the key and the problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.opcua.config import (
    NodeMapping,
    OpcUaSourceConfig,
    PresetMapping,
    load_source_file,
    parse_browse_path,
    parse_node_id,
)
from edge.opcua.presets import machinery_state, robotics_state
from zhizao.errors import ConfigError
from zhizao.wire import StateClass

SAMPLE = Path(__file__).parents[2] / "edge" / "samples" / "opcua.yaml"

Change = Callable[[dict[str, Any]], object]


def test_the_sample_config_validates() -> None:
    config = load_source_file(SAMPLE)
    assert config.devices == ["CNC-101", "RB-101", "CNC-102"]
    assert config.security.mode.value == "SignAndEncrypt"
    # Relative paths are relative to the file, not to where the edge was started.
    assert config.security.certificate == SAMPLE.parent / "pki" / "edge-cert.der"
    kinds = [type(node) for node in config.nodes]
    assert kinds[:2] == [PresetMapping, PresetMapping]
    assert NodeMapping in kinds


def base() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return document


CASES: list[tuple[Change, str, str]] = [
    (lambda d: d["nodes"][2].update(node="ns=2;s=X"), "nodes.2.node", "namespace index"),
    (lambda d: d.update(security={"mode": "None", "policy": "None"}), "security", "allow_insecure"),
    (lambda d: d["security"].pop("trust_list"), "security", "trust_list"),
    (lambda d: d["nodes"][6].pop("state_map"), "nodes.6", "state_map"),
    (lambda d: d["nodes"][4].update(name="parts"), "nodes.4", "'good' or 'reject'"),
    (lambda d: d["nodes"][0].update(preset="euromap77"), "nodes.0.preset", "'machinery'"),
    (
        lambda d: d["nodes"][3].update(deadband={"type": "percent", "value": 150}),
        "nodes.3.deadband",
        "between 0 and 100",
    ),
    (lambda d: d["nodes"][6]["state_map"].update({9: "BROKEN"}), "nodes.6.state_map.9", "RUNNING"),
    (lambda d: d.update(endpoint="http://10.0.0.5"), "endpoint", "opc"),
    (lambda d: d["nodes"][3].update(node="nsu=x;s=y"), "nodes.3", "exactly one of node"),
    (lambda d: d.pop("namespace"), "nodes.0", "no namespace"),
    (lambda d: d["nodes"][3].update(sampling_rate=5), "nodes.3.sampling_rate", "Extra inputs"),
    (lambda d: d["nodes"][4].update(rollover=1), "nodes.4.rollover", "greater than or equal to 2"),
    (
        lambda d: d["nodes"][4].update(counter_bits=16, rollover=100_000),
        "nodes.4",
        "rollover 100000 does not fit a 16-bit counter",
    ),
    (lambda d: d["nodes"][3].update(rollover=1000), "nodes.3", "only make sense for kind: count"),
    (lambda d: d["nodes"][4].update(ideal_cycle_s=0), "nodes.4.ideal_cycle_s", "greater than 0"),
    (lambda d: d.update(plausibility_factor=0), "plausibility_factor", "greater than 0"),
]


@pytest.mark.parametrize(("change", "key", "problem"), CASES)
def test_errors_name_file_key_and_problem(
    tmp_path: Path, change: Change, key: str, problem: str
) -> None:
    document = base()
    change(document)
    path = tmp_path / "edge-opcua.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    with pytest.raises(ConfigError) as caught:
        load_source_file(path)
    error = caught.value
    assert error.source == str(path)
    assert error.key.startswith(key), error
    assert problem in error.problem, error
    assert str(path) in str(error)


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("type: opcua\nnodes:\n  - {device: CNC-101\n")
    with pytest.raises(ConfigError, match="line"):
        load_source_file(path)


def test_insecure_mode_is_accepted_only_explicitly() -> None:
    document = base() | {"security": {"mode": "None", "policy": "None", "allow_insecure": True}}
    assert OpcUaSourceConfig.model_validate(document).security.insecure


def test_addresses_name_namespaces_by_uri() -> None:
    assert parse_node_id("nsu=urn:a:b;s=CNC.Speed") == ("urn:a:b", "s", "CNC.Speed")
    assert parse_node_id("i=2258") == ("http://opcfoundation.org/UA/", "i", "2258")
    assert parse_browse_path("Machines/{urn:x}CNC-101/Speed", "urn:d") == [
        ("urn:d", "Machines"),
        ("urn:x", "CNC-101"),
        ("urn:d", "Speed"),
    ]
    with pytest.raises(ValueError, match="namespace index"):
        parse_node_id("ns=3;i=5")


def test_state_map_keys_from_yaml_numbers_and_booleans() -> None:
    mapping = NodeMapping.model_validate(
        {
            "device": "P-1",
            "kind": "state",
            "name": "state",
            "node": "nsu=u;s=x",
            "state_map": {1: "RUNNING", 2: "IDLE"},
        }
    )
    assert mapping.state_for(1) is StateClass.RUNNING
    assert mapping.state_for(1.0) is StateClass.RUNNING
    assert mapping.state_for(7) is None
    flag = mapping.model_copy(update={"state_map": {"true": StateClass.UNPLANNED_STOP}})
    assert flag.state_for(True) is StateClass.UNPLANNED_STOP


@pytest.mark.parametrize(
    ("item", "mode", "state"),
    [
        ("Executing", "Processing", StateClass.RUNNING),
        ("Executing", None, StateClass.RUNNING),
        ("NotExecuting", "Processing", StateClass.IDLE),
        ("NotExecuting", "Setup", StateClass.SETUP),
        ("Executing", "Maintenance", StateClass.PLANNED_STOP),
        ("OutOfService", "Processing", StateClass.UNPLANNED_STOP),
        ("OutOfService", "Maintenance", StateClass.PLANNED_STOP),
        ("NotAvailable", "None", StateClass.PLANNED_STOP),
    ],
)
def test_machinery_preset(item: str, mode: str | None, state: StateClass) -> None:
    values = {"item_state": item} | ({"operation_mode": mode} if mode else {})
    assert machinery_state(values)[0] is state


@pytest.mark.parametrize(
    ("mode", "emergency", "protective", "state"),
    [
        (3, False, False, StateClass.RUNNING),
        (4, False, False, StateClass.RUNNING),
        (1, False, False, StateClass.SETUP),
        (2, False, False, StateClass.SETUP),
        (0, False, False, StateClass.IDLE),
        (3, True, False, StateClass.UNPLANNED_STOP),
        (3, False, True, StateClass.UNPLANNED_STOP),
    ],
)
def test_robotics_preset(mode: int, emergency: bool, protective: bool, state: StateClass) -> None:
    values = {"operational_mode": mode, "emergency_stop": emergency, "protective_stop": protective}
    assert robotics_state(values)[0] is state
