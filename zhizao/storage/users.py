"""Users, grants, machine tokens, login attempts and the audit log (migration 0010).

Secrets never reach this module in the clear: it stores what the API's security
module made of them (an Argon2 hash of a password, a SHA-256 of a token secret).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from zhizao.access import Grant, Role
from zhizao.errors import InvalidValue, StorageError
from zhizao.storage.connection import Conn

#: The shortest retention the audit log accepts (等保 2.0: at least six months).
MIN_AUDIT_RETENTION_DAYS = 180


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    full_name: str | None
    password_hash: str
    disabled: bool
    created_at: datetime
    sessions_valid_from: datetime
    grants: tuple[Grant, ...]


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    user_id: int
    username: str
    name: str
    prefix: str
    grants: tuple[Grant, ...]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    last_used_from: str | None


_USER_COLUMNS = """
    u.id, u.username, u.full_name, u.password_hash, u.disabled, u.created_at,
    u.sessions_valid_from,
    coalesce((SELECT json_agg(json_build_array(g.role, g.scope) ORDER BY g.role, g.scope)
              FROM user_grant g WHERE g.user_id = u.id), '[]'::json)
"""


async def _returned_id(cur: psycopg.AsyncCursor[tuple[Any, ...]]) -> int:
    row = await cur.fetchone()
    if row is None:
        raise StorageError("INSERT ... RETURNING returned no row")
    return int(row[0])


def _grants(raw: Any) -> tuple[Grant, ...]:
    items = json.loads(raw) if isinstance(raw, str) else raw
    return tuple(Grant(Role(role), scope) for role, scope in items)


def _user(row: Sequence[Any]) -> UserRow:
    return UserRow(
        int(row[0]), str(row[1]), row[2], str(row[3]), bool(row[4]), row[5], row[6],
        _grants(row[7]),
    )  # fmt: skip


async def create_user(
    conn: Conn, username: str, password_hash: str, full_name: str | None = None
) -> UserRow:
    try:
        cur = await conn.execute(
            "INSERT INTO app_user (username, full_name, password_hash) VALUES (%s, %s, %s)"
            " RETURNING id",
            (username, full_name, password_hash),
        )
    except psycopg.errors.UniqueViolation as exc:
        raise InvalidValue("username", username, "is taken") from exc
    except psycopg.errors.CheckViolation as exc:
        raise InvalidValue(
            "username", username, "must be 1-64 letters, digits, '_', '.', '@' or '-'"
        ) from exc
    user = await user_by_id(conn, await _returned_id(cur))
    if user is None:
        raise StorageError(f"user {username!r} vanished after its creation")
    return user


async def user_by_name(conn: Conn, username: str) -> UserRow | None:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM app_user u WHERE u.username = %s").format(sql.SQL(_USER_COLUMNS)),
        (username,),
    )
    row = await cur.fetchone()
    return None if row is None else _user(row)


async def user_by_id(conn: Conn, user_id: int) -> UserRow | None:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM app_user u WHERE u.id = %s").format(sql.SQL(_USER_COLUMNS)),
        (user_id,),
    )
    row = await cur.fetchone()
    return None if row is None else _user(row)


async def list_users(conn: Conn) -> list[UserRow]:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM app_user u ORDER BY u.username").format(sql.SQL(_USER_COLUMNS))
    )
    return [_user(r) for r in await cur.fetchall()]


async def count_admins(conn: Conn) -> int:
    cur = await conn.execute(
        "SELECT count(DISTINCT u.id) FROM app_user u JOIN user_grant g ON g.user_id = u.id"
        " WHERE g.role = 'admin' AND NOT u.disabled"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def update_user(
    conn: Conn,
    user_id: int,
    *,
    full_name: str | None = None,
    password_hash: str | None = None,
    disabled: bool | None = None,
) -> None:
    """Change what is given; a new password or disabling ends the user's sessions."""
    sets: list[sql.Composable] = [sql.SQL("updated_at = now()")]
    params: dict[str, Any] = {"id": user_id}
    if full_name is not None:
        sets.append(sql.SQL("full_name = %(full_name)s"))
        params["full_name"] = full_name
    if password_hash is not None:
        sets.append(sql.SQL("password_hash = %(hash)s"))
        params["hash"] = password_hash
    if disabled is not None:
        sets.append(sql.SQL("disabled = %(disabled)s"))
        params["disabled"] = disabled
    if password_hash is not None or disabled:
        sets.append(sql.SQL("sessions_valid_from = now()"))
    await conn.execute(
        sql.SQL("UPDATE app_user SET {} WHERE id = %(id)s").format(sql.SQL(", ").join(sets)),
        params,
    )


