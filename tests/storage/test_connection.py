"""Connections, the pool, and errors at the boundary."""

from __future__ import annotations

import asyncio

import pytest

from zhizao.errors import DatabaseUnavailable
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import connect, database_name, open_pool, redact, with_database


async def test_pool_serves_concurrent_queries(db_url: str) -> None:
    settings = DatabaseSettings(url=db_url, pool_min_size=1, pool_max_size=3)
    async with open_pool(settings) as pool:

        async def backend() -> int:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT pg_backend_pid() FROM pg_sleep(0.2)")
                row = await cur.fetchone()
                assert row is not None
                return int(row[0])

        pids = await asyncio.gather(*(backend() for _ in range(3)))
    assert len(set(pids)) == 3  # three connections worked side by side


async def test_unreachable_server_is_database_unavailable_without_password() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/zhizao"
    with pytest.raises(DatabaseUnavailable) as info:
        await connect(url)
    assert "s3cret" not in str(info.value)
    assert "password=***" in str(info.value)


def test_url_helpers() -> None:
    url = "postgresql://postgres:pw@127.0.0.1:5432/zhizao"
    assert database_name(url) == "zhizao"
    assert database_name(with_database(url, "other")) == "other"
    assert "pw" not in redact(url)
