"""Federation 联邦上报: the provincial instance receives cluster instances' signed daily
aggregates (:mod:`zhizao.federation`, docs/federation.md).

The sender is authenticated by its signature over the exact body, with the key the
province registered for it (``zhizao federation register``), not by a user's token:
a user's bearer token is neither needed nor accepted in its place. Every report
received or refused is written to the audit log, actor ``instance:<id>``.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from platform_api.audit import audit
from platform_api.deps import AdminPrincipal, ClientAddr, ConnDep
from platform_api.problems import ProblemError, problem_responses
from zhizao.federation import (
    INSTANCE_HEADER,
    MAX_REPORT_BYTES,
    SIGNATURE_HEADER,
    Refused,
    list_peers,
    receive,
)

router = APIRouter(prefix="/api/v1/federation", tags=["federation 联邦上报"])

_KINDS = {401: "unauthenticated", 403: "forbidden", 409: "conflict", 413: "too-large",
          422: "validation"}  # fmt: skip


class ReportReceipt(BaseModel):
    outcome: str = Field(description="stored, replaced (a newer revision), unchanged (a replay)"
                                     " or stale (older than the one kept)",
                         examples=["stored"])  # fmt: skip
    instance: str = Field(examples=["CL-NB-MOLD"])
    enterprise: str = Field(examples=["91330203MA2NB0001A"])
    day: str = Field(examples=["2026-03-02"])
    revision: int = Field(examples=[1])


class PeerPublic(BaseModel):
    instance: str = Field(examples=["CL-NB-MOLD"])
    name: str = Field(examples=["宁波模具产业集群平台"])
    public_key: str = Field(examples=["kL0s…="])
    regions: list[str] = Field(examples=[["330200"]])
    clusters: list[str] = Field(examples=[["NB-MOLD"]])
    disabled: bool = Field(examples=[False])


@router.post(
    "/reports",
    response_model=ReportReceipt,
    summary="接收集群实例的日汇总 Receive a cluster instance's signed daily report",
    responses=problem_responses(401, 403, 409, 413, 422),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object"},
        "example": {"format": 1, "instance": "CL-NB-MOLD", "day": "2026-03-02", "revision": 1,
                    "generated_at": "2026-03-03T01:00:00+00:00",
                    "enterprise": {"credit_code": "91330203MA2NB0001A", "name": "…",
                                   "region_code": "330203", "industry_code": "C35"},
                    "devices": {"in_service": 2, "networked": 2, "nc": 1, "key_process": 0,
                                "key_process_nc": 0},
                    "oee": {"scheduled_s": 43200.0}, "lines": {}},
    }}}},
)  # fmt: skip
async def post_report(
    request: Request,
    conn: ConnDep,
    addr: ClientAddr,
    instance: Annotated[str | None, Header(alias=INSTANCE_HEADER)] = None,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
) -> ReportReceipt:
    """One enterprise's aggregates of one day, signed by a registered instance over the
    exact body. Idempotent: the same revision again changes nothing; a newer one
    replaces the one kept. Refused: an unregistered or disabled instance, a bad
    signature (401); an enterprise outside the instance's registration (403); other
    content under a revision already received (409); a malformed body (422)."""
    body = await _read_at_most(request, MAX_REPORT_BYTES + 1)
    actor = f"instance:{instance or '?'}"
    try:
        received = await receive(conn, instance, signature, body)
    except Refused as exc:
        await conn.rollback()
        await audit(conn, request, None, "federation.refused", addr=addr, actor=actor,
                    object_type="federation_report", status=exc.status,
                    detail={"reason": exc.reason, "bytes": len(body)})  # fmt: skip
        await conn.commit()
        raise ProblemError(exc.status, exc.reason, kind=_KINDS.get(exc.status, "refused")) from exc
    report = received.report
    key = f"{report.enterprise.credit_code} {report.day} r{report.revision}"
    await audit(conn, request, None, f"federation.{received.outcome}", addr=addr, actor=actor,
                object_type="federation_report", object_key=key, status=200,
                detail={"generated_at": report.generated_at.isoformat()})  # fmt: skip
    return ReportReceipt(outcome=received.outcome, instance=report.instance,
                         enterprise=report.enterprise.credit_code, day=report.day.isoformat(),
                         revision=report.revision)  # fmt: skip


async def _read_at_most(request: Request, limit: int) -> bytes:
    """The body, but no more than ``limit`` bytes of it: a sender of a huge body gets
    its 413 without the province holding the whole of it in memory."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) >= limit:
            return bytes(body[:limit])
    return bytes(body)


@router.get("/peers", response_model=list[PeerPublic],
            summary="已登记的集群实例 Registered instances (admins)",
            responses=problem_responses(401, 403))  # fmt: skip
async def get_peers(principal: AdminPrincipal, conn: ConnDep) -> list[Any]:
    """The instances that may report, with their keys and the scope they report for."""
    return [
        PeerPublic(instance=p.instance_id, name=p.name,
                   public_key=base64.b64encode(p.public_key).decode(), regions=list(p.regions),
                   clusters=list(p.clusters), disabled=p.disabled)
        for p in await list_peers(conn)
    ]  # fmt: skip
