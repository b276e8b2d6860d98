"""PostgreSQL fixtures: every test gets a database of its own.

A template database is migrated once per session; each test then gets a copy with
``CREATE DATABASE ... TEMPLATE`` (tens of milliseconds) named after the test run, so
leftovers of earlier or concurrent runs cannot break it. The server comes from
``ZHIZAO_TEST_DB_URL`` (default: the local PostgreSQL of the CI machine).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import Conn, connect, with_database
from zhizao.storage.migrate import upgrade

SERVER_URL = os.environ.get("ZHIZAO_TEST_DB_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RUN_ID = uuid.uuid4().hex[:8]


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(with_database(SERVER_URL, "postgres"), autocommit=True)


def create_database(name: str, template: str | None = None) -> str:
    with _admin() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if template is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
    return with_database(SERVER_URL, name)


def drop_database(name: str) -> None:
    with _admin() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """Name of a database migrated to the current version, used as a template."""
    import asyncio

    name = f"zhizao_tpl_{RUN_ID}"
    url = create_database(name)
    asyncio.run(upgrade(DatabaseSettings(url=url)))
    yield name
    drop_database(name)


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a new, empty database (no schema) for migration tests."""
    name = f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    yield url
    drop_database(name)


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """URL of a new database at the current schema version."""
    name = f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name, template=template_db)
    yield url
    drop_database(name)


@pytest.fixture
def db_settings(db_url: str) -> DatabaseSettings:
    return DatabaseSettings(url=db_url)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[Conn]:
    connection = await connect(db_url)
    async with connection:
        yield connection
