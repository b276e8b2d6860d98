"""Tenants are kept apart by PostgreSQL, whatever SQL a Grafana user types (issue 13.6).

Each test logs in as a dashboard role, as Grafana's datasource does, and tries with
hand-written SQL to read another enterprise's rows, the raw tables, or to escape the
role: refused, or nothing comes back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dashboards.roles import (
    AGGREGATE_VIEWS,
    FACT_TABLES,
    DashboardRole,
    PasswordFile,
    ensure_roles,
)
from tests.dashboards.conftest import World
from tests.dashboards.world import HOME, OTHER
from tests.fix_db import RUN_ID, create_database, drop_database

ENTERPRISE_DATA = (
    "enterprise", "site", "line", "device", "shift_calendar", "edge_gateway", "edge_device",
    "tenant_edge_status", "tenant_metric_point", "tenant_state_change",
    "tenant_production_count", "tenant_device_connectivity", "tenant_device_event",
    "device_hour_tally", "rollup_device_hour", "rollup_device_day", "enterprise_cluster",
)  # fmt: skip
RAW = ("metric_point", "state_change", "production_count", "device_connectivity",
       "device_event", "device_hour_tally", "rollup_device_hour", "rollup_device_day",
       "device", "enterprise", "app_user", "api_token", "audit_log", "dashboard_role")  # fmt: skip


def login(url: str, role: DashboardRole) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        make_conninfo(url, user=role.name, password=role.password), autocommit=True
    )


@pytest.fixture
def home(world: World) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with login(world.url, world.role_of(HOME)) as conn:
        yield conn


@pytest.fixture
def owner(world: World) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(world.url, autocommit=True) as conn:
        yield conn


def _other_device_ids(owner: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    rows = owner.execute(
        "SELECT d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
        " WHERE e.credit_code = %s",
        (OTHER,),
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_the_other_enterprise_has_rows_to_hide(
    owner: psycopg.Connection[tuple[object, ...]],
) -> None:
    ids = _other_device_ids(owner)
    for table in ("state_change", "production_count", "rollup_device_hour", "rollup_device_day"):
        query = sql.SQL("SELECT count(*) FROM {} WHERE device_id = ANY(%s)").format(
            sql.Identifier(table)
        )
        row = owner.execute(query, (ids,)).fetchone()
        assert row is not None, table
        assert int(row[0]) > 0, table


def test_an_enterprise_role_sees_its_own_rows_only(
    home: psycopg.Connection[tuple[object, ...]], owner: psycopg.Connection[tuple[object, ...]]
) -> None:
    (own,) = (
        owner.execute("SELECT id FROM enterprise WHERE credit_code = %s", (HOME,)).fetchone() or ()
    )
    own_devices = [
        int(r[0]) for r in owner.execute(
            "SELECT id FROM device WHERE enterprise_id = %s", (own,)).fetchall()
    ]  # fmt: skip
    assert home.execute("SELECT credit_code FROM enterprise").fetchall() == [(HOME,)]
    assert home.execute("SELECT DISTINCT enterprise_id FROM device").fetchall() == [(own,)]
    by_enterprise = ("site", "line", "device", "shift_calendar", "edge_gateway")
    for table in ENTERPRISE_DATA:
        if table in ("enterprise", "edge_device", "tenant_edge_status", "enterprise_cluster"):
            continue
        ident = sql.Identifier(table)
        # What the owner counts in the table under the view.
        underlying = sql.Identifier(table.removeprefix("tenant_"))
        if table in by_enterprise:
            query = sql.SQL("SELECT count(*) FROM {} WHERE enterprise_id {} %s")
            theirs = home.execute(query.format(ident, sql.SQL("<>")), (own,)).fetchone()
            mine = home.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            expected = owner.execute(query.format(underlying, sql.SQL("=")), (own,)).fetchone()
        else:
            theirs = home.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE device_id <> ALL(%s)").format(ident),
                (own_devices,),
            ).fetchone()
            mine = home.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            expected = owner.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE device_id = ANY(%s)").format(underlying),
                (own_devices,),
            ).fetchone()
        assert theirs == (0,), table
        assert mine == expected, table  # all of its own rows, nothing less
    (states,) = home.execute("SELECT count(*) FROM tenant_state_change").fetchone() or (0,)
    assert int(states) > 0  # its own facts are there


def test_an_enterprise_role_cannot_read_the_fact_tables_themselves(
    home: psycopg.Connection[tuple[object, ...]],
) -> None:
    """Facts may live in TimescaleDB hypertables, whose chunks would not carry a policy:
    the roles get no grant on them at all, only the tenant views."""
    for table in FACT_TABLES:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            home.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table)))


def test_a_users_function_sees_only_the_rows_a_tenant_view_lets_through(
    home: psycopg.Connection[tuple[object, ...]], owner: psycopg.Connection[tuple[object, ...]]
) -> None:
    """security_barrier: a leaky function in the WHERE clause runs after the view's filter.
    (A dashboard role cannot create functions in the schema; a temporary one will do, once
    the user has turned the read-only default off, as anyone may.)"""
    home.execute("SET default_transaction_read_only = off")
    home.execute(
        "CREATE FUNCTION pg_temp.peek(d integer) RETURNS boolean LANGUAGE plpgsql"
        " COST 0.0000001 AS $$ BEGIN RAISE NOTICE 'saw %', d; RETURN true; END $$"
    )
    seen: list[str] = []
    home.add_notice_handler(lambda diag: seen.append(str(diag.message_primary)))
    home.execute("SELECT count(*) FROM tenant_state_change WHERE pg_temp.peek(device_id)")
    own = {
        f"saw {r[0]}"
        for r in owner.execute(
            "SELECT d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
            " WHERE e.credit_code = %s",
            (HOME,),
        ).fetchall()
    }
    assert seen
    assert set(seen) <= own


def test_joins_and_subqueries_do_not_reach_around_the_policy(
    home: psycopg.Connection[tuple[object, ...]],
) -> None:
    # However the SQL is put, the other enterprise is not there.
    for query in (
        "SELECT count(*) FROM enterprise WHERE credit_code = %s",
        "SELECT count(*) FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
        " WHERE e.credit_code = %s",
        "SELECT count(*) FROM tenant_state_change s WHERE EXISTS (SELECT 1 FROM device d"
        " JOIN enterprise e ON e.id = d.enterprise_id WHERE d.id = s.device_id"
        " AND e.credit_code = %s)",
        "WITH RECURSIVE x AS (SELECT id FROM enterprise WHERE credit_code = %s)"
        " SELECT count(*) FROM x",
    ):
        assert home.execute(query, (OTHER,)).fetchone() == (0,), query


def test_an_enterprise_role_cannot_read_aggregates_users_or_write(
    home: psycopg.Connection[tuple[object, ...]],
) -> None:
    for table in (*AGGREGATE_VIEWS, "app_user", "api_token", "audit_log", "dashboard_role",
                  "dashboard_installation", "user_grant"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            home.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        home.execute("DELETE FROM device")
    home.execute("SET default_transaction_read_only = off")  # a user may; it opens nothing
    for write in ("DELETE FROM device", "UPDATE rollup_device_day SET good = 0",
                  "DELETE FROM tenant_state_change", "DELETE FROM state_change"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            home.execute(write)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        home.execute("CREATE TABLE mine (x int)")


def test_changing_role_or_settings_does_not_change_the_tenant(
    world: World, home: psycopg.Connection[tuple[object, ...]]
) -> None:
    prefix = world.role_of(HOME).name.rsplit("_", 1)[0]
    home.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(f"{prefix}_enterprise")))
    assert home.execute("SELECT credit_code FROM enterprise").fetchall() == [(HOME,)]
    home.execute("RESET ROLE")
    for attempt in ("SET ROLE postgres", "SET SESSION AUTHORIZATION postgres"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            home.execute(attempt)
    # No setting takes part in the decision: made-up ones change nothing.
    home.execute("SELECT set_config('zhizao.enterprise', %s, false)", (OTHER,))
    home.execute("SET application_name = 'zhizao'")
    assert home.execute(
        "SELECT count(*) FROM enterprise WHERE credit_code = %s", (OTHER,)
    ).fetchone() == (0,)


def test_the_aggregate_role_reads_the_views_only(world: World) -> None:
    with login(world.url, world.role_of(None)) as agg:
        for table in RAW:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                agg.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table)))
        rows = agg.execute(
            "SELECT credit_code, sum(in_service) FROM dash_enterprise_day"
            " WHERE day = '2026-03-02' GROUP BY 1"
        ).fetchall()
        assert {HOME, OTHER} <= {r[0] for r in rows}
        # The views hold no device, metric or state column.
        columns = {
            str(r[0])
            for r in agg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name LIKE 'dash_%'"
            ).fetchall()
        }
        assert not columns & {"device_id", "value", "state", "metric_id", "code_device"}


def test_a_login_slipped_into_a_group_sees_nothing(world: World) -> None:
    """An administrator who adds an unlisted login to the enterprise group gives it the
    tables, but no enterprise: it is a dashboard session all the same."""
    prefix = world.role_of(HOME).name.rsplit("_", 1)[0]
    stray = f"{prefix}_stray"
    with psycopg.connect(world.url, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(stray)))
        owner.execute(sql.SQL("GRANT {} TO {}").format(
            sql.Identifier(f"{prefix}_enterprise"), sql.Identifier(stray)))  # fmt: skip
        try:
            with psycopg.connect(make_conninfo(world.url, user=stray), autocommit=True) as conn:
                for table in ("enterprise", "device", "tenant_state_change", "rollup_device_day"):
                    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                    assert conn.execute(query).fetchone() == (0,), table
        finally:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(stray)))
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(stray)))


async def test_a_copied_database_gets_roles_of_its_own(world: World, tmp_path: object) -> None:
    """Roles are per server: a copy (a test database, a restored backup) must not share
    the original's, and the copy's roles read nothing in the original."""
    from pathlib import Path

    from zhizao.storage.connection import connect

    name = f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    original = str(conninfo_to_dict(world.url)["dbname"])
    url = create_database(name, template=original)
    try:
        conn = await connect(url, autocommit=True)
        async with conn:
            copy_roles = await ensure_roles(conn, PasswordFile(Path(str(tmp_path)) / "pw.json"))
            copied_home = next(r for r in copy_roles if r.enterprise == HOME)
            copied_other = next(r for r in copy_roles if r.enterprise == OTHER)
            assert copied_home.name != world.role_of(HOME).name
            assert copied_home.created
            try:
                with (
                    login(world.url, copied_home) as stranger,
                    pytest.raises(psycopg.errors.InsufficientPrivilege),
                ):
                    stranger.execute("SELECT count(*) FROM device")
                with login(url, copied_home) as own:
                    assert own.execute("SELECT credit_code FROM enterprise").fetchall() == [(HOME,)]
                # An enterprise that leaves the registry takes its role with it.
                await conn.execute("DELETE FROM enterprise WHERE credit_code = %s", (OTHER,))
                again = await ensure_roles(conn, PasswordFile(Path(str(tmp_path)) / "pw.json"))
                assert copied_other.name not in {r.name for r in again}
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_roles WHERE rolname = %s", (copied_other.name,)
                )
                assert await cur.fetchone() == (0,)
                stored = json.loads((Path(str(tmp_path)) / "pw.json").read_text())
                assert copied_other.name not in stored
                assert not any(r.created for r in again)
            finally:
                from dashboards.roles import drop_roles

                dropped = await drop_roles(conn)
                assert copied_home.name in dropped
    finally:
        drop_database(name)


async def test_provisioning_again_changes_nothing(world: World) -> None:
    from zhizao.storage.connection import connect

    conn = await connect(world.url, autocommit=True)
    async with conn:
        again = await ensure_roles(conn, PasswordFile(world.passwords))
    assert [r.name for r in again] == [r.name for r in world.roles]
    assert not any(r.created for r in again)
    assert [r.password for r in again] == [r.password for r in world.roles]
    assert all(r.created for r in world.roles)


async def test_the_migration_runs_twice_and_in_parallel_databases(world: World) -> None:
    """It creates no role (roles belong to the server), so migrating many databases at once
    cannot collide; and each of its statements may run again."""
    import asyncio
    from importlib import resources

    from zhizao.settings import DatabaseSettings
    from zhizao.storage.connection import connect
    from zhizao.storage.migrate import upgrade

    names = [f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}" for _ in range(2)]
    urls = [create_database(name) for name in names]
    try:
        results = await asyncio.gather(*(upgrade(DatabaseSettings(url=u)) for u in urls))
        assert all(r.version >= 12 for r in results)
        for url in urls:
            with psycopg.connect(url) as check:
                # No prefix was drawn, so no role can have been named after one.
                assert check.execute("SELECT count(*) FROM dashboard_installation").fetchone() == (
                    0,
                )
                assert check.execute("SELECT count(*) FROM dashboard_role").fetchone() == (0,)
        text = (
            resources.files("zhizao.storage") / "migrations" / "0012_dashboard_tenants.sql"
        ).read_text(encoding="utf-8")
        conn = await connect(urls[0], autocommit=True)
        async with conn:
            await conn.execute(text.encode())
            cur = await conn.execute(
                "SELECT count(*) FROM pg_policies WHERE policyname = 'dashboard_tenant'"
            )
            assert await cur.fetchone() == (11,)
    finally:
        for name in names:
            drop_database(name)
