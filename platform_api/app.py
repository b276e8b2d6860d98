"""The FastAPI application, built by :func:`create_app` from settings.

The database pool opens with the application and closes with it; a pool that
cannot reach the database at start-up does not stop the process (``/health``
answers, ``/ready`` says why it is not ready, requests get 503 problems) so that an
orchestrator can start the API before the database.

The audit log's retention runs in the background once an hour. The status board
(:mod:`platform_api.board`) is served under ``/board/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from platform_api import problems
from platform_api.board import mount_board
from platform_api.cache import KeptAnswers, ResultCache, WriteInvalidation
from platform_api.deps import kept_grants
from platform_api.metrics import ApiMetrics, MetricsMiddleware
from platform_api.principals import PrincipalCache
from platform_api.routes import (
    audit,
    auth,
    federation,
    health,
    kpi,
    ledger_import,
    registry,
    registry_calendars,
    registry_devices,
    registry_edges,
    registry_places,
    reports,
    telemetry,
    users,
)
from platform_api.settings import ApiSettings
from zhizao import __version__
from zhizao.storage.connection import APPLICATION_NAME, redact
from zhizao.storage.users import prune_audit, prune_login_attempts

log = structlog.get_logger("platform_api")

#: Routers in the order the OpenAPI document lists them.
ROUTERS = (
    health.router,
    auth.router,
    users.router,
    audit.router,
    registry.router,
    registry_places.router,
    registry_devices.router,
    registry_edges.router,
    registry_calendars.router,
    ledger_import.router,
    telemetry.router,
    kpi.router,
    reports.router,
    federation.router,
)

_HOUR_S = 3600.0
#: How long the shutdown waits for the background tasks to stop.
_STOP_S = 10.0


async def _housekeeping(pool: AsyncConnectionPool, settings: ApiSettings) -> None:
    while True:
        try:
            async with pool.connection() as conn:
                pruned = await prune_audit(conn, settings.audit_retention_days)
                await prune_login_attempts(conn, timedelta(days=30))
            if pruned:
                log.info("audit rows past retention removed", rows=pruned,
                         retention_days=settings.audit_retention_days)  # fmt: skip
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("audit retention did not run", error=str(exc)[:200])
        await asyncio.sleep(_HOUR_S)


_PROBLEM_CONTENT = {problems.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with every error as a problem detail.

    FastAPI documents validation errors as its own ``HTTPValidationError``; this API
    answers them (and every other error) as RFC 9457 problems, so the document says
    so: each 4xx/5xx response refers to ``Problem`` under ``application/problem+json``,
    every authenticated operation lists 401, and every operation under /api/v1 lists
    503 (database unreachable).
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = problems.Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas["FieldProblem"] = problems.FieldProblem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        schemas["Problem"].pop("$defs", None)
        for path, item in doc.get("paths", {}).items():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                if operation.get("security"):
                    responses.setdefault("401", {"description": "未登录 Not authenticated"})
                if path.startswith("/api/"):
                    unavailable = {"description": "数据库不可用 Database unavailable"}
                    responses.setdefault("503", unavailable)
                for status, response in responses.items():
                    if status[:1] in ("4", "5"):
                        response["content"] = _PROBLEM_CONTENT
        app.openapi_schema = doc
        return doc

    return openapi


def create_app(settings: ApiSettings, *, metrics: ApiMetrics | None = None) -> FastAPI:
    metrics = metrics or ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            settings.database.url,
            min_size=settings.database.pool_min_size,
            max_size=settings.database.pool_max_size,
            kwargs={"application_name": f"{APPLICATION_NAME}-api"},
            # A connection broken by a database restart is replaced, not handed out.
            check=AsyncConnectionPool.check_connection,
            timeout=settings.db_timeout_s,
            open=False,
        )
        await pool.open(wait=False)
        app.state.pool = pool
        tasks = [asyncio.create_task(_housekeeping(pool, settings), name="api-housekeeping")]
        if settings.principal_cache_s > 0:
            listen = principals.listen(settings.database.url)
            tasks.append(asyncio.create_task(listen, name="api-access-changes"))
        log.info("api started", db=redact(settings.database.url))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # Bounded: a background task that does not stop must not hold up the
            # shutdown (seen once in the tests: a teardown waited 300 s, cause unknown).
            _, stuck = await asyncio.wait(tasks, timeout=_STOP_S)
            for task in stuck:
                log.warning("background task did not stop; left behind", task=task.get_name())
            await pool.close()

    app = FastAPI(
        title="zhizao 智造 platform API",
        version=__version__,
        description=(
            "设备台账、遥测与 KPI(OEE、设备联网率、数控化率)。Registry, telemetry and KPIs"
            " (OEE, networking rate, NC rate), scoped to the caller's grants."
        ),
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.display_zone = ZoneInfo(settings.display_time_zone)
    cache = ResultCache(settings.result_cache_s, max_entries=settings.result_cache_entries)
    app.state.result_cache = cache
    metrics.watch_cache(cache)
    principals = PrincipalCache(settings.principal_cache_s)
    app.state.principals = principals
    problems.install(app)

    async def on_pool_timeout(request: Request, exc: Exception) -> JSONResponse:
        return problems.render(request, 503, "the database is not reachable; try again shortly",
                               kind="unavailable", headers={"Retry-After": "5"})  # fmt: skip

    async def on_db_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database error", error=str(exc)[:200], path=request.url.path)
        return problems.render(request, 503, "the database is not reachable; try again shortly",
                               kind="unavailable", headers={"Retry-After": "5"})  # fmt: skip

    app.add_exception_handler(PoolTimeout, on_pool_timeout)
    app.add_exception_handler(psycopg.OperationalError, on_db_down)
    for router in ROUTERS:
        app.include_router(router)
    # The board: static pages whose data comes from the routes above (docs/board.md).
    mount_board(app)
    # Innermost first: a kept answer is served inside the metrics and after any write
    # has emptied the cache.
    app.add_middleware(KeptAnswers, cache=cache, grants_of=kept_grants(settings, principals))
    app.add_middleware(WriteInvalidation, cache=cache)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    return app
