"""Sites (厂区/车间) and lines (产线) of an enterprise.

Read in the caller's scope; changed by the enterprise's engineers and admins
(:mod:`platform_api.scope`). A site or line may be deleted: its devices stay in the
ledger without a site or line (both are optional for a device, DESIGN §4), a line's
own shift calendar goes with it, and the audit row lists the devices left without
one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from psycopg import sql
from pydantic import BaseModel, Field, ValidationError

from platform_api.changes import (
    ETAG_RESPONSE,
    IfMatch,
    Kind,
    P,
    Writer,
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
from platform_api.problems import field_error, problem_responses, validation_problem
from platform_api.routes.registry import contains
from platform_api.schemas import Limit, Offset, Page, RequestBody
from platform_api.scope import (
    CodePath,
    CreditCodePath,
    EnterpriseRef,
    readable_enterprise,
    writable_enterprise,
)
from zhizao.registry import Line, Site
from zhizao.storage.connection import Conn

router = APIRouter(prefix="/api/v1", tags=["registry 台账"])


class SiteCreate(RequestBody):
    code: str = Field(examples=["W1"])
    name: str = Field(min_length=1, max_length=200, examples=["一号车间"])


class SiteUpdate(RequestBody):
    name: str = Field(min_length=1, max_length=200, examples=["冲压车间"])


class SitePublic(BaseModel):
    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    code: str = Field(examples=["W1"])
    name: str = Field(examples=["一号车间"])
    devices: int = Field(description="devices at this site", examples=[12])


class LineCreate(RequestBody):
    code: str = Field(examples=["L2"])
    name: str = Field(min_length=1, max_length=200, examples=["二号线"])
    site_code: str | None = Field(default=None, examples=["W1"])


class LineUpdate(RequestBody):
    name: str | None = Field(default=None, min_length=1, max_length=200, examples=["装配二线"])
    site_code: str | None = Field(
        default=None, description="null: the line belongs to no site", examples=["W1"]
    )


class LinePublic(BaseModel):
    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    code: str = Field(examples=["L1"])
    name: str = Field(examples=["一号线"])
    site_code: str | None = Field(default=None, examples=["W1"])
    devices: int = Field(description="devices on this line", examples=[8])
    has_calendar: bool = Field(
        description="the line has a shift calendar of its own", examples=[False]
    )


_SITE_SELECT = sql.SQL(
    "e.credit_code AS enterprise, s.code, s.name,"
    " (SELECT count(*) FROM device d WHERE d.site_id = s.id) AS devices"
)
_SITE_SOURCE = sql.SQL("site s JOIN enterprise e ON e.id = s.enterprise_id")
_LINE_SELECT = sql.SQL(
    "e.credit_code AS enterprise, l.code, l.name, ls.code AS site_code,"
    " (SELECT count(*) FROM device d WHERE d.line_id = l.id) AS devices,"
    " EXISTS (SELECT 1 FROM shift_calendar k WHERE k.line_id = l.id) AS has_calendar"
)
_LINE_SOURCE = sql.SQL(
    "line l JOIN enterprise e ON e.id = l.enterprise_id LEFT JOIN site ls ON ls.id = l.site_id"
)
_SITE_SORT = {"code": sql.SQL("s.code"), "name": sql.SQL("s.name")}
_LINE_SORT = {"code": sql.SQL("l.code"), "name": sql.SQL("l.name"), "site": sql.SQL("ls.code")}


async def site_id(conn: Conn, ent: EnterpriseRef, code: str) -> int | None:
    cur = await conn.execute(
        "SELECT id FROM site WHERE enterprise_id = %s AND code = %s", (ent.id, code)
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def line_id(conn: Conn, ent: EnterpriseRef, code: str) -> int | None:
    cur = await conn.execute(
        "SELECT id FROM line WHERE enterprise_id = %s AND code = %s", (ent.id, code)
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _site(conn: Conn, ent: EnterpriseRef, code: str) -> SitePublic | None:
    rows = await fetch_rows(
        conn,
        select=_SITE_SELECT,
        source=_SITE_SOURCE,
        where=[sql.SQL("s.enterprise_id = %(ent)s AND s.code = %(code)s")],
        params={"ent": ent.id, "code": code},
    )
    return SitePublic(**rows[0]) if rows else None


async def line_public(conn: Conn, ent: EnterpriseRef, code: str) -> LinePublic | None:
    rows = await fetch_rows(
        conn,
        select=_LINE_SELECT,
        source=_LINE_SOURCE,
        where=[sql.SQL("l.enterprise_id = %(ent)s AND l.code = %(code)s")],
        params={"ent": ent.id, "code": code},
    )
    return LinePublic(**rows[0]) if rows else None


SITE: Kind[EnterpriseRef, SitePublic] = Kind(
    "site",
    "site",
    "SELECT id FROM site WHERE enterprise_id = %(ent)s AND code = %(code)s FOR NO KEY UPDATE",
    _site,
)
LINE: Kind[EnterpriseRef, LinePublic] = Kind(
    "line",
    "line",
    "SELECT id FROM line WHERE enterprise_id = %(ent)s AND code = %(code)s FOR NO KEY UPDATE",
    line_public,
)


# --- sites -----------------------------------------------------------------------------


@router.get(
    "/enterprises/{credit_code}/sites",
    response_model=Page[SitePublic],
    summary="厂区/车间列表 List an enterprise's sites",
    responses=problem_responses(401, 404, 422),
)
async def list_sites(
    *,
    credit_code: CreditCodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: SortParam = None,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
) -> Page[SitePublic]:
    ent = await readable_enterprise(conn, principal, credit_code)
    where: list[sql.Composable] = [sql.SQL("s.enterprise_id = %(ent)s")]
    params: dict[str, Any] = {"ent": ent.id}
    if q:
        where.append(sql.SQL("s.name LIKE %(q)s"))
        params["q"] = contains(q)
    total, rows = await fetch_page(
        conn,
        select=_SITE_SELECT,
        source=_SITE_SOURCE,
        where=where,
        params=params,
        order=order_by(sort, _SITE_SORT, default="code", unique=[sql.SQL("s.code")]),
        limit=limit,
        offset=offset,
    )
    return Page[SitePublic](
        total=total, limit=limit, offset=offset, items=[SitePublic(**r) for r in rows]
    )


@router.get(
    "/enterprises/{credit_code}/sites/{code}",
    response_model=SitePublic,
    summary="厂区/车间 A site",
    responses={**problem_responses(401, 404, 422), **ETAG_RESPONSE},
)
async def get_site(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    response: Response,
) -> SitePublic:
    ent = await readable_enterprise(conn, principal, credit_code)
    return await shown(conn, response, SITE, ent, code)


@router.post(
    "/enterprises/{credit_code}/sites",
    response_model=SitePublic,
    status_code=201,
    summary="新建厂区/车间 Create a site",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_site(*, credit_code: CreditCodePath, body: SiteCreate, w: WriterDep) -> SitePublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    try:
        site = Site(enterprise=ent.credit_code, code=body.code, name=body.name)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    await claim(
        w.conn,
        "INSERT INTO site (enterprise_id, code, name) VALUES (%s, %s, %s)"
        " ON CONFLICT (enterprise_id, code) DO NOTHING RETURNING id",
        (ent.id, site.code, site.name),
        f"site {site.code!r} exists",
    )
    return await created(w, SITE, ent, site.code)


@router.patch(
    "/enterprises/{credit_code}/sites/{code}",
    response_model=SitePublic,
    summary="修改厂区/车间 Rename a site",
    responses={**problem_responses(401, 403, 404, 412, 422), **ETAG_RESPONSE},
)
async def update_site(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    body: SiteUpdate,
    w: WriterDep,
    if_match: IfMatch = None,
) -> SitePublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    before = await changing(w, SITE, ent, code, if_match)
    try:
        site = Site(enterprise=ent.credit_code, code=code, name=body.name)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    await w.conn.execute(
        "UPDATE site SET name = %s WHERE enterprise_id = %s AND code = %s",
        (site.name, ent.id, code),
    )
    return await changed(w, SITE, ent, code, before)


async def _delete_place(
    w: Writer, kind: Kind[EnterpriseRef, P], credit_code: str, code: str
) -> None:
    """Delete a site or a line; its devices stay without one (``site_id`` or
    ``line_id`` becomes NULL), and the audit row lists them."""
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    before = await changing(w, kind, ent, code)
    # ``kind.name`` is "site" or "line", literals of this module, never input.
    table, column = sql.Identifier(kind.name), sql.Identifier(f"{kind.name}_id")
    cur = await w.conn.execute(
        sql.SQL("SELECT id FROM {} WHERE enterprise_id = %s AND code = %s").format(table),
        (ent.id, code),
    )
    pk = (await cur.fetchone() or (None,))[0]
    cur = await w.conn.execute(
        sql.SQL("SELECT code FROM device WHERE {} = %s ORDER BY code").format(column), (pk,)
    )
    devices = [str(r[0]) for r in await cur.fetchall()]
    # A line's devices get line_id NULL (ON DELETE SET NULL), which the rollup trigger
    # notes: their scheduled time follows the enterprise's calendar from now on.
    await w.conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(table), (pk,))
    await deleted(w, kind, ent, code, before, detail={f"devices_left_without_{kind.name}": devices})


@router.delete(
    "/enterprises/{credit_code}/sites/{code}",
    status_code=204,
    summary="删除厂区/车间 Delete a site (its devices and lines stay, without a site)",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_site(*, credit_code: CreditCodePath, code: CodePath, w: WriterDep) -> None:
    await _delete_place(w, SITE, credit_code, code)


# --- lines -----------------------------------------------------------------------------


@router.get(
    "/enterprises/{credit_code}/lines",
    response_model=Page[LinePublic],
    summary="产线列表 List an enterprise's lines",
    responses=problem_responses(401, 404, 422),
)
async def list_lines(
    *,
    credit_code: CreditCodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: SortParam = None,
    site: Annotated[str | None, Query(max_length=64, description="lines of this site")] = None,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
) -> Page[LinePublic]:
    ent = await readable_enterprise(conn, principal, credit_code)
    where: list[sql.Composable] = [sql.SQL("l.enterprise_id = %(ent)s")]
    params: dict[str, Any] = {"ent": ent.id}
    if site is not None:
        where.append(sql.SQL("ls.code = %(site)s"))
        params["site"] = site
    if q:
        where.append(sql.SQL("l.name LIKE %(q)s"))
        params["q"] = contains(q)
    total, rows = await fetch_page(
        conn,
        select=_LINE_SELECT,
        source=_LINE_SOURCE,
        where=where,
        params=params,
        order=order_by(sort, _LINE_SORT, default="code", unique=[sql.SQL("l.code")]),
        limit=limit,
        offset=offset,
    )
    return Page[LinePublic](
        total=total, limit=limit, offset=offset, items=[LinePublic(**r) for r in rows]
    )


@router.get(
    "/enterprises/{credit_code}/lines/{code}",
    response_model=LinePublic,
    summary="产线 A line",
    responses={**problem_responses(401, 404, 422), **ETAG_RESPONSE},
)
async def get_line(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    response: Response,
) -> LinePublic:
    ent = await readable_enterprise(conn, principal, credit_code)
    return await shown(conn, response, LINE, ent, code)


async def _site_of(conn: Conn, ent: EnterpriseRef, code: str | None) -> int | None:
    if code is None:
        return None
    pk = await site_id(conn, ent, code)
    if pk is None:
        raise field_error("body.site_code", code, "is not a site of this enterprise")
    return pk


@router.post(
    "/enterprises/{credit_code}/lines",
    response_model=LinePublic,
    status_code=201,
    summary="新建产线 Create a line",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_line(*, credit_code: CreditCodePath, body: LineCreate, w: WriterDep) -> LinePublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    try:
        line = Line(enterprise=ent.credit_code, **body.model_dump())
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    site_pk = await _site_of(w.conn, ent, line.site_code)
    await claim(
        w.conn,
        "INSERT INTO line (enterprise_id, code, name, site_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (enterprise_id, code) DO NOTHING RETURNING id",
        (ent.id, line.code, line.name, site_pk),
        f"line {line.code!r} exists",
    )
    return await created(w, LINE, ent, line.code)


@router.patch(
    "/enterprises/{credit_code}/lines/{code}",
    response_model=LinePublic,
    summary="修改产线 Update a line",
    responses={**problem_responses(401, 403, 404, 412, 422), **ETAG_RESPONSE},
)
async def update_line(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    body: LineUpdate,
    w: WriterDep,
    if_match: IfMatch = None,
) -> LinePublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    before = await changing(w, LINE, ent, code, if_match)
    current = {"name": before.name, "site_code": before.site_code}
    try:
        line = Line(
            enterprise=ent.credit_code,
            code=code,
            **{**current, **body.model_dump(exclude_unset=True)},
        )
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    site_pk = await _site_of(w.conn, ent, line.site_code)
    await w.conn.execute(
        "UPDATE line SET name = %s, site_id = %s WHERE enterprise_id = %s AND code = %s",
        (line.name, site_pk, ent.id, code),
    )
    return await changed(w, LINE, ent, code, before)


@router.delete(
    "/enterprises/{credit_code}/lines/{code}",
    status_code=204,
    summary="删除产线 Delete a line (its devices stay, without a line)",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_line(*, credit_code: CreditCodePath, code: CodePath, w: WriterDep) -> None:
    await _delete_place(w, LINE, credit_code, code)