async def add_grant(conn: Conn, user_id: int, grant: Grant) -> bool:
    """True if added, False if the user held it already."""
    cur = await conn.execute(
        "INSERT INTO user_grant (user_id, role, scope) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (user_id, grant.role.value, grant.scope),
    )
    return await cur.fetchone() is not None


async def remove_grant(conn: Conn, user_id: int, grant: Grant) -> bool:
    cur = await conn.execute(
        "DELETE FROM user_grant WHERE user_id = %s AND role = %s"
        " AND coalesce(scope, '') = coalesce(%s, '') RETURNING id",
        (user_id, grant.role.value, grant.scope),
    )
    return await cur.fetchone() is not None


# --- machine tokens -------------------------------------------------------------------

_TK_COLUMNS = """
    t.id, t.user_id, u.username, t.name, t.prefix, t.grants, t.created_at, t.expires_at,
    t.revoked_at, t.last_used_at, t.last_used_from
"""


def _token(row: Sequence[Any]) -> TokenRow:
    return TokenRow(
        int(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4]), _grants(row[5]),
        row[6], row[7], row[8], row[9], row[10],
    )  # fmt: skip


async def create_token(
    conn: Conn,
    user_id: int,
    *,
    name: str,
    prefix: str,
    secret_sha256: bytes,
    grants: Iterable[Grant],
    expires_at: datetime,
) -> TokenRow:
    cur = await conn.execute(
        "INSERT INTO api_token (user_id, name, prefix, secret_sha256, grants, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (
            user_id, name, prefix, secret_sha256,
            Jsonb([[g.role.value, g.scope] for g in grants]), expires_at,
        ),
    )  # fmt: skip
    token = await token_by_id(conn, await _returned_id(cur))
    if token is None:
        raise StorageError("a token vanished after its creation")
    return token


async def token_by_id(conn: Conn, token_id: int) -> TokenRow | None:
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM api_token t JOIN app_user u ON u.id = t.user_id WHERE t.id = %s")
        .format(sql.SQL(_TK_COLUMNS)),
        (token_id,),
    )  # fmt: skip
    row = await cur.fetchone()
    return None if row is None else _token(row)


async def token_by_secret(conn: Conn, secret_sha256: bytes) -> TokenRow | None:
    cur = await conn.execute(
        sql.SQL(
            "SELECT {} FROM api_token t JOIN app_user u ON u.id = t.user_id"
            " WHERE t.secret_sha256 = %s"
        ).format(sql.SQL(_TK_COLUMNS)),
        (secret_sha256,),
    )
    row = await cur.fetchone()
    return None if row is None else _token(row)


async def list_tokens(conn: Conn, user_id: int | None = None) -> list[TokenRow]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT {} FROM api_token t JOIN app_user u ON u.id = t.user_id"
            " WHERE %(user)s::int IS NULL OR t.user_id = %(user)s ORDER BY t.id"
        ).format(sql.SQL(_TK_COLUMNS)),
        {"user": user_id},
    )
    return [_token(r) for r in await cur.fetchall()]


async def revoke_token(conn: Conn, token_id: int) -> bool:
    cur = await conn.execute(
        "UPDATE api_token SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
        (token_id,),
    )
    return await cur.fetchone() is not None


async def record_token_use(conn: Conn, token_id: int, client_addr: str) -> None:
    # Written at most once a minute per token: a script polling every second must not
    # turn every read into a write.
    await conn.execute(
        "UPDATE api_token SET last_used_at = now(), last_used_from = %s"
        " WHERE id = %s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (client_addr, token_id),
    )


