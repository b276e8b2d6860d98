"""The audit log, read by admins (written by every login, write and export)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from platform_api.deps import AdminPrincipal, ConnDep
from platform_api.problems import problem_responses
from platform_api.schemas import Limit, LocalTime, Offset, Page
from zhizao.storage.users import read_audit

router = APIRouter(prefix="/api/v1", tags=["audit 审计"])


class AuditPublic(BaseModel):
    id: int = Field(examples=[1201])
    at: LocalTime = Field(examples=["2026-12-03T09:12:44+08:00"])
    actor: str | None = Field(default=None, examples=["zhang.wei"])
    action: str = Field(examples=["update"])
    method: str | None = Field(default=None, examples=["PATCH"])
    route: str | None = Field(default=None, examples=["/api/v1/devices/{enterprise}/{code}"])
    object_type: str | None = Field(default=None, examples=["device"])
    object_key: str | None = Field(default=None, examples=["91330200MA2H7XYZ4K/M01"])
    before: Any = None
    after: Any = None
    status: int | None = Field(default=None, examples=[200])
    client_addr: str | None = Field(default=None, examples=["10.0.0.12"])
    detail: Any = None


@router.get("/audit", response_model=Page[AuditPublic], summary="审计日志 Audit log",
            responses=problem_responses(401, 403, 422))  # fmt: skip
async def audit_log(
    *,
    request: Request,
    _: AdminPrincipal,
    conn: ConnDep,
    limit: Limit = 100,
    offset: Offset = 0,
    since: Annotated[datetime | None, Query(description="from this instant (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="before this instant")] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[AuditPublic]:
    total, rows = await read_audit(
        conn, since=since, until=until, actor=actor, action=action, limit=limit, offset=offset
    )
    zone = request.app.state.display_zone
    items = [
        AuditPublic(id=r.id, at=r.at.astimezone(zone), **{
            k: getattr(r.entry, k) for k in (
                "actor", "action", "method", "route", "object_type", "object_key", "before",
                "after", "status", "client_addr", "detail")
        })
        for r in rows
    ]  # fmt: skip
    return Page[AuditPublic](total=total, limit=limit, offset=offset, items=items)
