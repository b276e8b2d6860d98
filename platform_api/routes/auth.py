"""Login (OAuth2 password flow), the caller's own account, and its password.

The rate limit counts failed logins in the database, per account and per client
address, within a sliding window, so it holds across every API process of an
installation; a refused attempt is answered 429 with ``Retry-After`` and audited
like a failure, and it is not checked against the password at all (a guesser
learns nothing while refused).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from platform_api import security
from platform_api.audit import audit
from platform_api.deps import (
    ClientAddr,
    ConnDep,
    CurrentPrincipal,
    MetricsDep,
    Principal,
    SettingsDep,
)
from platform_api.problems import ProblemError, field_error, problem_responses
from platform_api.routes.users import UserPublic, user_public
from platform_api.schemas import LocalTime
from zhizao.storage.connection import Conn
from zhizao.storage.users import (
    UserRow,
    recent_failures,
    record_login,
    update_user,
    user_by_id,
    user_by_name,
)

router = APIRouter(prefix="/api/v1/auth", tags=["auth 认证"])


class TokenResponse(BaseModel):
    access_token: str = Field(examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."])
    token_type: str = Field(default="bearer", examples=["bearer"])
    expires_at: LocalTime = Field(examples=["2026-12-03T10:15:00+08:00"])


class PasswordChange(BaseModel):
    old_password: str = Field(min_length=1, max_length=1024, examples=["old-password-1"])
    new_password: str = Field(min_length=1, max_length=1024, examples=["a-new-long-password"])


async def _own_account(conn: Conn, principal: Principal) -> UserRow:
    user = await user_by_id(conn, principal.user_id)
    if user is None:  # deleted between authentication and here
        raise ProblemError(401, "the account no longer exists", kind="unauthenticated")
    return user


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="登录 Log in (OAuth2 password flow)",
    responses=problem_responses(401, 422, 429),
)
async def login(
    *,
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    conn: ConnDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    addr: ClientAddr,
) -> TokenResponse:
    username = form.username.strip()[:64]
    window = timedelta(seconds=settings.login_window_s)
    by_user, by_addr, oldest = await recent_failures(conn, username, addr, window)
    if by_user >= settings.login_failures_per_user or by_addr >= settings.login_failures_per_addr:
        retry = settings.login_window_s
        if oldest is not None:
            retry = max(1, math.ceil((oldest + window - datetime.now(UTC)).total_seconds()))
        counts = {"failures_user": by_user, "failures_addr": by_addr}
        await audit(conn, request, None, "login_refused", addr=addr, actor=username,
                    status=429, detail=counts)  # fmt: skip
        await conn.commit()
        metrics.logins.labels("refused").inc()
        raise ProblemError(
            429,
            f"too many failed logins; try again in {retry} s",
            kind="rate-limited",
            headers={"Retry-After": str(retry)},
        )
    user = await user_by_name(conn, username)
    ok, new_hash = security.verify_password(form.password, user.password_hash if user else None)
    if user is None or not ok or user.disabled:
        await record_login(conn, username, addr, success=False)
        reason = "unknown user" if user is None else "disabled" if ok else "wrong password"
        await audit(conn, request, None, "login_failed", addr=addr, actor=username,
                    status=401, detail={"reason": reason})  # fmt: skip
        await conn.commit()
        metrics.logins.labels("failed").inc()
        # One answer for every cause: the response does not tell which accounts exist.
        raise ProblemError(
            401, "user name or password is wrong, or the account is disabled",
            kind="unauthenticated", headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    if new_hash is not None:
        # Same password, newer parameters: not a password change, sessions stay.
        await conn.execute(
            "UPDATE app_user SET password_hash = %s WHERE id = %s", (new_hash, user.id)
        )
    await record_login(conn, username, addr, success=True)
    await audit(conn, request, None, "login", addr=addr, actor=user.username, status=200)
    metrics.logins.labels("ok").inc()
    token, expires = security.issue_access_token(
        settings.signing_key(), user.id, settings.access_token_minutes
    )
    zone = request.app.state.display_zone
    return TokenResponse(access_token=token, expires_at=expires.astimezone(zone))


@router.get(
    "/me",
    response_model=UserPublic,
    summary="当前用户 The caller's account and grants",
    responses=problem_responses(401),
)
async def me(request: Request, principal: CurrentPrincipal, conn: ConnDep) -> UserPublic:
    user = await _own_account(conn, principal)
    return user_public(user, request.app.state.display_zone, grants=principal.grants)


@router.post(
    "/password",
    status_code=204,
    summary="修改密码 Change the caller's password",
    responses=problem_responses(401, 422),
)
async def change_password(
    *,
    request: Request,
    body: PasswordChange,
    principal: CurrentPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
) -> None:
    user = await _own_account(conn, principal)
    ok, _ = security.verify_password(body.old_password, user.password_hash)
    if not ok:
        raise field_error("body.old_password", "***", "is not the current password")
    problem = security.password_problem(body.new_password, user.username)
    if problem:
        raise field_error("body.new_password", "***", problem)
    await update_user(conn, user.id, password_hash=security.hash_password(body.new_password))
    await audit(conn, request, principal, "password_change", addr=addr,
                object_type="user", object_key=user.username, status=204)  # fmt: skip
