"""What deploy/ ships is valid: systemd units, env examples that the settings read."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.settings import EdgeSettings
from ingest import ingest_settings

DEPLOY = Path(__file__).parents[1] / "deploy"
ZHIZAO = Path(sys.executable).parent / "zhizao"


def _env_file(name: str) -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / "env" / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.mark.parametrize("unit", ["zhizao-edge.service", "zhizao-ingest@.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    # The unit as installed, but running this checkout's zhizao and as the current user
    # (verify checks that the binary exists and the user resolves).
    text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
    text = text.replace("/opt/zhizao/bin/zhizao", str(ZHIZAO))
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("User=", "Group=")))
    target = tmp_path / unit.replace("@", "@1") if "@" in unit else tmp_path / unit
    target.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, check=False
    )
    # verify exits 0 even for lines it ignores; what it says is the verdict.
    problems = [
        line for line in (result.stdout + result.stderr).splitlines()
        if "Failed to" in line or "Unknown" in line or "ignoring" in line
    ]  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert problems == []


def test_edge_env_example_is_read_by_the_edge_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_file("edge.env.example")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = EdgeSettings()
    assert settings.uplink_username == env["ZHIZAO_EDGE_UPLINK_USERNAME"]
    assert settings.uplink_password is not None
    assert settings.http_port == 9108


def test_ingest_env_example_is_read_by_the_ingest_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_file("ingest.env.example")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ingest_settings()
    assert settings.database.url == env["ZHIZAO_DB_URL"]
    assert settings.database.metric_retention_days == 400
    assert settings.mqtt_url == env["ZHIZAO_INGEST_MQTT_URL"]
    assert settings.shared_group == "ingest"
    assert settings.health_port == 9109
    assert settings.rollups is True
    assert settings.rollup.interval_s == 60
