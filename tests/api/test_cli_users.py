"""``zhizao users`` and ``zhizao tokens``: the first admin and tokens for scripts,
from the command line, working against the API; and the audit log's retention."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.api.conftest import ApiClient
from zhizao.errors import InvalidValue
from zhizao.storage.connection import connect
from zhizao.storage.users import prune_audit


def _zhizao(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhizao.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


async def test_the_first_admin_and_a_script_token_come_from_the_cli(
    api: ApiClient, api_db_url: str
) -> None:
    made = _zhizao(
        "users",
        "create",
        "ops.wang",
        "--grant",
        "regional_analyst:330200",
        "--name",
        "王运维",
        "--password-stdin",
        "--db-url",
        api_db_url,
        stdin="a-long-cli-password\n",
    )
    assert made.returncode == 0, made.stderr
    short = _zhizao(
        "users", "create", "x.y", "--password-stdin", "--db-url", api_db_url, stdin="short\n"
    )
    assert short.returncode == 2
    assert "at least 10 characters" in short.stderr
    bad = _zhizao("users", "grant", "ops.wang", "regional_analyst:NB-MOLD", "--db-url", api_db_url)
    assert bad.returncode == 2
    assert "regional_analyst" not in bad.stdout

    login = await api.anonymous().post(
        "/api/v1/auth/token", data={"username": "ops.wang", "password": "a-long-cli-password"}
    )
    assert login.status_code == 200, login.text

    token = _zhizao(
        "tokens",
        "create",
        "ops.wang",
        "--name",
        "monthly report",
        "--days",
        "30",
        "--db-url",
        api_db_url,
    )
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip().splitlines()[-1]
    assert secret.startswith("zt_")
    me = await api.anonymous().get("/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["grants"][0]["scope"] == "330200"
    listing = _zhizao("tokens", "list", "--db-url", api_db_url)
    assert "monthly report" in listing.stdout
    assert secret not in listing.stdout
    token_id = next(
        line.split("│")[1].strip()
        for line in listing.stdout.splitlines()
        if "monthly report" in line
    )
    assert _zhizao("tokens", "revoke", token_id, "--db-url", api_db_url).returncode == 0
    again = await api.anonymous().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {secret}"}
    )
    assert again.status_code == 401
    users = _zhizao("users", "list", "--db-url", api_db_url)
    assert "区域分析员" in users.stdout
    with psycopg.connect(api_db_url) as conn:
        rows = conn.execute(
            "SELECT action FROM audit_log WHERE actor LIKE 'cli:%' ORDER BY id"
        ).fetchall()
    actions = [r[0] for r in rows]
    assert actions == ["create", "token_create", "token_revoke"]


async def test_audit_rows_go_only_after_the_retention(api_db_url: str) -> None:
    conn = await connect(api_db_url, autocommit=True)
    async with conn:
        await conn.execute(
            "INSERT INTO audit_log (at, action, actor) VALUES"
            " (now() - interval '400 days', 'login', 'old'),"
            " (now() - interval '200 days', 'login', 'middle'),"
            " (now() - interval '10 days', 'login', 'recent')"
        )
        with pytest.raises(InvalidValue, match="at least 180"):
            await prune_audit(conn, 90)
        assert await prune_audit(conn, 365) == 1
        assert await prune_audit(conn, 180) == 1
        cur = await conn.execute("SELECT actor FROM audit_log ORDER BY at")
        assert [r[0] for r in await cur.fetchall()] == ["recent"]
        # Asking the table directly with a shorter retention does not get around it.
        await conn.execute("SET zhizao.audit_retention_days = '1'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("DELETE FROM audit_log")
