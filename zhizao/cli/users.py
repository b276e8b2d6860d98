"""``zhizao users`` and ``zhizao tokens``: accounts, grants and machine tokens.

How the first admin is made (there is no default account)::

    zhizao users create admin --grant admin          # asks for the password twice
    zhizao users create ops --grant regional_analyst:330200 --password-stdin < pw.txt

Tokens are for scripts: ``zhizao tokens create ops --name report-bot --days 30``
prints the token once.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from zhizao.access import ROLE_LABELS, Grant, parse_grant
from zhizao.cli.common import DbUrlOption, console, db_settings, fail, with_conn
from zhizao.errors import InvalidValue, ZhizaoError
from zhizao.storage import users as store
from zhizao.storage.connection import Conn

app = typer.Typer(help="Users and their roles 用户与角色.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for machines 机器令牌.", no_args_is_help=True)

GrantOption = typer.Option(
    [], "--grant", "-g",
    help="role[:scope], e.g. admin, enterprise_engineer:<credit code>, cluster_operator:<cluster>,"
         " regional_analyst:330200 (repeatable)",
)  # fmt: skip


def _grants(texts: list[str]) -> list[Grant]:
    return [parse_grant(t) for t in texts]


def _read_password(username: str, from_stdin: bool) -> str:
    from platform_api.security import password_problem

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(f"Password for {username}", hide_input=True,
                                confirmation_prompt=True)  # fmt: skip
    problem = password_problem(password, username)
    if problem:
        raise InvalidValue("password", "***", problem)
    return password


async def _user(conn: Conn, username: str) -> store.UserRow:
    user = await store.user_by_name(conn, username)
    if user is None:
        raise InvalidValue("username", username, "no such user")
    return user


async def _cli_audit(conn: Conn, action: str, username: str, **detail: object) -> None:
    # Changes made on the database host are audited too, with the OS user as actor.
    import getpass

    await store.write_audit(
        conn,
        store.AuditEntry(action=action, actor=f"cli:{getpass.getuser()}", object_type="user",
                         object_key=username, detail=detail or None, client_addr="localhost"),
    )  # fmt: skip


@app.command("create")
def create_command(
    username: str = typer.Argument(..., help="Login name."),
    grant: list[str] = GrantOption,
    full_name: str | None = typer.Option(None, "--name", help="Display name, e.g. 张伟."),
    password_stdin: bool = typer.Option(False, help="Read the password from standard input."),
    db_url: DbUrlOption = None,
) -> None:
    """Create a user 新建用户."""
    from platform_api.security import hash_password

    url = db_settings(db_url).url
    try:
        grants = _grants(grant)
        password = _read_password(username, password_stdin)

        async def job(conn: Conn) -> None:
            async with conn.transaction():
                user = await store.create_user(conn, username, hash_password(password), full_name)
                for g in grants:
                    await store.add_grant(conn, user.id, g)
                await _cli_audit(conn, "create", username, grants=[str(g) for g in grants])

        with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"created user {username} with {', '.join(map(str, grants)) or 'no roles'}")


@app.command("grant")
def grant_command(
    username: str = typer.Argument(...),
    grant: list[str] = typer.Argument(..., help="role[:scope] (one or more)"),
    db_url: DbUrlOption = None,
) -> None:
    """Give a user roles 授予角色."""
    url = db_settings(db_url).url
    try:
        grants = _grants(grant)

        async def job(conn: Conn) -> None:
            async with conn.transaction():
                user = await _user(conn, username)
                for g in grants:
                    await store.add_grant(conn, user.id, g)
                await _cli_audit(conn, "grant", username, grants=[str(g) for g in grants])

        with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"{username}: granted {', '.join(map(str, grants))}")


@app.command("revoke")
def revoke_command(
    username: str = typer.Argument(...),
    grant: list[str] = typer.Argument(..., help="role[:scope] (one or more)"),
    db_url: DbUrlOption = None,
) -> None:
    """Take roles from a user 撤销角色."""
    url = db_settings(db_url).url
    try:
        grants = _grants(grant)

        async def job(conn: Conn) -> list[str]:
            async with conn.transaction():
                user = await _user(conn, username)
                missing = [str(g) for g in grants if not await store.remove_grant(conn, user.id, g)]
                await _cli_audit(conn, "revoke", username, grants=[str(g) for g in grants])
                return missing

        missing = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    if missing:
        console.print(f"{username} did not hold: {', '.join(missing)}")
    console.print(f"{username}: revoked {', '.join(map(str, grants))}")


@app.command("disable")
def disable_command(
    username: str = typer.Argument(...),
    enable: bool = typer.Option(False, "--enable", help="Enable the account again."),
    db_url: DbUrlOption = None,
) -> None:
    """Disable (or enable) an account; its sessions end at once 停用账户."""
    url = db_settings(db_url).url

    async def job(conn: Conn) -> None:
        async with conn.transaction():
            user = await _user(conn, username)
            await store.update_user(conn, user.id, disabled=not enable)
            await _cli_audit(conn, "enable" if enable else "disable", username)

    try:
        with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"{username}: {'enabled' if enable else 'disabled'}")


@app.command("list")
def list_command(db_url: DbUrlOption = None) -> None:
    """List users and their roles 用户列表."""
    url = db_settings(db_url).url
    users = with_conn(url, store.list_users)
    table = Table("用户 user", "姓名 name", "状态 state", "角色 roles")
    for user in users:
        roles = "\n".join(
            f"{ROLE_LABELS[g.role]} {g.role.value}" + (f" {g.scope}" if g.scope else "")
            for g in user.grants
        )
        table.add_row(user.username, user.full_name or "", "停用 disabled" if user.disabled
                      else "启用 active", roles or "—")  # fmt: skip
    console.print(table)


@tokens_app.command("create")
def token_create_command(
    username: str = typer.Argument(..., help="The user the token acts for."),
    name: str = typer.Option(..., "--name", help="What the token is for, e.g. report-bot."),
    days: int = typer.Option(90, min=1, max=3650, help="Valid for this many days."),
    grant: list[str] = GrantOption,
    db_url: DbUrlOption = None,
) -> None:
    """Make a machine token; it is printed once 新建机器令牌."""
    from platform_api.security import new_machine_token

    url = db_settings(db_url).url
    try:
        wanted = _grants(grant)

        async def job(conn: Conn) -> tuple[str, store.TokenRow]:
            async with conn.transaction():
                user = await _user(conn, username)
                grants = wanted or list(user.grants)
                for g in grants:
                    if g not in user.grants:
                        raise InvalidValue("grant", str(g), f"is not held by {username}")
                secret, prefix, digest = new_machine_token()
                expires = datetime.now(UTC) + timedelta(days=days)
                row = await store.create_token(conn, user.id, name=name, prefix=prefix,
                                               secret_sha256=digest, grants=grants,
                                               expires_at=expires)  # fmt: skip
                await _cli_audit(conn, "token_create", username, token=row.id, name=name)
                return secret, row

        secret, row = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"token {row.id} for {username} ({name}), expires {row.expires_at:%Y-%m-%d}:")
    # On its own line, unstyled, so it can be copied or captured by a script.
    print(secret)


@tokens_app.command("list")
def token_list_command(
    username: str | None = typer.Argument(None, help="Only this user's."),
    db_url: DbUrlOption = None,
) -> None:
    """List machine tokens 令牌列表 (never their secrets)."""
    url = db_settings(db_url).url

    async def job(conn: Conn) -> list[store.TokenRow]:
        user_id = None if username is None else (await _user(conn, username)).id
        return await store.list_tokens(conn, user_id)

    try:
        rows = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    table = Table("id", "用户 user", "名称 name", "前缀 prefix", "到期 expires", "状态 state",
                  "最近使用 last used")  # fmt: skip
    now = datetime.now(UTC)
    for r in rows:
        state = ("吊销 revoked" if r.revoked_at else "过期 expired" if r.expires_at <= now
                 else "有效 valid")  # fmt: skip
        last = (
            ""
            if r.last_used_at is None
            else f"{r.last_used_at:%Y-%m-%d %H:%M%z} {r.last_used_from}"
        )
        table.add_row(str(r.id), r.username, r.name, r.prefix, f"{r.expires_at:%Y-%m-%d}", state,
                      last)  # fmt: skip
    console.print(table)


@tokens_app.command("revoke")
def token_revoke_command(token_id: int = typer.Argument(...), db_url: DbUrlOption = None) -> None:
    """Revoke a machine token 吊销令牌."""
    url = db_settings(db_url).url

    async def job(conn: Conn) -> bool:
        async with conn.transaction():
            done = await store.revoke_token(conn, token_id)
            if done:
                await _cli_audit(conn, "token_revoke", str(token_id))
            return done

    if not with_conn(url, job):
        raise fail(f"token {token_id} does not exist or is already revoked")
    console.print(f"token {token_id} revoked")
