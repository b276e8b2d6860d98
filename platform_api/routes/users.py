"""Users and their grants (admins), and machine tokens (each user their own).

A token is made with a subset of its user's grants and an expiry no later than
``token_max_days``; its secret is in the answer to the request that made it and
nowhere else (only a SHA-256 is stored).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, field_validator

from platform_api import security
from platform_api.audit import audit
from platform_api.deps import AdminPrincipal, ClientAddr, ConnDep, CurrentPrincipal, SettingsDep
from platform_api.problems import ProblemError, field_error, not_found, problem_responses
from platform_api.schemas import LocalTime, local
from zhizao.access import ROLE_LABELS, Grant, Role, check_grant
from zhizao.errors import InvalidValue
from zhizao.storage import users as store
from zhizao.storage.connection import Conn

router = APIRouter(prefix="/api/v1", tags=["users 用户与令牌"])

Username = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]


class GrantIn(BaseModel):
    role: Role = Field(examples=["enterprise_engineer"])
    scope: str | None = Field(
        default=None,
        max_length=18,
        description="credit code (enterprise roles), cluster code or region code; none for admin",
        examples=["91330200MA2H7XYZ4K"],
    )

    def grant(self, field: str = "body") -> Grant:
        try:
            check_grant(self.role, self.scope)
        except InvalidValue as exc:
            raise field_error(f"{field}.scope", self.scope, exc.rule) from exc
        return Grant(self.role, self.scope)


class GrantPublic(BaseModel):
    role: Role = Field(examples=["enterprise_engineer"])
    role_label: str = Field(examples=["企业工程师"])
    scope: str | None = Field(default=None, examples=["91330200MA2H7XYZ4K"])


def grant_public(grant: Grant) -> GrantPublic:
    return GrantPublic(role=grant.role, role_label=ROLE_LABELS[grant.role], scope=grant.scope)


class UserCreate(BaseModel):
    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", examples=["zhang.wei"])
    password: str = Field(min_length=1, max_length=1024, examples=["a-long-password-1"])
    full_name: str | None = Field(default=None, max_length=200, examples=["张伟"])
    grants: list[GrantIn] = Field(default_factory=list, max_length=100)


class UserUpdate(BaseModel):
    full_name: str | None = Field(default=None, max_length=200, examples=["张伟"])
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    disabled: bool | None = Field(default=None, examples=[False])


class UserPublic(BaseModel):
    username: str = Field(examples=["zhang.wei"])
    full_name: str | None = Field(default=None, examples=["张伟"])
    disabled: bool = Field(examples=[False])
    created_at: LocalTime = Field(examples=["2026-12-03T09:00:00+08:00"])
    grants: list[GrantPublic]


def user_public(
    user: store.UserRow, zone: ZoneInfo, grants: tuple[Grant, ...] | None = None
) -> UserPublic:
    return UserPublic(
        username=user.username,
        full_name=user.full_name,
        disabled=user.disabled,
        created_at=user.created_at.astimezone(zone),
        grants=[grant_public(g) for g in (user.grants if grants is None else grants)],
    )


def _audit_user(user: store.UserRow) -> dict[str, object]:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "disabled": user.disabled,
        "grants": [str(g) for g in user.grants],
    }


async def _user(conn: Conn, username: str) -> store.UserRow:
    user = await store.user_by_name(conn, username)
    if user is None:
        raise not_found("user", username)
    return user


@router.get("/users", response_model=list[UserPublic], summary="用户列表 List users",
            responses=problem_responses(401, 403))  # fmt: skip
async def list_users(request: Request, _: AdminPrincipal, conn: ConnDep) -> list[UserPublic]:
    zone = request.app.state.display_zone
    return [user_public(u, zone) for u in await store.list_users(conn)]


@router.post("/users", response_model=UserPublic, status_code=201, summary="新建用户 Create a user",
             responses=problem_responses(401, 403, 409, 422))  # fmt: skip
async def create_user(
    *,
    request: Request,
    body: UserCreate,
    principal: AdminPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
) -> UserPublic:
    problem = security.password_problem(body.password, body.username)
    if problem:
        raise field_error("body.password", "***", problem)
    grants = [g.grant(f"body.grants.{i}") for i, g in enumerate(body.grants)]
    if await store.user_by_name(conn, body.username) is not None:
        raise ProblemError(409, f"user {body.username!r} exists", kind="conflict")
    user = await store.create_user(
        conn, body.username, security.hash_password(body.password), body.full_name
    )
    for grant in grants:
        await store.add_grant(conn, user.id, grant)
    user = await _user(conn, body.username)
    await audit(conn, request, principal, "create", addr=addr, object_type="user",
                object_key=user.username, after=_audit_user(user), status=201)  # fmt: skip
    return user_public(user, request.app.state.display_zone)


@router.get("/users/{username}", response_model=UserPublic, summary="用户 A user",
            responses=problem_responses(401, 403, 404))  # fmt: skip
async def get_user(
    request: Request, username: Username, _: AdminPrincipal, conn: ConnDep
) -> UserPublic:
    return user_public(await _user(conn, username), request.app.state.display_zone)


@router.patch("/users/{username}", response_model=UserPublic, summary="修改用户 Update a user",
              responses=problem_responses(401, 403, 404, 409, 422))  # fmt: skip
async def update_user(
    *,
    request: Request,
    username: Username,
    body: UserUpdate,
    principal: AdminPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
) -> UserPublic:
    user = await _user(conn, username)
    if body.password is not None and (
        problem := security.password_problem(body.password, username)
    ):
        raise field_error("body.password", "***", problem)
    if body.disabled and Grant(Role.ADMIN) in user.grants and await store.count_admins(conn) <= 1:
        raise ProblemError(409, "the last admin cannot be disabled", kind="conflict")
    await store.update_user(
        conn, user.id, full_name=body.full_name, disabled=body.disabled,
        password_hash=None if body.password is None else security.hash_password(body.password),
    )  # fmt: skip
    after = await _user(conn, username)
    await audit(conn, request, principal, "update", addr=addr, object_type="user",
                object_key=username, before=_audit_user(user), after=_audit_user(after),
                status=200, detail={"password_changed": body.password is not None})  # fmt: skip
    return user_public(after, request.app.state.display_zone)


@router.post("/users/{username}/grants", response_model=UserPublic, status_code=201,
             summary="授予角色 Grant a role",
             responses=problem_responses(401, 403, 404, 422))  # fmt: skip
async def add_grant(
    *,
    request: Request,
    username: Username,
    body: GrantIn,
    principal: AdminPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
) -> UserPublic:
    user = await _user(conn, username)
    grant = body.grant()
    await store.add_grant(conn, user.id, grant)
    after = await _user(conn, username)
    await audit(conn, request, principal, "grant", addr=addr, object_type="user",
                object_key=username, before=_audit_user(user), after=_audit_user(after),
                status=201)  # fmt: skip
    return user_public(after, request.app.state.display_zone)


@router.delete("/users/{username}/grants", response_model=UserPublic,
               summary="撤销角色 Revoke a role",
               responses=problem_responses(401, 403, 404, 409, 422))  # fmt: skip
async def remove_grant(
    *,
    request: Request,
    username: Username,
    principal: AdminPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
    role: Annotated[Role, Query()],
    scope: Annotated[str | None, Query(max_length=18)] = None,
) -> UserPublic:
    user = await _user(conn, username)
    grant = GrantIn(role=role, scope=scope).grant("query")
    if grant not in user.grants:
        raise not_found("grant", str(grant))
    if grant.role is Role.ADMIN and await store.count_admins(conn) <= 1:
        raise ProblemError(409, "the last admin's admin role cannot be revoked", kind="conflict")
    await store.remove_grant(conn, user.id, grant)
    after = await _user(conn, username)
    await audit(conn, request, principal, "revoke", addr=addr, object_type="user",
                object_key=username, before=_audit_user(user), after=_audit_user(after),
                status=200)  # fmt: skip
    return user_public(after, request.app.state.display_zone)


# --- machine tokens -------------------------------------------------------------------


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["federation push"])
    days: int = Field(default=90, ge=1, le=3650, description="valid for this many days")
    grants: list[GrantIn] | None = Field(
        default=None,
        max_length=100,
        description="a subset of the caller's grants; all of them when omitted",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text")
        return value


class TokenPublic(BaseModel):
    id: int = Field(examples=[7])
    name: str = Field(examples=["federation push"])
    prefix: str = Field(examples=["zt_Q2x9fK"])
    username: str = Field(examples=["zhang.wei"])
    grants: list[GrantPublic]
    created_at: LocalTime
    expires_at: LocalTime
    revoked_at: LocalTime | None = None
    last_used_at: LocalTime | None = None
    last_used_from: str | None = Field(default=None, examples=["10.0.0.12"])


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret, shown this once", examples=["zt_Q2x9fK..."])


def token_public(row: store.TokenRow, zone: ZoneInfo) -> TokenPublic:
    return TokenPublic(
        id=row.id, name=row.name, prefix=row.prefix, username=row.username,
        grants=[grant_public(g) for g in row.grants],
        created_at=row.created_at.astimezone(zone), expires_at=row.expires_at.astimezone(zone),
        revoked_at=local(row.revoked_at, zone), last_used_at=local(row.last_used_at, zone),
        last_used_from=row.last_used_from,
    )  # fmt: skip


@router.get("/tokens", response_model=list[TokenPublic], summary="API 令牌 List API tokens",
            responses=problem_responses(401, 403))  # fmt: skip
async def list_tokens(
    request: Request,
    principal: CurrentPrincipal,
    conn: ConnDep,
    all_users: Annotated[bool, Query(alias="all", description="every user's (admin)")] = False,
) -> list[TokenPublic]:
    if all_users and not principal.is_admin:
        raise ProblemError(403, "every user's tokens are listed for admins only", kind="forbidden")
    rows = await store.list_tokens(conn, None if all_users else principal.user_id)
    zone = request.app.state.display_zone
    return [token_public(r, zone) for r in rows]


@router.post("/tokens", response_model=TokenCreated, status_code=201,
             summary="新建 API 令牌 Create an API token",
             responses=problem_responses(401, 403, 422))  # fmt: skip
async def create_token(
    *,
    request: Request,
    body: TokenCreate,
    principal: CurrentPrincipal,
    conn: ConnDep,
    settings: SettingsDep,
    addr: ClientAddr,
) -> TokenCreated:
    if principal.token_id is not None:
        raise ProblemError(403, "an API token cannot make tokens; log in", kind="forbidden")
    if body.days > settings.token_max_days:
        raise field_error("body.days", body.days, f"must be at most {settings.token_max_days}")
    held = set(principal.grants)
    if body.grants is None:
        grants = list(principal.grants)
    else:
        grants = [g.grant(f"body.grants.{i}") for i, g in enumerate(body.grants)]
        for i, grant in enumerate(grants):
            if grant not in held:
                raise field_error(f"body.grants.{i}", str(grant), "is not a grant you hold")
    secret, prefix, digest = security.new_machine_token()
    expires = datetime.now(UTC) + timedelta(days=body.days)
    row = await store.create_token(
        conn, principal.user_id, name=body.name, prefix=prefix, secret_sha256=digest,
        grants=grants, expires_at=expires,
    )  # fmt: skip
    await audit(conn, request, principal, "token_create", addr=addr, object_type="token",
                object_key=str(row.id),
                after={"name": row.name, "grants": [str(g) for g in grants],
                       "expires_at": expires.isoformat()}, status=201)  # fmt: skip
    public = token_public(row, request.app.state.display_zone)
    return TokenCreated(**public.model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=204, summary="吊销 API 令牌 Revoke an API token",
               responses=problem_responses(401, 403, 404))  # fmt: skip
async def revoke_token(
    *,
    request: Request,
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    principal: CurrentPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
) -> None:
    row = await store.token_by_id(conn, token_id)
    if row is None or (row.user_id != principal.user_id and not principal.is_admin):
        raise not_found("token", str(token_id))
    await store.revoke_token(conn, token_id)
    await audit(conn, request, principal, "token_revoke", addr=addr, object_type="token",
                object_key=str(token_id), status=204)  # fmt: skip
