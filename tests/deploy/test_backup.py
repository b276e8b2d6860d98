"""Backups as docs/operations.md tells an operator to make and restore them, for real.

On the local PostgreSQL 15 (the server CI runs): deploy/compose/db-init/010-zhizao.sh
makes the platform's role (not a superuser) and database, as the PostgreSQL image would
on its first start; ``zhizao db upgrade`` migrates it as that role; a day of facts is
stored and rolled up; ``pg_dump`` and ``pg_restore`` run with the documented options,
into a new database; the KPIs of the restored database equal the original's.
Skipped where pg_dump is not on PATH (it is part of PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.fix_db import SERVER_URL
from tests.kpi.seed import ENT, T0, at, seed
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import connect, with_database
from zhizao.storage.facts import COUNTER_CODES, CountRow, FactBatch, StateRow, write_facts
from zhizao.storage.kpi import Level, OeeScope, nc_parts, networking_parts, oee_for_interval
from zhizao.storage.migrate import upgrade
from zhizao.storage.rollups import run_rollups
from zhizao.wire import StateClass

INIT = Path(__file__).parents[2] / "deploy" / "compose" / "db-init" / "010-zhizao.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("pg_dump") is None or shutil.which("psql") is None,
    reason="pg_dump and psql are not on PATH (PostgreSQL client programs)",
)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(with_database(SERVER_URL, "postgres"), autocommit=True)


def _as(role: str, database: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(SERVER_URL)
    host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
    return f"postgresql://{role}@{host}:{port}/{database}"


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {"role": f"zhizao_bk_{suffix}", "db": f"zhizao_bk_{suffix}",
             "restored": f"zhizao_bk_{suffix}_restored"}  # fmt: skip
    info = psycopg.conninfo.conninfo_to_dict(SERVER_URL)
    env = {
        **os.environ, "ZHIZAO_DB_PASSWORD": "chosen-password", "ZHIZAO_DB_NAME": names["db"],
        "ZHIZAO_DB_USER": names["role"], "POSTGRES_USER": str(info.get("user", "postgres")),
        "PGHOST": str(info.get("host", "127.0.0.1")), "PGPORT": str(info.get("port", "5432")),
    }  # fmt: skip
    try:
        subprocess.run(["bash", str(INIT)], env=env, check=True, capture_output=True, text=True)
        yield names
    finally:
        with _admin() as admin:
            for db in (names["restored"], names["db"]):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(db)))  # fmt: skip
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(names["role"])))


async def _fill(url: str) -> None:
    conn = await connect(url)
    async with conn:
        ids = await seed(conn)
        batch = FactBatch()
        for device, offset in (("CNC-1", 0.0), ("CNC-2", 0.5), ("PRESS-1", 1.0)):
            batch.states += [
                StateRow(ids[device], at(offset), StateClass.RUNNING),
                StateRow(ids[device], at(offset + 2), StateClass.UNPLANNED_STOP, reason="alarm"),
                StateRow(ids[device], at(offset + 2.5), StateClass.RUNNING),
                StateRow(ids[device], at(offset + 6), StateClass.IDLE),
            ]
            batch.counts += [CountRow(ids[device], at(offset + h / 2), COUNTER_CODES["good"], 40)
                             for h in range(1, 12)]  # fmt: skip
            batch.counts.append(CountRow(ids[device], at(offset + 3), COUNTER_CODES["reject"], 5))
        await write_facts(conn, batch)
        await conn.commit()
        await run_rollups(conn, until=T0 + timedelta(days=1), history_days=1)
        await conn.commit()


async def _kpis(url: str) -> dict[str, Any]:
    conn = await connect(url)
    async with conn:
        day = T0.date()
        oee = await oee_for_interval(
            conn, OeeScope(Level.ENTERPRISE, ENT), T0, T0 + timedelta(days=1)
        )
        line = await oee_for_interval(
            conn, OeeScope(Level.LINE, "L1", ENT), T0, T0 + timedelta(hours=8)
        )
        networking = await networking_parts(conn, day, day)
        nc = await nc_parts(conn, day)
        cur = await conn.execute("SELECT max(version) FROM schema_migration")
        version = (await cur.fetchone() or [None])[0]
        return {"oee": oee.result, "line": line.result, "devices": oee.devices,
                "networking": networking, "nc": nc, "schema": version}  # fmt: skip


def test_init_script_makes_an_owner_that_is_no_superuser(world: dict[str, str]) -> None:
    with _admin() as admin:
        row = admin.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolpassword IS NOT NULL"
            " FROM pg_authid WHERE rolname = %s", (world["role"],),
        ).fetchone()  # fmt: skip
        owner = admin.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (world["db"],)
        ).fetchone()
    assert row == (False, True, False, True, True)  # a SCRAM verifier, not superuser
    assert owner == (world["role"],)


def test_dump_of_a_migrated_database_restores_with_equal_kpis(
    world: dict[str, str], tmp_path: Path
) -> None:
    source = _as(world["role"], world["db"])
    # Migrated by the platform's own role, as compose's migrate service does
    # (`zhizao db upgrade --no-create`; in process: the CLI's start costs seconds).
    asyncio.run(upgrade(DatabaseSettings(url=source)))
    asyncio.run(_fill(source))
    before = asyncio.run(_kpis(source))
    assert before["oee"].oee is not None
    assert before["oee"].oee > 0
    assert before["networking"][ENT].numerator > 0

    # docs/operations.md, "Backups": the commands as written there.
    dump = tmp_path / "zhizao.dump"
    subprocess.run(["pg_dump", "--format=custom", "--compress=6", f"--file={dump}",
                    f"--dbname={source}"], check=True, capture_output=True, text=True)  # fmt: skip
    listing = subprocess.run(["pg_restore", "--list", str(dump)], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    assert "TABLE DATA public metric_point" in listing
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(world["restored"]), sql.Identifier(world["role"])))  # fmt: skip
    target = _as(world["role"], world["restored"])
    restore = subprocess.run(
        ["pg_restore", "--exit-on-error", "--single-transaction", "--no-owner",
         f"--dbname={target}", str(dump)], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr

    after = asyncio.run(_kpis(target))
    assert after == before
    assert after["schema"] == before["schema"]  # `zhizao db status` is content


def test_a_restore_into_a_database_with_data_stops_at_the_first_error(
    world: dict[str, str], tmp_path: Path
) -> None:
    """--exit-on-error --single-transaction: a restore that fails leaves nothing half done."""
    source = _as(world["role"], world["db"])
    dump = tmp_path / "again.dump"
    subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", f"--dbname={source}"],
                   check=True, capture_output=True, text=True)  # fmt: skip
    failed = subprocess.run(
        ["pg_restore", "--exit-on-error", "--single-transaction", "--no-owner",
         f"--dbname={source}", str(dump)], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "already exists" in failed.stderr
    assert asyncio.run(_kpis(source))["schema"] is not None
