"""Edge gateways (边缘网关) of an enterprise and the devices each serves.

Ingest accepts an edge's data only for the devices of its own enterprise (DESIGN §4),
so the devices an edge serves must be devices of that enterprise. An edge id is
unique platform-wide (it is the edge's MQTT identity): creating one that is taken is
a 409 that does not say whose it is. Deleting an edge stops ingest from accepting its
data; its devices stay in the ledger.
"""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Response
from psycopg import sql
from pydantic import BaseModel, Field, ValidationError

from platform_api.changes import (
    ETAG_RESPONSE,
    IfMatch,
    Kind,
    WriterDep,
    changed,
    changing,
    claim,
    created,
    deleted,
    shown,
)
from platform_api.deps import ConnDep, CurrentPrincipal
from platform_api.listing import SortParam, fetch_page, fetch_rows, order_by
from platform_api.problems import (
    field_error,
    problem_responses,
    validation_problem,
)
from platform_api.schemas import Limit, LocalTime, Offset, Page, RequestBody
from platform_api.scope import (
    CodePath,
    CreditCodePath,
    EnterpriseRef,
    readable_enterprise,
    writable_enterprise,
)
from zhizao.registry import EdgeGateway
from zhizao.storage.connection import Conn
from zhizao.storage.registry import upsert_edges

router = APIRouter(prefix="/api/v1", tags=["registry 台账"])


class EdgeCreate(RequestBody):
    edge_id: str = Field(description="unique platform-wide", examples=["edge-nb1-2"])
    name: str | None = Field(default=None, min_length=1, max_length=200, examples=["二号线网关"])
    device_codes: list[str] = Field(
        default_factory=list, max_length=10_000, examples=[["M01", "M02"]]
    )


class EdgeUpdate(RequestBody):
    name: str | None = Field(default=None, min_length=1, max_length=200, examples=["一号线网关"])
    device_codes: list[str] | None = Field(
        default=None,
        max_length=10_000,
        description="the devices it serves, replacing the list",
        examples=[["M01", "M02", "M03"]],
    )


class EdgePublic(BaseModel):
    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    edge_id: str = Field(examples=["edge-nb1"])
    name: str | None = Field(default=None, examples=["一号线网关"])
    device_codes: list[str] = Field(examples=[["M01", "M02", "M03"]])
    created_at: LocalTime = Field(examples=["2026-12-03T09:00:00+08:00"])


_SELECT = sql.SQL(
    """e.credit_code AS enterprise, e.time_zone, g.edge_id, g.name, g.created_at,
    coalesce((SELECT array_agg(d.code ORDER BY d.code) FROM edge_device ed
              JOIN device d ON d.id = ed.device_id WHERE ed.edge_pk = g.id),
             '{}') AS device_codes"""
)
_SOURCE = sql.SQL("edge_gateway g JOIN enterprise e ON e.id = g.enterprise_id")
_SORT = {
    "edge_id": sql.SQL("g.edge_id"),
    "name": sql.SQL("g.name"),
    "created_at": sql.SQL("g.created_at"),
}


def _public(row: dict[str, Any]) -> EdgePublic:
    zone = ZoneInfo(row.pop("time_zone"))
    return EdgePublic(**{**row, "created_at": row["created_at"].astimezone(zone)})


async def _edge(conn: Conn, ent: EnterpriseRef, edge_id: str) -> EdgePublic | None:
    rows = await fetch_rows(
        conn,
        select=_SELECT,
        source=_SOURCE,
        where=[sql.SQL("g.enterprise_id = %(ent)s AND g.edge_id = %(edge)s")],
        params={"ent": ent.id, "edge": edge_id},
    )
    return _public(rows[0]) if rows else None


EDGE: Kind[EnterpriseRef, EdgePublic] = Kind(
    "edge",
    "edge gateway",
    "SELECT id FROM edge_gateway WHERE enterprise_id = %(ent)s AND edge_id = %(code)s"
    " FOR NO KEY UPDATE",
    _edge,
)


async def _domain(conn: Conn, ent: EnterpriseRef, data: dict[str, Any]) -> EdgeGateway:
    codes = data.get("device_codes") or []
    data = {**data, "device_codes": tuple(dict.fromkeys(codes)), "enterprise": ent.credit_code}
    try:
        edge = EdgeGateway.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    cur = await conn.execute(
        "SELECT code FROM device WHERE enterprise_id = %s AND code = ANY(%s)",
        (ent.id, list(edge.device_codes)),
    )
    known = {str(r[0]) for r in await cur.fetchall()}
    for i, code in enumerate(codes):
        if code not in known:
            raise field_error(f"body.device_codes.{i}", code, "is not a device of this enterprise")
    return edge