# --- login attempts -------------------------------------------------------------------


async def record_login(conn: Conn, username: str, client_addr: str, *, success: bool) -> None:
    await conn.execute(
        "INSERT INTO login_attempt (username, client_addr, success) VALUES (%s, %s, %s)",
        (username, client_addr, success),
    )


async def recent_failures(
    conn: Conn, username: str, client_addr: str, window: timedelta
) -> tuple[int, int, datetime | None]:
    """Failed logins within ``window`` for the account and for the address, and the
    oldest of them (when the window frees a slot)."""
    cur = await conn.execute(
        """
        SELECT count(*) FILTER (WHERE username = %(user)s),
               count(*) FILTER (WHERE client_addr = %(addr)s),
               min(at)
        FROM login_attempt
        WHERE NOT success AND at > now() - %(window)s
          AND (username = %(user)s OR client_addr = %(addr)s)
        """,
        {"user": username, "addr": client_addr, "window": window},
    )
    row = await cur.fetchone()
    if row is None:
        return 0, 0, None
    return int(row[0]), int(row[1]), row[2]


async def prune_login_attempts(conn: Conn, older_than: timedelta) -> int:
    cur = await conn.execute("DELETE FROM login_attempt WHERE at < now() - %s", (older_than,))
    return cur.rowcount


# --- audit log ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    actor: str | None = None
    actor_id: int | None = None
    method: str | None = None
    route: str | None = None
    object_type: str | None = None
    object_key: str | None = None
    before: Any = None
    after: Any = None
    status: int | None = None
    client_addr: str | None = None
    detail: Any = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    entry: AuditEntry


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


async def write_audit(conn: Conn, entry: AuditEntry) -> None:
    await conn.execute(
        """
        INSERT INTO audit_log (actor, actor_id, action, method, route, object_type, object_key,
                               before, after, status, client_addr, detail)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            entry.actor, entry.actor_id, entry.action, entry.method, entry.route,
            entry.object_type, entry.object_key, _json(entry.before), _json(entry.after),
            entry.status, entry.client_addr, _json(entry.detail),
        ),
    )  # fmt: skip


async def read_audit(
    conn: Conn,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[AuditRow]]:
    """Total and one page of audit rows, newest first."""
    where = """
        (%(since)s::timestamptz IS NULL OR at >= %(since)s)
        AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
        AND (%(actor)s::text IS NULL OR actor = %(actor)s)
        AND (%(action)s::text IS NULL OR action = %(action)s)
    """
    params = {"since": since, "until": until, "actor": actor, "action": action}
    cur = await conn.execute(
        sql.SQL("SELECT count(*) FROM audit_log WHERE {}").format(sql.SQL(where)), params
    )
    total_row = await cur.fetchone()
    cur = await conn.execute(
        sql.SQL(
            "SELECT id, at, actor, actor_id, action, method, route, object_type, object_key,"
            " before, after, status, client_addr, detail FROM audit_log WHERE {}"
            " ORDER BY at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s"
        ).format(sql.SQL(where)),
        {**params, "limit": limit, "offset": offset},
    )
    rows = [
        AuditRow(int(r[0]), r[1], AuditEntry(
            action=str(r[4]), actor=r[2], actor_id=r[3], method=r[5], route=r[6],
            object_type=r[7], object_key=r[8], before=r[9], after=r[10], status=r[11],
            client_addr=r[12], detail=r[13],
        ))
        for r in await cur.fetchall()
    ]  # fmt: skip
    return (int(total_row[0]) if total_row else 0), rows


async def prune_audit(conn: Conn, retention_days: int) -> int:
    """Remove audit rows older than the retention; the table refuses anything younger."""
    if retention_days < MIN_AUDIT_RETENTION_DAYS:
        raise InvalidValue(
            "audit_retention_days", retention_days, f"must be at least {MIN_AUDIT_RETENTION_DAYS}"
        )
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('zhizao.audit_retention_days', %s, true)", (str(retention_days),)
        )
        cur = await conn.execute(
            "DELETE FROM audit_log WHERE at < now() - make_interval(days => %s)",
            (retention_days,),
        )
    return cur.rowcount
