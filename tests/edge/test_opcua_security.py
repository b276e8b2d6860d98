"""SignAndEncrypt with Basic256Sha256, and a server certificate checked against the trust list."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua.ua.uaerrors import UaError

from edge.opcua.check import check_source
from tests.fix_opcua import MakeSimulator, Pki, scenario, source_config
from zhizao.errors import ConfigError
from zhizao.wire import Quality

NODES = [
    {"preset": "machinery", "device": "CNC-101", "root": "Machines/CNC-101"},
    {
        "device": "CNC-101",
        "kind": "metric",
        "name": "spindle_speed",
        "browse_path": "Machines/CNC-101/SpindleSpeed",
    },
]


def secure(pki: Pki, trust_list: object) -> dict[str, object]:
    return {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(pki.client_certificate),
        "private_key": str(pki.client_key),
        "trust_list": str(trust_list),
    }


async def test_sign_and_encrypt_with_a_trusted_server(simulator: MakeSimulator, pki: Pki) -> None:
    sim = await simulator(scenario([{"code": "CNC-101", "type": "cnc"}]), security=pki.server)
    config = source_config(sim.server.endpoint, NODES, security=secure(pki, pki.client_trusts))
    checks = await check_source(config)
    assert [c.error for c in checks] == [None, None, None]
    assert {c.label: c.value for c in checks}["nodes.0.item_state"] == "Executing"
    assert all(c.quality is Quality.GOOD for c in checks)


async def test_a_server_outside_the_trust_list_is_refused(
    simulator: MakeSimulator, pki: Pki
) -> None:
    sim = await simulator(scenario([{"code": "CNC-101", "type": "cnc"}]), security=pki.server)
    config = source_config(sim.server.endpoint, NODES, security=secure(pki, pki.other_trust))
    with pytest.raises(UaError, match="Untrusted"):
        await check_source(config)


async def test_an_empty_trust_list_is_a_config_error(
    simulator: MakeSimulator, pki: Pki, tmp_path: Path
) -> None:
    sim = await simulator(scenario([{"code": "CNC-101", "type": "cnc"}]), security=pki.server)
    empty = tmp_path / "empty"
    empty.mkdir()
    config = source_config(sim.server.endpoint, NODES, security=secure(pki, empty))
    with pytest.raises(ConfigError, match=r"security\.trust_list"):
        await check_source(config)
