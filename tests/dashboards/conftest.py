"""One database per module with the world of tests/dashboards/world.py and the
dashboard roles of that database, dropped afterwards (roles belong to the server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from dashboards.roles import DashboardRole, PasswordFile, drop_roles, ensure_roles
from tests.dashboards.world import fill
from tests.fix_db import RUN_ID, create_database, drop_database
from zhizao.cli.registry import import_ledger
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import connect


@dataclass(frozen=True)
class World:
    url: str
    roles: list[DashboardRole]
    passwords: Path

    def role_of(self, credit: str | None) -> DashboardRole:
        kind = "aggregate" if credit is None else "enterprise"
        return next(r for r in self.roles if r.kind == kind and r.enterprise == credit)


async def _build(url: str, passwords: Path) -> list[DashboardRole]:
    sample = Path(str(resources.files("zhizao.data") / "sample_ledger.xlsx"))
    await import_ledger(DatabaseSettings(url=url), sample)
    conn = await connect(url, autocommit=True)
    async with conn:
        await fill(conn)
        return await ensure_roles(conn, PasswordFile(passwords))


async def _drop(url: str) -> None:
    conn = await connect(url, autocommit=True)
    async with conn:
        await drop_roles(conn)


@pytest.fixture(scope="module")
def world(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    name = f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name, template=template_db)
    passwords = tmp_path_factory.mktemp("dash") / "passwords.json"
    try:
        roles = asyncio.run(_build(url, passwords))
        yield World(url, roles, passwords)
    finally:
        asyncio.run(_drop(url))
        drop_database(name)
