"""Versioned, ordered schema migrations, recorded in the database.

Migrations are the files ``migrations/NNNN_name.sql`` of this package, applied in
version order, each in its own transaction together with its row in
``schema_migration`` (version, name, SHA-256 of the file). An advisory lock makes
concurrent upgrades (two services starting at once) wait for each other. A
database that records a migration this code does not have, or whose checksum
differs from the file, is refused rather than guessed at.

TimescaleDB is not a migration: whether the extension exists depends on the server,
not on the schema version. After the migrations, :func:`apply_timescale` reconciles
hypertables, compression and retention with the settings on every upgrade, so a
changed retention takes effect and a server that gains the extension later is
converted then; the same holds for a changed compression age, and retention turned
off removes the policy. Reference data (the GB/T 2260 regions of Zhejiang) is reconciled the
same way.

Every command that reads or writes the schema first checks, with
:func:`require_schema`, that the database is at the version this code was written
for: a database that was never migrated, or is older or newer than the code, is
refused with one sentence naming both versions and what to do, instead of a
``relation ... does not exist`` traceback from the first query. The check is
synchronous so the CLI can run it before (or inside) its own event loop.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg
import structlog

from zhizao.errors import DatabaseUnavailable, MigrationError
from zhizao.regions import zhejiang_regions
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import APPLICATION_NAME, Conn, connect, redact
from zhizao.storage.registry import upsert_regions

log = structlog.get_logger(__name__)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x7A68697A616F  # "zhizao": serialises concurrent upgrades

#: table → (chunk interval, compress segment-by columns)
HYPERTABLES: dict[str, tuple[str, str]] = {
    "metric_point": ("1 day", "device_id, metric_id"),
    "state_change": ("7 days", "device_id"),
    "production_count": ("7 days", "device_id"),
    "device_connectivity": ("7 days", "device_id"),
    "edge_status": ("30 days", "edge_pk"),
    "device_event": ("7 days", "device_id"),
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class UpgradeResult:
    applied: tuple[Migration, ...]
    version: int
    timescaledb: bool


def available_migrations() -> list[Migration]:
    folder = resources.files("zhizao.storage") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def current_version(conn: Conn) -> int:
    cur = await conn.execute("SELECT to_regclass('schema_migration') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migration")
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


def required_version() -> int:
    """The schema version this code needs: its newest migration."""
    return available_migrations()[-1].version


class SchemaVersionError(MigrationError):
    """The database is reachable but its schema is not the version this code needs."""

    def __init__(self, where: str, found: int, needed: int) -> None:
        self.found = found
        self.needed = needed
        if found == 0:
            state = "has no zhizao schema (version 0: never migrated)"
        else:
            state = f"is at schema version {found}"
        if found < needed:
            advice = f"this zhizao needs version {needed}: run `zhizao db upgrade` first"
        else:
            advice = (
                f"newer than this zhizao, which knows version {needed}:"
                " install the zhizao that migrated it"
            )
        super().__init__(f"database {where} {state}; {advice}")


def schema_version(url: str) -> int:
    """The schema version of the database at ``url``, 0 when it was never migrated.

    Raises DatabaseUnavailable when the server cannot be reached.
    """
    try:
        with psycopg.connect(url, application_name=APPLICATION_NAME) as conn:
            row = conn.execute("SELECT to_regclass('schema_migration') IS NOT NULL").fetchone()
            if row is None or not row[0]:
                return 0
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migration").fetchone()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {exc}") from exc
    return int(row[0]) if row is not None else 0


def require_schema(url: str) -> int:
    """Check that the database is at the version this code needs; returns it.

    Raises SchemaVersionError naming the version found and the one needed.
    """
    found, needed = schema_version(url), required_version()
    if found != needed:
        raise SchemaVersionError(redact(url), found, needed)
    return found


async def upgrade(
    settings: DatabaseSettings, *, target: int | None = None, timescale: bool = True
) -> UpgradeResult:
    """Apply the missing migrations (up to ``target``) and reconcile TimescaleDB."""
    migrations = available_migrations()
    target = migrations[-1].version if target is None else target
    applied: list[Migration] = []
    conn = await connect(settings.url)
    async with conn:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migration (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        await conn.commit()
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            cur = await conn.execute("SELECT version, name, checksum FROM schema_migration")
            recorded = {int(v): (str(n), str(c)) for v, n, c in await cur.fetchall()}
            known = {m.version: m for m in migrations}
            for version, (name, checksum) in sorted(recorded.items()):
                migration = known.get(version)
                if migration is None:
                    raise MigrationError(
                        f"database has migration {version} ({name}) that this zhizao does not"
                        " know: it is newer than this code"
                    )
                if migration.checksum != checksum:
                    raise MigrationError(
                        f"migration {version} ({name}) was changed after it was applied"
                        f" (checksum {checksum[:12]} in the database,"
                        f" {migration.checksum[:12]} in the file)"
                    )
            latest_recorded = max(recorded, default=0)
            for migration in migrations:
                if migration.version in recorded or migration.version > target:
                    continue
                if migration.version < latest_recorded:
                    # Applying it now would run it after newer migrations it may predate.
                    raise MigrationError(
                        f"migration {migration.version} ({migration.name}) is older than the"
                        f" database's version {latest_recorded} but was never applied"
                    )
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql.encode())
                        await conn.execute(
                            "INSERT INTO schema_migration (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version} ({migration.name}) failed: {exc}"
                    ) from exc
                log.info("migration applied", version=migration.version, name=migration.name)
                applied.append(migration)
        version = await current_version(conn)
        if version == migrations[-1].version:
            # Reference data follows the code, like TimescaleDB: reconciled every time.
            async with conn.transaction():
                await upsert_regions(conn, zhejiang_regions())
        has_timescale = False
        if timescale and settings.use_timescaledb and version == migrations[-1].version:
            has_timescale = await apply_timescale(conn, settings)
    return UpgradeResult(tuple(applied), version, has_timescale)


async def timescaledb_available(conn: Conn) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return await cur.fetchone() is not None


async def apply_timescale(conn: Conn, settings: DatabaseSettings) -> bool:
    """Make the fact tables hypertables with compression and retention; idempotent.

    Returns False, changing nothing, when the server has no TimescaleDB.
    """
    if not await timescaledb_available(conn):
        return False
    try:
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            for table, (interval, segment_by) in HYPERTABLES.items():
                await conn.execute(
                    "SELECT create_hypertable(%s::regclass, 'time',"
                    " chunk_time_interval => %s::interval,"
                    " if_not_exists => true, migrate_data => true)",
                    (table, interval),
                )
                cur = await conn.execute(
                    "SELECT compression_enabled FROM timescaledb_information.hypertables"
                    " WHERE hypertable_name = %s",
                    (table,),
                )
                row = await cur.fetchone()
                if row is not None and not row[0]:
                    # Identifiers here come from HYPERTABLES above, never from input.
                    await conn.execute(
                        f"ALTER TABLE {table} SET (timescaledb.compress,"
                        f" timescaledb.compress_segmentby = '{segment_by}',"
                        " timescaledb.compress_orderby = 'time DESC')"
                    )
                # Reconciled like retention: the policy is replaced, so a changed
                # compress_after_days applies (if_not_exists kept the first one forever).
                await conn.execute(
                    "SELECT remove_compression_policy(%s::regclass, if_exists => true)",
                    (table,),
                )
                await conn.execute(
                    "SELECT add_compression_policy(%s::regclass, %s::interval)",
                    (table, f"{settings.compress_after_days} days"),
                )
            # Retention is reconciled: drop the old policy so a changed setting applies;
            # none is added when it is turned off (ZHIZAO_DB_METRIC_RETENTION_DAYS=off).
            await conn.execute("SELECT remove_retention_policy('metric_point', if_exists => true)")
            if settings.metric_retention_days is not None:
                await conn.execute(
                    "SELECT add_retention_policy('metric_point', %s::interval)",
                    (f"{settings.metric_retention_days} days",),
                )
    except psycopg.Error as exc:
        raise MigrationError(f"TimescaleDB setup failed: {exc}") from exc
    log.info(
        "timescaledb reconciled",
        hypertables=len(HYPERTABLES),
        metric_retention_days=settings.metric_retention_days or "off",
        compress_after_days=settings.compress_after_days,
    )
    return True
