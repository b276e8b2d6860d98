"""The PostgreSQL roles Grafana's datasources log in as (DESIGN §8, docs/dashboards.md).

Migration 0012 decides what a dashboard session may see (row-level security keyed by
``session_user`` through ``dashboard_role`` on the registry and rollups, ``tenant_*``
views of the fact tables, and the aggregate ``dash_*`` views); this
module makes the roles, because roles belong to the whole server and the schema to one
database:

- a per-database prefix ``zd_`` + 8 random hex digits, kept in ``dashboard_installation``
  with the database's name; a copy under another name (a test database copied from a
  template, a restored backup) gets a new prefix, so two databases never share a role;
- two group roles without login: ``{prefix}_enterprise`` (SELECT on the registry and the
  rollups under row-level security, and on the ``tenant_*`` views of the facts) and
  ``{prefix}_aggregate`` (SELECT on the ``dash_*`` views only);
- one login role per enterprise, ``{prefix}_e{id}``, member of the enterprise group and
  listed in ``dashboard_role`` with its enterprise, and one login role ``{prefix}_agg``
  for the cluster and province dashboards.

Passwords are generated here (``secrets``), sent to the server as SCRAM-SHA-256
verifiers (the password itself never reaches the server or its logs) and kept in a
:class:`PasswordFile` readable by its owner only, for the datasources that log in with
them. Role and identifier names go through :class:`psycopg.sql.Identifier`; values are
parameters or :class:`psycopg.sql.Literal`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from zhizao.errors import StorageError
from zhizao.storage.connection import Conn

#: What the enterprise group may select: plain tables under the policy ``dashboard_tenant``
#: of migration 0012 (region, cluster and metric_name are reference data), and the
#: ``tenant_*`` views of the fact tables, which get no grant (TimescaleDB hypertables).
ENTERPRISE_TABLES = (
    "region", "cluster", "metric_name", "enterprise", "enterprise_cluster", "site", "line",
    "device", "shift_calendar", "edge_gateway", "edge_device", "device_hour_tally",
    "rollup_device_hour", "rollup_device_day", "tenant_metric_point", "tenant_state_change",
    "tenant_production_count", "tenant_device_connectivity", "tenant_device_event",
    "tenant_edge_status",
)  # fmt: skip
#: The fact tables, which a dashboard role never reads directly.
FACT_TABLES = (
    "metric_point", "state_change", "production_count", "device_connectivity",
    "device_event", "edge_status",
)  # fmt: skip

#: What the aggregate group may select: nothing else.
AGGREGATE_VIEWS = (
    "dash_region", "dash_cluster", "dash_enterprise", "dash_enterprise_cluster",
    "dash_enterprise_day",
)  # fmt: skip

_LOCK_KEY = 0x7A6864617368  # "zhdash": one provisioning of the roles at a time
_SCRAM_ITERATIONS = 4096


@dataclass(frozen=True, slots=True)
class DashboardRole:
    name: str
    kind: str  # enterprise or aggregate
    enterprise: str | None  # credit code
    enterprise_name: str | None
    password: str
    created: bool  # made (or given a new password) by this run


class PasswordFile:
    """Role passwords in a JSON file that only its owner may read (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()}

    def save(self, passwords: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(passwords, out, indent=1, sort_keys=True)
        os.chmod(self.path, 0o600)


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def role_prefix(conn: Conn) -> str:
    """This database's role prefix; made (or remade, for a copy) when needed."""
    cur = await conn.execute(
        "SELECT role_prefix, database_name = current_database() FROM dashboard_installation"
    )
    row = await cur.fetchone()
    if row is not None and row[1]:
        return str(row[0])
    prefix = f"zd_{secrets.token_hex(4)}"
    await conn.execute(
        "INSERT INTO dashboard_installation (singleton, database_name, role_prefix)"
        " VALUES (true, current_database(), %s)"
        " ON CONFLICT (singleton) DO UPDATE SET database_name = excluded.database_name,"
        " role_prefix = excluded.role_prefix, created_at = now()",
        (prefix,),
    )
    # The copy's listed roles were the original's: they are not this database's.
    await conn.execute("DELETE FROM dashboard_role")
    return prefix


async def _role_exists(conn: Conn, name: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return await cur.fetchone() is not None


async def _ensure_group(conn: Conn, name: str) -> None:
    if not await _role_exists(conn, name):
        await conn.execute(
            sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                sql.Identifier(name)
            )
        )


async def _ensure_login(conn: Conn, name: str, group: str, password: str | None) -> bool:
    """Make the login role or give it ``password``; True when something was set."""
    ident = sql.Identifier(name)
    changed = False
    if not await _role_exists(conn, name):
        await conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                " NOBYPASSRLS CONNECTION LIMIT 20"
            ).format(ident)
        )
        changed = True
    if password is not None:
        await conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                ident, sql.Literal(scram_verifier(password))
            )
        )
        changed = True
    await conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))
    # Grafana sends what a user typed: a dashboard session never writes, and a runaway
    # query ends (a user may SET these back, which only harms their own session).
    await conn.execute(
        sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident)
    )
    await conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '30s'").format(ident))
    return changed


