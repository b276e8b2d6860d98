"""Options and output shared by the command groups.

:func:`db_settings` is the one place every command that uses the schema gets its
database from, so the schema-version check lives there: a reachable database that
is not at this code's version ends the command with one line and exit code
:data:`SCHEMA_EXIT` before any query can fail with a traceback. A database that
cannot be reached is left to the command, which reports it as it always did (a
service may retry; a one-shot command prints ``cannot connect``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from zhizao.errors import ConfigError, DatabaseUnavailable, InvalidValue, ZhizaoError
from zhizao.settings import DatabaseSettings, database_settings
from zhizao.storage.connection import Conn, connect
from zhizao.storage.migrate import SchemaVersionError, require_schema

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

#: Exit code of a command refused because the database schema is not this code's.
SCHEMA_EXIT = 3

DbUrlOption = Annotated[
    str | None,
    typer.Option("--db-url", help="Database URL (default: env ZHIZAO_DB_URL)."),
]


def db_settings(url: str | None, *, check_schema: bool = True) -> DatabaseSettings:
    """The database settings of a command; refuses a database at another schema version.

    ``zhizao db`` passes ``check_schema=False``: it is how a schema gets migrated.
    """
    try:
        settings = database_settings(url=url) if url else database_settings()
    except ConfigError as exc:
        raise fail(exc) from exc
    if check_schema:
        try:
            require_schema(settings.url)
        except SchemaVersionError as exc:
            raise fail(exc, SCHEMA_EXIT) from exc
        except DatabaseUnavailable:
            pass  # the command's own connection reports it, as before
    return settings


def one_line(message: object) -> str:
    """A message on one line: psycopg and others put hints on lines of their own."""
    return " ".join(str(message).split())


def fail(error: ZhizaoError | str, code: int = 2) -> typer.Exit:
    """Print a zhizao error for a person and return the Exit to raise.

    Printed as plain text (a message may hold ``[...]``, which rich would take for
    markup) and never wrapped, so a long path or URL stays one copyable line.
    """
    err_console.print(Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True)
    return typer.Exit(code)


def with_conn(url: str, job: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``job`` on a new connection to ``url`` from a synchronous command."""

    async def _go() -> T:
        conn = await connect(url)
        async with conn:
            return await job(conn)

    return asyncio.run(_go())


def parse_day(value: str | None, option: str) -> date | None:
    """A ``--date``-style option as a date; the error names the option."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidValue(option, value, "must be a date such as 2026-03-02") from exc
