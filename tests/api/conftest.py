"""Fixtures of the API tests: a seeded province per test, the app in-process.

``api`` runs the application's lifespan (pool, housekeeping) on the test's own
database and gives an :class:`ApiClient` whose ``as_(username)`` is an httpx client
authenticated as that persona (tokens issued directly with the test secret; the
login route itself is tested in test_auth).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from platform_api import create_app
from platform_api.security import hash_password, issue_access_token
from platform_api.settings import ApiSettings, api_settings
from tests.api.world import PASSWORD, PERSONAS, ledger
from tests.fix_db import RUN_ID, SERVER_URL, create_database, drop_database, with_database
from zhizao.storage.connection import connect
from zhizao.storage.registry import store_ledger
from zhizao.storage.users import add_grant, create_user

SECRET = secrets.token_urlsafe(48)


async def _seed(url: str) -> dict[str, int]:
    conn = await connect(url)
    ids: dict[str, int] = {}
    password_hash = hash_password(PASSWORD)
    async with conn, conn.transaction():
        await store_ledger(conn, ledger())
        for persona in PERSONAS.values():
            user = await create_user(conn, persona.username, password_hash)
            for grant in persona.grants:
                await add_grant(conn, user.id, grant)
            ids[persona.username] = user.id
        # Sessions valid from the epoch: tokens issued "now" in any copy stay valid.
        await conn.execute("UPDATE app_user SET sessions_valid_from = '2000-01-01Z'")
    return ids


@pytest.fixture(scope="session")
def api_world(template_db: str) -> Iterator[tuple[str, dict[str, int]]]:
    name = f"zhizao_api_{RUN_ID}"
    url = create_database(name, template=template_db)
    ids = asyncio.run(_seed(url))
    yield name, ids
    drop_database(name)


@pytest.fixture
def api_db_url(api_world: tuple[str, dict[str, int]]) -> Iterator[str]:
    name = f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name, template=api_world[0])
    yield url
    drop_database(name)


class ApiClient:
    def __init__(self, app: Any, settings: ApiSettings, ids: dict[str, int]) -> None:
        self.app = app
        self.settings = settings
        self.ids = ids
        self._transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 50000))
        self._clients: list[httpx.AsyncClient] = []

    def anonymous(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=self._transport, base_url="http://api.test")
        self._clients.append(client)
        return client

    def as_(self, username: str) -> httpx.AsyncClient:
        token, _ = issue_access_token(
            self.settings.signing_key(), self.ids[username], self.settings.access_token_minutes
        )
        client = httpx.AsyncClient(
            transport=self._transport,
            base_url="http://api.test",
            headers={"Authorization": f"Bearer {token}"},
        )
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


async def waiting_for_locks(db_url: str, count: int) -> None:
    """Until ``count`` sessions of the database wait for a lock: how a test of a race
    knows that the requests it started are all past their reads and held at a write."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(500):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"{count} sessions never waited for a lock")


def make_settings(db_url: str, **overrides: Any) -> ApiSettings:
    # The result cache is off unless a test turns it on: the tests change rows
    # straight in the database between two identical requests (as the rollup service
    # does, within the cache's few seconds). test_cache tests the cache.
    overrides.setdefault("result_cache_s", 0)
    # Users are read on every request too: the tests change users and grants in the
    # database and ask at once, before the notification could have been heard.
    # test_kept_callers tests keeping them.
    overrides.setdefault("principal_cache_s", 0)
    return api_settings(
        jwt_secret=SECRET, database={"url": db_url, "pool_max_size": 4}, **overrides
    )


@pytest.fixture
async def api(api_db_url: str, api_world: tuple[str, dict[str, int]]) -> AsyncIterator[ApiClient]:
    settings = make_settings(api_db_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        client = ApiClient(app, settings, api_world[1])
        try:
            yield client
        finally:
            await client.close()


__all__ = ["SERVER_URL", "with_database"]