async def ensure_roles(
    conn: Conn, passwords: PasswordFile, *, enterprises: list[str] | None = None
) -> list[DashboardRole]:
    """Make the dashboard roles of this database (all enterprises, or the given credit
    codes), grant them what they may read, and return them with their passwords.

    Idempotent: a rerun with the same password file creates and changes nothing (each
    role's ``created`` is False). Runs in one transaction of the caller's connection,
    which must be allowed to create roles (CREATEROLE) and own the tables.
    """
    stored = passwords.load()
    out: list[DashboardRole] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        prefix = await role_prefix(conn)
        db = sql.Identifier(await _current_database(conn))
        ent_group, agg_group = f"{prefix}_enterprise", f"{prefix}_aggregate"
        for group in (ent_group, agg_group):
            await _ensure_group(conn, group)
            await conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                db, sql.Identifier(group)))  # fmt: skip
            await conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(group))
            )
        await conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in ENTERPRISE_TABLES),
                sql.Identifier(ent_group),
            )
        )
        await conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in AGGREGATE_VIEWS),
                sql.Identifier(agg_group),
            )
        )
        cur = await conn.execute(
            "SELECT id, credit_code, name FROM enterprise"
            " WHERE %(all)s OR credit_code = ANY(%(codes)s) ORDER BY credit_code",
            {"all": enterprises is None, "codes": enterprises or []},
        )
        wanted: list[tuple[str, str, int | None, str | None, str | None]] = [
            (f"{prefix}_agg", "aggregate", None, None, None)
        ]
        wanted += [
            (f"{prefix}_e{pk}", "enterprise", int(pk), str(cc), str(name))
            for pk, cc, name in await cur.fetchall()
        ]
        for name, kind, pk, credit, ent_name in wanted:
            new_password = None if name in stored else secrets.token_urlsafe(24)
            created = await _ensure_login(
                conn, name, ent_group if kind == "enterprise" else agg_group, new_password
            )
            if new_password is not None:
                stored[name] = new_password
            await conn.execute(
                "INSERT INTO dashboard_role (role_name, kind, enterprise_id) VALUES (%s, %s, %s)"
                " ON CONFLICT (role_name) DO UPDATE SET kind = excluded.kind,"
                " enterprise_id = excluded.enterprise_id",
                (name, kind, pk),
            )
            out.append(DashboardRole(name, kind, credit, ent_name, stored[name], created))
        if enterprises is None:
            await _drop_departed(conn, prefix, {name for name, *_ in wanted}, stored)
        # Saved inside the transaction: a password the file lost would lock Grafana out.
        passwords.save(stored)
    return out


async def _drop_departed(conn: Conn, prefix: str, wanted: set[str], stored: dict[str, str]) -> None:
    """Drop the login roles of enterprises no longer in the registry. (Until then such a
    role is harmless: unlisted but in the enterprise group, it sees nothing.)"""
    cur = await conn.execute(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) AND rolname ~ %s",
        (prefix + "_e", r"_e[0-9]+$"),
    )
    for (name,) in await cur.fetchall():
        if name in wanted:
            continue
        ident = sql.Identifier(str(name))
        await conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        await conn.execute(sql.SQL("DROP ROLE {}").format(ident))
        stored.pop(str(name), None)


async def _current_database(conn: Conn) -> str:
    cur = await conn.execute("SELECT current_database()")
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - a SELECT without FROM returns one row
    return str(row[0])


async def drop_roles(conn: Conn) -> list[str]:
    """Drop this database's dashboard roles (for a database about to be dropped, and the
    tests); returns their names. Roles of other databases are left alone."""
    cur = await conn.execute(
        "SELECT role_prefix FROM dashboard_installation WHERE database_name = current_database()"
    )
    row = await cur.fetchone()
    if row is None:
        return []
    prefix = str(row[0])
    cur = await conn.execute(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY rolname DESC",
        (prefix + "_",),
    )
    names = [str(r[0]) for r in await cur.fetchall()]
    # Logins (…_e1, …_agg) before the groups they are members of.
    names.sort(key=lambda n: n.endswith(("_enterprise", "_aggregate")))
    async with conn.transaction():
        for name in names:
            ident = sql.Identifier(name)
            await conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            try:
                async with conn.transaction():
                    await conn.execute(sql.SQL("DROP ROLE {}").format(ident))
            except psycopg.errors.DependentObjectsStillExist as exc:
                raise StorageError(f"role {name} still has objects elsewhere: {exc}") from exc
        await conn.execute("DELETE FROM dashboard_role")
    return names
