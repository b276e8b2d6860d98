"""The factory PC's files: the edge's systemd unit (hardening) and the journal's bounds.

``systemd-analyze verify`` of the units is tests/test_deploy.py's; here
``systemd-analyze security --offline`` rates the edge unit's sandbox (systemd ≥ 252)
and the journald drop-in is read as journald reads it (journald.conf(5)).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).parents[2] / "deploy" / "systemd"
EDGE_UNIT = SYSTEMD / "zhizao-edge.service"

#: The [Journal] keys of journald.conf(5), systemd 252.
JOURNAL_KEYS = {
    "Storage", "Compress", "Seal", "SplitMode", "SyncIntervalSec", "RateLimitIntervalSec",
    "RateLimitBurst", "SystemMaxUse", "SystemKeepFree", "SystemMaxFileSize", "SystemMaxFiles",
    "RuntimeMaxUse", "RuntimeKeepFree", "RuntimeMaxFileSize", "RuntimeMaxFiles", "MaxFileSec",
    "MaxRetentionSec", "ForwardToSyslog", "ForwardToKMsg", "ForwardToConsole", "ForwardToWall",
    "TTYPath", "MaxLevelStore", "MaxLevelSyslog", "MaxLevelKMsg", "MaxLevelConsole",
    "MaxLevelWall", "LineMax", "ReadKMsg", "Audit",
}  # fmt: skip


def _unit(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_edge_unit_runs_sandboxed_as_its_own_user() -> None:
    unit = _unit(EDGE_UNIT)
    expected = {
        "User": "zhizao", "NoNewPrivileges": "true", "ProtectSystem": "strict",
        "ProtectHome": "true", "PrivateTmp": "true", "PrivateDevices": "true",
        "ReadWritePaths": "/var/lib/zhizao-edge", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "UMask": "0077",
    }  # fmt: skip
    for key, value in expected.items():
        assert unit.get(key) == [value], f"{key}={unit.get(key)}"
    # The spool is the one writable place, and where the unit's state directory is.
    assert unit["StateDirectory"] == ["zhizao-edge"]
    assert unit["WorkingDirectory"] == ["/var/lib/zhizao-edge"]


def test_edge_unit_exposure_is_low_by_systemd_analyze_security(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True, check=True)
    if int(re.findall(r"systemd (\d+)", version.stdout)[0]) < 252:
        pytest.skip("systemd-analyze security --offline needs systemd 252")
    unit = tmp_path / "zhizao-edge.service"
    unit.write_text(EDGE_UNIT.read_text(encoding="utf-8"), encoding="utf-8")
    # --threshold is in tenths: fail above an exposure of 2.0 ("OK" is below 4).
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    exposure = float(re.findall(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)[0])
    assert exposure <= 2.0
    # The rating is not a formality: the unit without its sandbox is exposed.
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    result = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", str(bare)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode != 0


def test_journald_drop_in_bounds_the_logs() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / "journald-zhizao.conf", encoding="utf-8")
    assert parser.sections() == ["Journal"]
    journal = parser["Journal"]
    assert set(journal) <= JOURNAL_KEYS, set(journal) - JOURNAL_KEYS
    assert journal["Storage"] in ("persistent", "auto")
    for key in ("SystemMaxUse", "SystemKeepFree", "SystemMaxFileSize"):
        assert re.fullmatch(r"\d+[KMGT]?", journal[key]), key
    assert re.fullmatch(r"\d+(day|week|month|year|h|min|s)", journal["MaxRetentionSec"])