@router.get(
    "/enterprises/{credit_code}/edges",
    response_model=Page[EdgePublic],
    summary="边缘网关列表 List an enterprise's edge gateways",
    responses=problem_responses(401, 404, 422),
)
async def list_edges(
    *,
    credit_code: CreditCodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: SortParam = None,
    device: Annotated[str | None, Query(max_length=64, description="edges serving it")] = None,
) -> Page[EdgePublic]:
    ent = await readable_enterprise(conn, principal, credit_code)
    where: list[sql.Composable] = [sql.SQL("g.enterprise_id = %(ent)s")]
    params: dict[str, Any] = {"ent": ent.id}
    if device is not None:
        where.append(
            sql.SQL(
                "g.id IN (SELECT ed.edge_pk FROM edge_device ed JOIN device fd"
                " ON fd.id = ed.device_id"
                " WHERE fd.code = %(device)s AND fd.enterprise_id = g.enterprise_id)"
            )
        )
        params["device"] = device
    total, rows = await fetch_page(
        conn,
        select=_SELECT,
        source=_SOURCE,
        where=where,
        params=params,
        order=order_by(sort, _SORT, default="edge_id", unique=[sql.SQL("g.edge_id")]),
        limit=limit,
        offset=offset,
    )
    return Page[EdgePublic](
        total=total, limit=limit, offset=offset, items=[_public(r) for r in rows]
    )


@router.get(
    "/enterprises/{credit_code}/edges/{edge_id}",
    response_model=EdgePublic,
    summary="边缘网关 An edge gateway",
    responses={**problem_responses(401, 404, 422), **ETAG_RESPONSE},
)
async def get_edge(
    *,
    credit_code: CreditCodePath,
    edge_id: CodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    response: Response,
) -> EdgePublic:
    ent = await readable_enterprise(conn, principal, credit_code)
    return await shown(conn, response, EDGE, ent, edge_id)


@router.post(
    "/enterprises/{credit_code}/edges",
    response_model=EdgePublic,
    status_code=201,
    summary="登记边缘网关 Register an edge gateway",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_edge(*, credit_code: CreditCodePath, body: EdgeCreate, w: WriterDep) -> EdgePublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    edge = await _domain(w.conn, ent, body.model_dump())
    # Claim the id first: the store's upsert would hand an id that another request
    # registered meanwhile over to this enterprise.
    await claim(
        w.conn,
        "INSERT INTO edge_gateway (edge_id, enterprise_id, name) VALUES (%s, %s, %s)"
        " ON CONFLICT (edge_id) DO NOTHING RETURNING id",
        (edge.edge_id, ent.id, edge.name),
        f"edge id {edge.edge_id!r} is registered",
    )
    await upsert_edges(w.conn, [edge])
    return await created(w, EDGE, ent, edge.edge_id)


@router.patch(
    "/enterprises/{credit_code}/edges/{edge_id}",
    response_model=EdgePublic,
    summary="修改边缘网关 Update an edge gateway and the devices it serves",
    responses={**problem_responses(401, 403, 404, 412, 422), **ETAG_RESPONSE},
)
async def update_edge(
    *,
    credit_code: CreditCodePath,
    edge_id: CodePath,
    body: EdgeUpdate,
    w: WriterDep,
    if_match: IfMatch = None,
) -> EdgePublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    before = await changing(w, EDGE, ent, edge_id, if_match)
    current = {"edge_id": edge_id, "name": before.name, "device_codes": before.device_codes}
    change = body.model_dump(exclude_unset=True)
    if "device_codes" in change and change["device_codes"] is None:
        change["device_codes"] = []
    edge = await _domain(w.conn, ent, {**current, **change})
    await upsert_edges(w.conn, [edge])
    return await changed(w, EDGE, ent, edge_id, before)


@router.delete(
    "/enterprises/{credit_code}/edges/{edge_id}",
    status_code=204,
    summary="注销边缘网关 Delete an edge gateway (ingest refuses its data from then on)",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_edge(*, credit_code: CreditCodePath, edge_id: CodePath, w: WriterDep) -> None:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    before = await changing(w, EDGE, ent, edge_id)
    await w.conn.execute(
        "DELETE FROM edge_gateway WHERE enterprise_id = %s AND edge_id = %s", (ent.id, edge_id)
    )
    await deleted(w, EDGE, ent, edge_id, before)
