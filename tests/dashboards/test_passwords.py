"""The roles' passwords really authenticate: on a PostgreSQL cluster of the test's own
that asks every role but the superuser for a SCRAM-SHA-256 password (the shared test
server trusts local connections, so there a password is never checked)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from dashboards.roles import PasswordFile, ensure_roles
from tests.dashboards.world import HOME
from tests.fix_pgcluster import PgCluster, pg_cluster  # noqa: F401 - the fixture
from zhizao.storage.connection import connect


async def test_a_role_logs_in_with_its_password_and_not_without(
    pg_cluster: PgCluster,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    data = pg_cluster.folder / "data"
    (data / "pg_hba.conf").write_text(
        "local all postgres trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n",
        encoding="utf-8",
    )
    pg_cluster._run("pg_ctl", "-D", str(data), "reload")
    conn = await connect(pg_cluster.url, autocommit=True)
    async with conn:
        await conn.execute(
            "INSERT INTO enterprise (credit_code, name, region_code, industry_code)"
            " VALUES (%s, '宁波瑞驰', '330206', 'C3670')",
            (HOME,),
        )
        roles = await ensure_roles(conn, PasswordFile(tmp_path / "pw.json"))
    home = next(r for r in roles if r.enterprise == HOME)
    with psycopg.connect(
        make_conninfo(pg_cluster.url, user=home.name, password=home.password)
    ) as own:
        assert own.execute("SELECT credit_code FROM enterprise").fetchall() == [(HOME,)]
    agg = roles[0]
    assert agg.kind == "aggregate"
    with psycopg.connect(
        make_conninfo(pg_cluster.url, user=agg.name, password=agg.password)
    ) as aggregate:
        assert aggregate.execute("SELECT credit_code FROM dash_enterprise").fetchall() == [(HOME,)]
    # None, a near miss, and another role's password (roles[0] is the aggregate role's).
    for wrong in ("", home.password + "x", roles[0].password):
        with pytest.raises(
            psycopg.OperationalError, match=r"password authentication failed|no password supplied"
        ):
            psycopg.connect(make_conninfo(pg_cluster.url, user=home.name, password=wrong))
    # What the server keeps is a SCRAM verifier, never the password.
    with psycopg.connect(pg_cluster.url) as admin:
        (stored,) = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (home.name,)
        ).fetchone() or ("",)
    assert str(stored).startswith("SCRAM-SHA-256$4096:")
    assert home.password not in str(stored)
