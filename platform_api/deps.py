"""Dependencies of the routes, with their aliases (``ConnDep``, ``CurrentPrincipal`` ...).

Authentication reads the bearer token: a JWT access token from the login route, or
a machine token (``zt_...``). The grants are the database's: a machine token's are
read on every request (its use is recorded), a user's are kept between requests
only while the database is heard announcing every change to users and grants
(:mod:`platform_api.principals`). The principal's :class:`zhizao.access.Visibility`
is made by the kernel's one function.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.security import OAuth2PasswordBearer
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from platform_api import security
from platform_api.cache import ResultCache, request_key
from platform_api.metrics import ApiMetrics
from platform_api.principals import PrincipalCache
from platform_api.problems import ProblemError
from platform_api.settings import ApiSettings
from zhizao.access import Access, Grant, Role, Visibility, visibility
from zhizao.storage.connection import Conn
from zhizao.storage.users import UserRow, record_token_use, token_by_secret, user_by_id

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


# The dependencies are coroutines although they do not wait: FastAPI runs a plain
# function dependency in a worker thread, and a dozen thread hops per request cost
# more than the database queries of a KPI under load (docs/benchmarks.md).
async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


async def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]


async def get_conn(pool: PoolDep) -> AsyncIterator[Conn]:
    """A connection for the request, in one transaction committed when the route
    returns normally (so a change and its audit row commit together)."""
    async with pool.connection() as conn:
        yield conn


ConnDep = Annotated[Conn, Depends(get_conn)]


def client_addr(request: Request, settings: ApiSettings) -> str:
    """The client's address: the socket's peer, or the last hop a trusted proxy names."""
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in settings.trusted_proxies:
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break
            if hop not in settings.trusted_proxies:
                return hop
    return peer


async def get_client_addr(request: Request, settings: SettingsDep) -> str:
    return client_addr(request, settings)


ClientAddr = Annotated[str, Depends(get_client_addr)]


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    grants: tuple[Grant, ...]
    visibility: Visibility
    token_id: int | None = None
    roles: frozenset[Role] = field(default=frozenset())

    @property
    def is_admin(self) -> bool:
        return self.visibility.admin


_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def _unauthorised(detail: str) -> ProblemError:
    return ProblemError(401, detail, kind="unauthenticated", headers=_UNAUTHENTICATED)


def session_refusal(claims: security.AccessClaims, user: UserRow | None) -> str | None:
    """Why an access token's session is over, or None while it holds."""
    if user is None or user.disabled:
        return "the account is disabled or no longer exists"
    # iat has one-second resolution: compare at that resolution.
    if claims.issued_at < user.sessions_valid_from.replace(microsecond=0):
        return "the session has ended (password changed or account disabled)"
    return None


def kept_grants(
    settings: ApiSettings, principals: PrincipalCache
) -> Callable[[str], Hashable | None]:
    """For :class:`platform_api.cache.KeptAnswers`: the grants of a valid access
    token's user when the user is kept and current, else None (the full path then
    authenticates, and answers 401 where it must)."""

    def grants_of(token: str) -> Hashable | None:
        if security.is_machine_token(token):
            return None
        try:
            claims = security.decode_access_token(settings.signing_key(), token)
        except security.InvalidToken:
            return None
        user = principals.kept(claims.user_id)
        if user is None or session_refusal(claims, user) is not None:
            return None
        return frozenset(user.grants)

    return grants_of


async def get_principals(request: Request) -> PrincipalCache:
    principals: PrincipalCache = request.app.state.principals
    return principals


async def current_principal(
    conn: ConnDep,
    settings: SettingsDep,
    principals: Annotated[PrincipalCache, Depends(get_principals)],
    addr: ClientAddr,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    if not token:
        raise _unauthorised("a bearer token is required (POST /api/v1/auth/token)")
    if security.is_machine_token(token):
        row = await token_by_secret(conn, security.machine_token_digest(token))
        now = datetime.now(UTC)
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise _unauthorised("the API token is unknown, revoked or expired")
        user = await user_by_id(conn, row.user_id)
        if user is None or user.disabled:
            raise _unauthorised("the API token's user is disabled")
        # The token acts with the grants it was made with, as far as the user still
        # holds them: revoking a user's grant narrows their tokens at once.
        held = set(user.grants)
        grants = tuple(g for g in row.grants if g in held)
        await record_token_use(conn, row.id, addr)
        return Principal(
            user.id, user.username, grants, visibility(grants), row.id,
            frozenset(g.role for g in grants),
        )  # fmt: skip
    try:
        claims = security.decode_access_token(settings.signing_key(), token)
    except security.InvalidToken as exc:
        raise _unauthorised(str(exc)) from exc
    user = await principals.user(conn, claims.user_id)
    refusal = session_refusal(claims, user)
    if refusal is not None or user is None:
        raise _unauthorised(refusal or "")
    return Principal(
        user.id, user.username, user.grants, visibility(user.grants), None,
        frozenset(g.role for g in user.grants),
    )  # fmt: skip


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise ProblemError(403, "this needs the admin role", kind="forbidden")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]


@dataclass(frozen=True)
class CachedAnswer:
    """The request's slot in the result cache: ``await cached(compute)`` answers with
    the kept figures of an identical request by a caller with the same grants, or
    with ``compute()``'s (:mod:`platform_api.cache`)."""

    cache: ResultCache
    key: object
    route: object

    async def __call__(self, compute: Callable[[], Awaitable[BaseModel]]) -> Response | BaseModel:
        return await self.cache.answer(self.key, compute, route=self.route)


async def get_cached(request: Request, principal: CurrentPrincipal) -> CachedAnswer:
    cache: ResultCache = request.app.state.result_cache
    key = request_key(request.scope, frozenset(principal.grants))
    return CachedAnswer(cache, key, request.scope.get("route"))


Cached = Annotated[CachedAnswer, Depends(get_cached)]


def cached_answer(
    endpoint: Callable[..., Awaitable[BaseModel]],
) -> Callable[..., Awaitable[Response | BaseModel]]:
    """Route decorator (below ``@router.get``): the route's answer goes through the
    result cache. The route itself is unchanged, and FastAPI still documents its
    parameters and ``response_model``; the decorator adds one dependency."""
    signature = inspect.signature(endpoint)
    slot = inspect.Parameter("cached_answer_", inspect.Parameter.KEYWORD_ONLY, annotation=Cached)

    @functools.wraps(endpoint)
    async def route(
        *args: Any, cached_answer_: CachedAnswer, **kwargs: Any
    ) -> Response | BaseModel:
        return await cached_answer_(lambda: endpoint(*args, **kwargs))

    route.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), slot]
    )
    return route


def require_raw(principal: Principal) -> None:
    """Raw process values never leave the enterprise scope (DESIGN §8)."""
    if not principal.visibility.can_raw_anything():
        raise ProblemError(
            403,
            "raw telemetry is readable only with an enterprise role"
            " (cluster and regional roles see KPIs and summaries)",
            kind="forbidden",
        )


__all__ = [
    "Access",
    "AdminPrincipal",
    "Cached",
    "ClientAddr",
    "ConnDep",
    "CurrentPrincipal",
    "MetricsDep",
    "PoolDep",
    "Principal",
    "SettingsDep",
]
