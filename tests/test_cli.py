"""The ``zhizao`` command as a user runs it: upgrade, import, show, demo."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from zhizao.cli import app
from zhizao.cli.common import SCHEMA_EXIT
from zhizao.cli.demo import sample_ledger_path
from zhizao.settings import DatabaseSettings
from zhizao.storage.migrate import required_version, upgrade

ROOT = Path(__file__).parents[1]
MIXED = ROOT / "tests" / "data" / "ledger_mixed.csv"
runner = CliRunner()


def _zhizao(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--log-json", *args])
    return result.exit_code, result.output


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


def test_db_upgrade_then_no_op(empty_db_url: str) -> None:
    code, out = _zhizao("db", "upgrade", "--db-url", empty_db_url)
    assert code == 0, out
    assert "applied 0001 registry" in out
    code, out = _zhizao("db", "upgrade", "--db-url", empty_db_url)
    assert code == 0
    assert "nothing to apply" in out
    code, out = _zhizao("db", "status", "--db-url", empty_db_url)
    assert "current" in out
    # The reference regions are loaded: Zhejiang, its 11 cities and 90 counties.
    assert _scalar(empty_db_url, "SELECT count(*) FROM region") == 102


def test_unreachable_database_is_a_clear_error() -> None:
    code, out = _zhizao("db", "status", "--db-url", "postgresql://postgres@127.0.0.1:1/x")
    assert code == 2
    assert "cannot connect" in out


#: Every command that reads or writes the schema, as a user would type it.
SCHEMA_COMMANDS = [
    ("kpi", "oee", "line", "L1", "--enterprise", "91330206MA2GR7K17L", "--date", "2026-03-02"),
    ("kpi", "shifts", "enterprise", "91330206MA2GR7K17L", "--date", "2026-03-02"),
    ("kpi", "networking", "--date", "2026-03-02"),
    ("kpi", "nc", "--date", "2026-03-02"),
    ("kpi", "calendar", str(ROOT / "zhizao" / "data" / "demo_calendar.yaml")),
    ("rollup", "run"),
    ("registry", "show"),
    ("registry", "import", str(ROOT / "zhizao" / "data" / "sample_ledger.xlsx")),
    ("ingest", "dead-letters", "list"),
    ("ingest", "dead-letters", "replay"),
    ("ingest", "run", "--mqtt-url", "mqtt://127.0.0.1:1", "--health-port", "0"),
]


@pytest.mark.parametrize("command", SCHEMA_COMMANDS, ids=lambda c: " ".join(c[:3]).split("/")[0])
def test_an_unmigrated_database_is_refused_naming_the_versions(
    empty_db_url: str, command: tuple[str, ...]
) -> None:
    code, out = _zhizao(*command, "--db-url", empty_db_url)
    assert code == SCHEMA_EXIT, out
    assert "Traceback" not in out
    assert "no zhizao schema (version 0" in out
    assert f"needs version {required_version()}: run `zhizao db upgrade`" in out
    assert out.startswith("error:"), out
    assert len(out.strip().splitlines()) == 1, out


def test_the_database_of_the_environment_is_checked_too(empty_db_url: str) -> None:
    for command in (("ingest", "run", "--mqtt-url", "mqtt://127.0.0.1:1"), ("kpi", "nc")):
        result = runner.invoke(app, ["--log-json", *command], env={"ZHIZAO_DB_URL": empty_db_url})
        assert result.exit_code == SCHEMA_EXIT, result.output
        assert "run `zhizao db upgrade`" in result.output


def test_an_older_or_newer_schema_is_refused_naming_the_versions(empty_db_url: str) -> None:
    asyncio.run(upgrade(DatabaseSettings(url=empty_db_url), target=3))
    code, out = _zhizao("kpi", "nc", "--db-url", empty_db_url)
    assert code == SCHEMA_EXIT, out
    assert f"is at schema version 3; this zhizao needs version {required_version()}" in out
    assert "zhizao db upgrade" in out
    # `db status` and `db upgrade` are how such a database is brought forward.
    code, out = _zhizao("db", "status", "--db-url", empty_db_url)
    assert code == 0, out
    assert "schema version 3, behind" in out
    code, out = _zhizao("db", "upgrade", "--db-url", empty_db_url)
    assert code == 0, out
    assert _zhizao("kpi", "nc", "--db-url", empty_db_url)[0] == 0
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            "INSERT INTO schema_migration (version, name, checksum) VALUES (99, 'later', 'x')"
        )
    code, out = _zhizao("registry", "show", "--db-url", empty_db_url)
    assert code == SCHEMA_EXIT, out
    assert "is at schema version 99" in out
    assert "newer than this zhizao" in out


def test_import_of_a_mixed_file_stores_good_rows_and_lists_bad_ones(db_url: str) -> None:
    code, out = _zhizao("registry", "import", str(sample_ledger_path()), "--db-url", db_url)
    assert code == 0, out
    devices_before = _scalar(db_url, "SELECT count(*) FROM device")

    code, out = _zhizao("registry", "import", str(MIXED), "--db-url", db_url)

    assert code == 1  # some rows were rejected
    assert "rows rejected (others were stored)" in out
    assert "check character" in out  # the bad credit code row
    assert "duplicate" in out
    good = _scalar(db_url, "SELECT count(*) FROM device") - devices_before  # type: ignore[operator]
    assert good > 0

    code, out = _zhizao("registry", "import", str(MIXED), "--db-url", db_url)
    assert code == 1
    assert _scalar(db_url, "SELECT count(*) FROM device") == devices_before + good  # type: ignore[operator]
    assert _scalar(db_url, "SELECT max(updated_at) < now() - interval '0 s' FROM device")


def test_reimport_changes_nothing_and_a_second_file_decommissions(
    db_url: str, tmp_path: Path
) -> None:
    assert _zhizao("registry", "import", str(sample_ledger_path()), "--db-url", db_url)[0] == 0
    stamp = _scalar(db_url, "SELECT max(updated_at) FROM device")
    code, out = _zhizao("registry", "import", str(sample_ledger_path()), "--db-url", db_url)
    assert code == 0
    assert _scalar(db_url, "SELECT max(updated_at) FROM device") == stamp
    assert _scalar(db_url, "SELECT count(*) FROM device") == 63

    row = _scalar(
        db_url,
        "SELECT concat_ws(',', e.credit_code, d.code, d.name, d.device_type, d.is_nc,"
        " d.ideal_cycle_time_s, d.line_id) FROM device d"
        " JOIN enterprise e ON e.id = d.enterprise_id"
        " WHERE d.decommissioned_on IS NULL AND d.ideal_cycle_time_s IS NOT NULL"
        " ORDER BY d.id LIMIT 1",
    )
    enterprise, device, name, kind, *kept = str(row).split(",")
    # A later file with only some columns: the ones it leaves out stay as they were.
    later = tmp_path / "decommission.csv"
    later.write_text(
        f"统一社会信用代码,设备编号,设备名称,设备类型,停用日期\n"
        f"{enterprise},{device},{name},{kind},2026年6月30日\n",
        encoding="utf-8",
    )
    code, out = _zhizao("registry", "import", str(later), "--db-url", db_url)
    assert code == 0, out
    after = _scalar(
        db_url,
        "SELECT concat_ws(',', decommissioned_on, is_nc, ideal_cycle_time_s, line_id)"
        f" FROM device WHERE code = '{device}'",
    )
    assert after == ",".join(["2026-06-30", *kept])


def test_registry_show_lists_enterprises(db_url: str) -> None:
    _zhizao("registry", "import", str(sample_ledger_path()), "--db-url", db_url)
    code, out = _zhizao("registry", "show", "--db-url", db_url)
    assert code == 0
    assert "北仑区" in out


def test_demo_runs_the_whole_platform_on_embedded_defaults(tmp_path: Path) -> None:
    """The README's first command, minus the install: embedded PostgreSQL and broker,
    the sample ledger, a simulated factory through edge and ingest, KPIs at the end."""
    env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_DB_URL"}
    env["ZHIZAO_DEMO_HOME"] = str(tmp_path / "demo")
    env["COLUMNS"] = "200"
    result = subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "--log-level", "WARNING", "demo",
         "--scenario", "smoke", "--speed", "600", "--duration", "240", "--exit"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "embedded PostgreSQL running" in out
    assert "embedded MQTT broker" in out
    assert "宁波瑞驰" in out  # the sample ledger was imported
    stored = re.search(r"([\d,]+) facts of the simulated day stored", out)
    assert stored is not None, out
    assert int(stored[1].replace(",", "")) > 100
    assert "OEE 按产线 by line" in out
    line = re.search(r"│ L1 +│ ([\d.]+)% +│ ([\d.]+)%", out)
    assert line is not None, out  # availability and performance of line L1 were computed
    assert "设备联网率" in out
    assert (tmp_path / "demo" / "ground-truth-smoke-2026-03-02.jsonl").stat().st_size > 0
