"""Connections and pools, and the translation of psycopg errors at the boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from zhizao.errors import DatabaseUnavailable, StorageError
from zhizao.settings import DatabaseSettings

APPLICATION_NAME = "zhizao"

#: Rows as tuples of Any: values are typed by the SQL that selects them.
Conn = psycopg.AsyncConnection[tuple[Any, ...]]


async def connect(url: str, *, autocommit: bool = False) -> Conn:
    """Open one connection, turning 'cannot connect' into DatabaseUnavailable."""
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=autocommit, application_name=APPLICATION_NAME
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {exc}") from exc


@asynccontextmanager
async def open_pool(settings: DatabaseSettings) -> AsyncIterator[AsyncConnectionPool]:
    pool = AsyncConnectionPool(
        settings.url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={"application_name": APPLICATION_NAME},
        open=False,
    )
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


def redact(url: str) -> str:
    """The connection string without its password, for logs and errors."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable connection string>"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def database_name(url: str) -> str:
    return str(conninfo_to_dict(url).get("dbname") or "postgres")


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(url, dbname=dbname)


async def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True if created."""
    name = database_name(url)
    admin = await connect(with_database(url, "postgres"), autocommit=True)
    async with admin:
        cur = await admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if await cur.fetchone() is not None:
            return False
        try:
            await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created meanwhile by a concurrent caller
        except psycopg.Error as exc:
            raise StorageError(f"cannot create database {name!r}: {exc}") from exc
    return True


async def drop_database(url: str) -> None:
    name = database_name(url)
    admin = await connect(with_database(url, "postgres"), autocommit=True)
    async with admin:
        await admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
