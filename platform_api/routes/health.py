"""Liveness, readiness and Prometheus metrics (outside /api/v1, unauthenticated).

``/health`` answers while the process serves; ``/ready`` only when the database is
reachable and at this code's schema version (a load balancer sends no traffic to a
process that would fail every request).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from platform_api.deps import MetricsDep, PoolDep
from zhizao.storage.migrate import required_version

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Ready(BaseModel):
    ready: bool = Field(examples=[True])
    database: str = Field(examples=["ok"])
    schema_version: int | None = Field(default=None, examples=[10])
    expected_version: int = Field(examples=[10])


@router.get("/health", response_model=Health, summary="存活 Liveness")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Ready,
    summary="就绪 Readiness",
    responses={503: {"model": Ready, "description": "database unreachable or not migrated"}},
)
async def ready(pool: PoolDep) -> Any:
    expected = required_version()
    try:
        async with pool.connection(timeout=2.0) as conn:
            cur = await conn.execute("SELECT max(version) FROM schema_migration")
            row = await cur.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its reason
        body = Ready(ready=False, database=f"unavailable: {type(exc).__name__}",
                     expected_version=expected)  # fmt: skip
        return JSONResponse(body.model_dump(), status_code=503)
    version = int(row[0]) if row and row[0] is not None else None
    ok = version == expected
    body = Ready(
        ready=ok,
        database="ok" if ok else "schema version differs: run zhizao db upgrade",
        schema_version=version,
        expected_version=expected,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus 指标 metrics", response_class=Response)
async def metrics(m: MetricsDep, pool: PoolDep) -> Response:
    stats = pool.get_stats()
    m.pool_size.set(stats.get("pool_size", 0))
    m.pool_available.set(stats.get("pool_available", 0))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
