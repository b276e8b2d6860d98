"""``zhizao db``: schema migrations."""

from __future__ import annotations

import asyncio

import typer

from zhizao.cli.common import DbUrlOption, console, db_settings, fail
from zhizao.errors import ZhizaoError
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import connect, ensure_database, redact
from zhizao.storage.migrate import UpgradeResult, available_migrations, current_version, upgrade

app = typer.Typer(help="Database schema: upgrade, status.", no_args_is_help=True)


async def upgrade_database(settings: DatabaseSettings, *, create: bool = True) -> UpgradeResult:
    """Create the database if asked, then apply missing migrations."""
    if create:
        await ensure_database(settings.url)
    return await upgrade(settings)


@app.command("upgrade")
def upgrade_command(
    db_url: DbUrlOption = None,
    create: bool = typer.Option(True, help="Create the database if it does not exist."),
) -> None:
    """Apply the migrations the database is missing (a no-op when it is current)."""
    settings = db_settings(db_url, check_schema=False)
    try:
        result = asyncio.run(upgrade_database(settings, create=create))
    except ZhizaoError as exc:
        raise fail(exc) from exc
    if result.applied:
        for migration in result.applied:
            console.print(f"applied {migration.version:04d} {migration.name}")
    else:
        console.print(f"database is current at version {result.version}; nothing to apply")
    engine = (
        "TimescaleDB (hypertables, compression, retention)"
        if result.timescaledb
        else ("plain PostgreSQL (no timescaledb extension on this server)")
    )
    console.print(f"{redact(settings.url)}: schema version {result.version}, {engine}")


@app.command("status")
def status_command(db_url: DbUrlOption = None) -> None:
    """Show the schema version of the database and of this code."""
    settings = db_settings(db_url, check_schema=False)

    async def _version() -> int:
        conn = await connect(settings.url)
        async with conn:
            return await current_version(conn)

    try:
        version = asyncio.run(_version())
    except ZhizaoError as exc:
        raise fail(exc) from exc
    latest = available_migrations()[-1].version
    if version == latest:
        state = "current"
    elif version < latest:
        state = f"behind this zhizao ({latest}): run `zhizao db upgrade`"
    else:
        state = f"newer than this zhizao ({latest}): install the zhizao that migrated it"
    console.print(f"{redact(settings.url)}: schema version {version}, {state}", soft_wrap=True)
