"""Migrations apply in order from empty and from every earlier version; reruns are no-ops."""

from __future__ import annotations

import pytest

from zhizao.errors import MigrationError
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import connect
from zhizao.storage.migrate import available_migrations, current_version, upgrade

LATEST = available_migrations()[-1].version
FACT_TABLES = {
    "metric_point",
    "state_change",
    "production_count",
    "device_connectivity",
    "edge_status",
    "device_event",
    "dead_letter",
    "rollup_device_hour",
    "rollup_device_day",
}


async def _tables(url: str) -> set[str]:
    conn = await connect(url)
    async with conn:
        cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in await cur.fetchall()}


async def test_upgrade_from_empty_creates_schema_and_records_versions(empty_db_url: str) -> None:
    result = await upgrade(DatabaseSettings(url=empty_db_url))

    assert [m.version for m in result.applied] == [m.version for m in available_migrations()]
    assert result.version == LATEST
    assert FACT_TABLES | {"device", "enterprise", "region"} <= await _tables(empty_db_url)
    conn = await connect(empty_db_url)
    async with conn:
        cur = await conn.execute("SELECT version, name FROM schema_migration ORDER BY version")
        assert [(v, n) for v, n in await cur.fetchall()] == [
            (m.version, m.name) for m in available_migrations()
        ]


async def test_second_upgrade_is_a_no_op(empty_db_url: str) -> None:
    settings = DatabaseSettings(url=empty_db_url)
    await upgrade(settings)
    again = await upgrade(settings)
    assert again.applied == ()
    assert again.version == LATEST


@pytest.mark.parametrize("start", [m.version for m in available_migrations()][:-1])
async def test_upgrade_from_each_earlier_version(empty_db_url: str, start: int) -> None:
    settings = DatabaseSettings(url=empty_db_url)
    first = await upgrade(settings, target=start)
    assert first.version == start
    rest = await upgrade(settings)
    assert [m.version for m in rest.applied] == [
        m.version for m in available_migrations() if m.version > start
    ]
    assert await _tables(empty_db_url) >= FACT_TABLES


async def test_edited_migration_is_refused(empty_db_url: str) -> None:
    settings = DatabaseSettings(url=empty_db_url)
    await upgrade(settings)
    conn = await connect(empty_db_url)
    async with conn:
        await conn.execute("UPDATE schema_migration SET checksum = 'x' WHERE version = 1")
        await conn.commit()
    with pytest.raises(MigrationError, match=r"migration 1 \(registry\) was changed"):
        await upgrade(settings)


async def test_database_newer_than_code_is_refused(empty_db_url: str) -> None:
    settings = DatabaseSettings(url=empty_db_url)
    await upgrade(settings)
    conn = await connect(empty_db_url)
    async with conn:
        await conn.execute(
            "INSERT INTO schema_migration (version, name, checksum) VALUES (999, 'future', 'x')"
        )
        await conn.commit()
        with pytest.raises(MigrationError, match="newer than this code"):
            await upgrade(settings)
        assert await current_version(conn) == 999


async def test_plain_postgresql_reports_no_timescaledb(empty_db_url: str) -> None:
    result = await upgrade(DatabaseSettings(url=empty_db_url))
    # The CI server is Debian's PostgreSQL without the extension: the plain path.
    assert result.timescaledb is False


async def test_a_skipped_older_migration_is_refused(empty_db_url: str) -> None:
    settings = DatabaseSettings(url=empty_db_url)
    await upgrade(settings)
    conn = await connect(empty_db_url)
    async with conn:
        await conn.execute("DELETE FROM schema_migration WHERE version = 2")
        await conn.commit()
    with pytest.raises(MigrationError, match=r"migration 2 \(facts\) is older than"):
        await upgrade(settings)


async def test_0016_counts_the_metric_names_each_enterprise_already_stored(
    empty_db_url: str,
) -> None:
    """Upgraded with points stored: every enterprise keeps the names it has (skip scan)."""
    from tests.kpi.seed import ENT, ENT2, at, seed
    from zhizao.storage.facts import FactBatch, MetricRow, metric_ids, write_facts

    settings = DatabaseSettings(url=empty_db_url)
    await upgrade(settings, target=15)
    conn = await connect(empty_db_url)
    async with conn:
        ids = await seed(conn)
        m = await metric_ids(conn, ["speed", "load", "temp", "unused"])
        await write_facts(conn, FactBatch(metrics=[
            MetricRow(ids["CNC-1"], m["speed"], at(0), 1.0, 0),
            MetricRow(ids["CNC-1"], m["speed"], at(1), 1.0, 0),
            MetricRow(ids["CNC-1"], m["load"], at(0), 1.0, 0),
            MetricRow(ids["CNC-2"], m["temp"], at(0), 1.0, 0),
            MetricRow(ids["LOOM-1"], m["load"], at(0), 1.0, 0),
        ]))  # fmt: skip
        await conn.commit()
    await upgrade(settings)
    conn = await connect(empty_db_url)
    async with conn:
        cur = await conn.execute(
            "SELECT e.credit_code, n.name FROM enterprise_metric em"
            " JOIN enterprise e ON e.id = em.enterprise_id"
            " JOIN metric_name n ON n.id = em.metric_id"
            " ORDER BY 1, 2"
        )
        assert await cur.fetchall() == sorted(
            [(ENT, "load"), (ENT, "speed"), (ENT, "temp"), (ENT2, "load")]
        )
