"""Shift calendars (班次日历) of an enterprise and of its lines (zhizao/calendar.py).

An enterprise has at most one calendar of its own and each line at most one; a
line's replaces the enterprise's for its devices, and without either every instant
is scheduled. ``GET …/calendar`` answers the calendar that *applies* (``source``
says whose it is, ``none`` when there is none), so a reader need not know that rule.
``PUT`` stores a calendar whole and ``DELETE`` removes the scope's own calendar
(204 whether or not it had one: afterwards it has none). Either marks the rollups of
the devices concerned, so OEE follows the new schedule on the next rollup run.

Times are the enterprise's local wall-clock times; validation is
:class:`zhizao.calendar.ShiftCalendar`'s, as for a calendar file.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from platform_api.audit import audit_change
from platform_api.changes import ETAG_RESPONSE, IfMatch, Writer, WriterDep, precondition, tagged
from platform_api.deps import ConnDep, CurrentPrincipal
from platform_api.listing import SortParam, fetch_page, order_by
from platform_api.problems import not_found, problem_responses, validation_problem
from platform_api.routes.registry_places import line_id
from platform_api.schemas import Limit, LocalTime, Offset, Page, RequestBody
from platform_api.scope import (
    CodePath,
    CreditCodePath,
    EnterpriseRef,
    key_of,
    readable_enterprise,
    writable_enterprise,
)
from zhizao.calendar import WORKWEEK, Clock, ShiftCalendar, Weekday
from zhizao.storage.connection import Conn
from zhizao.storage.rollups import delete_calendar, store_calendars

router = APIRouter(prefix="/api/v1", tags=["registry 台账"])

ClockField = Annotated[Clock, Field(description="local time, HH:MM", examples=["08:00"])]


class BreakBody(RequestBody):
    start: ClockField
    end: ClockField
    name: str | None = Field(default=None, examples=["午休"])


class ShiftBody(RequestBody):
    name: str = Field(min_length=1, max_length=64, examples=["白班"])
    start: ClockField
    end: Annotated[Clock, Field(description="at or before start: the next day", examples=["17:00"])]
    days: list[Weekday] = Field(
        default_factory=lambda: list(WORKWEEK),
        description="weekdays on which the shift starts",
        examples=[["mon", "tue", "wed", "thu", "fri"]],
    )
    breaks: list[BreakBody] = Field(
        default_factory=list, examples=[[{"start": "12:00", "end": "13:00", "name": "午休"}]]
    )


class HolidayBody(RequestBody):
    """One day (``date``) or a range (``from`` … ``to``, inclusive) without shifts."""

    model_config = ConfigDict(populate_by_name=True)

    name: str | None = Field(default=None, examples=["国庆节"])
    day: date | None = Field(default=None, alias="date", examples=["2026-10-01"])
    first: date | None = Field(default=None, alias="from", examples=["2026-10-01"])
    last: date | None = Field(default=None, alias="to", examples=["2026-10-07"])


class WorkdayBody(RequestBody):
    """A make-up working day (调休) worked with the shifts of weekday ``as``."""

    model_config = ConfigDict(populate_by_name=True)

    day: date = Field(alias="date", examples=["2026-10-10"])
    as_weekday: Weekday = Field(default=Weekday.MON, alias="as", examples=["fri"])
    name: str | None = Field(default=None, examples=["国庆调休"])


class CalendarIn(RequestBody):
    name: str = Field(min_length=1, max_length=200, examples=["两班制 2026"])
    shifts: list[ShiftBody] = Field(min_length=1, max_length=50)
    holidays: list[HolidayBody] = Field(default_factory=list, max_length=1000)
    workdays: list[WorkdayBody] = Field(default_factory=list, max_length=1000)


Source = Literal["line", "enterprise", "none"]
_SOURCE_LABELS: dict[str, str] = {
    "line": "产线日历 the line's own calendar",
    "enterprise": "企业日历 the enterprise's calendar",
    "none": "无日历: 全天计划 no calendar: every instant is scheduled",
}


class CalendarPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    line: str | None = Field(default=None, description="the line asked about", examples=["L1"])
    source: Source = Field(description="whose calendar applies", examples=["enterprise"])
    source_label: str = Field(examples=["企业日历 the enterprise's calendar"])
    name: str | None = Field(default=None, examples=["两班制 2026"])
    shifts: list[ShiftBody] = Field(default_factory=list)
    holidays: list[HolidayBody] = Field(default_factory=list)
    workdays: list[WorkdayBody] = Field(default_factory=list)
    updated_at: LocalTime | None = Field(default=None, examples=["2026-12-03T09:00:00+08:00"])


def _public(
    ent: EnterpriseRef, line: str | None, source: Source, row: tuple[Any, ...] | None
) -> CalendarPublic:
    if row is None:
        return CalendarPublic(
            enterprise=ent.credit_code,
            line=line,
            source="none",
            source_label=_SOURCE_LABELS["none"],
        )
    definition, updated_at = row
    calendar = ShiftCalendar.model_validate(
        definition if isinstance(definition, dict) else json.loads(definition)
    )
    body = calendar.model_dump(by_alias=True, exclude={"enterprise", "line"})
    return CalendarPublic(
        enterprise=ent.credit_code,
        line=line,
        source=source,
        source_label=_SOURCE_LABELS[source],
        updated_at=updated_at.astimezone(ent.zone),
        **body,
    )


async def _stored(conn: Conn, ent: EnterpriseRef, line_pk: int | None) -> tuple[Any, ...] | None:
    cur = await conn.execute(
        "SELECT definition, updated_at FROM shift_calendar"
        " WHERE enterprise_id = %s AND line_id IS NOT DISTINCT FROM %s::int",
        (ent.id, line_pk),
    )
    return await cur.fetchone()


async def _line_pk(conn: Conn, ent: EnterpriseRef, code: str) -> int:
    pk = await line_id(conn, ent, code)
    if pk is None:
        raise not_found("line", code)
    return pk


def _domain(ent: EnterpriseRef, line: str | None, body: CalendarIn) -> ShiftCalendar:
    try:
        return ShiftCalendar.model_validate(
            {
                "enterprise": ent.credit_code,
                "line": line,
                **body.model_dump(by_alias=True, exclude_none=True),
            }
        )
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def _audited(calendar: CalendarPublic) -> dict[str, Any] | None:
    if calendar.source == "none":
        return None
    return calendar.model_dump(mode="json", by_alias=True, exclude={"source_label"})


_LIST_SORT = {
    "line": sql.SQL("coalesce(l.code, '')"),  # the enterprise's own first
    "name": sql.SQL("k.name"),
    "updated_at": sql.SQL("k.updated_at"),
}


@router.get(
    "/enterprises/{credit_code}/calendars",
    response_model=Page[CalendarPublic],
    summary="班次日历列表 The enterprise's calendar and its lines' calendars",
    responses=problem_responses(401, 404, 422),
)
async def list_calendars(
    *,
    credit_code: CreditCodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: SortParam = None,
) -> Page[CalendarPublic]:
    ent = await readable_enterprise(conn, principal, credit_code)
    total, rows = await fetch_page(
        conn,
        select=sql.SQL("l.code AS line, k.definition, k.updated_at"),
        source=sql.SQL("shift_calendar k LEFT JOIN line l ON l.id = k.line_id"),
        where=[sql.SQL("k.enterprise_id = %(ent)s")],
        params={"ent": ent.id},
        order=order_by(sort, _LIST_SORT, default="line", unique=[sql.SQL("k.id")]),
        limit=limit,
        offset=offset,
    )
    items = [
        _public(
            ent,
            r["line"],
            "line" if r["line"] else "enterprise",
            (r["definition"], r["updated_at"]),
        )
        for r in rows
    ]
    return Page[CalendarPublic](total=total, limit=limit, offset=offset, items=items)


@router.get(
    "/enterprises/{credit_code}/calendar",
    response_model=CalendarPublic,
    summary="企业班次日历 The enterprise's calendar",
    responses={**ETAG_RESPONSE, **problem_responses(401, 404, 422)},
)
async def get_enterprise_calendar(
    *, credit_code: CreditCodePath, principal: CurrentPrincipal, conn: ConnDep, response: Response
) -> CalendarPublic:
    ent = await readable_enterprise(conn, principal, credit_code)
    return tagged(response, await _shown(conn, ent, None))


@router.get(
    "/enterprises/{credit_code}/lines/{code}/calendar",
    response_model=CalendarPublic,
    summary="产线适用的班次日历 The calendar that applies to a line",
    responses={**ETAG_RESPONSE, **problem_responses(401, 404, 422)},
)
async def get_line_calendar(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    response: Response,
) -> CalendarPublic:
    ent = await readable_enterprise(conn, principal, credit_code)
    return tagged(response, await _shown(conn, ent, code))


async def _shown(conn: Conn, ent: EnterpriseRef, line: str | None) -> CalendarPublic:
    """What a GET of the calendar shows (a line without its own: the enterprise's)."""
    if line is None:
        return _public(ent, None, "enterprise", await _stored(conn, ent, None))
    own = await _stored(conn, ent, await _line_pk(conn, ent, line))
    if own is not None:
        return _public(ent, line, "line", own)
    return _public(ent, line, "enterprise", await _stored(conn, ent, None))


async def _put(
    w: Writer, ent: EnterpriseRef, line: str | None, body: CalendarIn, if_match: str | None
) -> CalendarPublic:
    line_pk = None if line is None else await _line_pk(w.conn, ent, line)
    calendar = _domain(ent, line, body)
    # One change of a calendar at a time (its row may not exist yet: no row lock), so
    # that If-Match compares against what the change replaces.
    await w.conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"calendar:{ent.id}:{line_pk}",),
    )
    precondition(if_match, await _shown(w.conn, ent, line), "calendar")
    source: Source = "enterprise" if line is None else "line"
    before = _public(ent, line, source, await _stored(w.conn, ent, line_pk))
    await store_calendars(w.conn, [calendar])
    after = _public(ent, line, source, await _stored(w.conn, ent, line_pk))
    await _audit(w, ent, line, "update" if before.source != "none" else "create", before,
                 after=after, status=200)  # fmt: skip
    return tagged(w.response, after)


async def _delete(w: Writer, ent: EnterpriseRef, line: str | None) -> None:
    line_pk = None if line is None else await _line_pk(w.conn, ent, line)
    source: Source = "enterprise" if line is None else "line"
    before = _public(ent, line, source, await _stored(w.conn, ent, line_pk))
    removed = await delete_calendar(w.conn, ent.id, line_pk)
    await _audit(w, ent, line, "delete", before, detail={"removed": removed})


async def _audit(
    w: Writer,
    ent: EnterpriseRef,
    line: str | None,
    action: str,
    before: CalendarPublic,
    *,
    after: CalendarPublic | None = None,
    status: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await audit_change(
        w.conn, w.request, w.principal, action, addr=w.addr, object_type="calendar",
        object_key=key_of(ent, line) if line else ent.credit_code, before=before, after=after,
        dump=_audited, status=status, detail=detail,
    )  # fmt: skip


@router.put(
    "/enterprises/{credit_code}/calendar",
    response_model=CalendarPublic,
    summary="设置企业班次日历 Set the enterprise's calendar",
    responses={**ETAG_RESPONSE, **problem_responses(401, 403, 404, 412, 422)},
)
async def put_enterprise_calendar(
    *, credit_code: CreditCodePath, body: CalendarIn, w: WriterDep, if_match: IfMatch = None
) -> CalendarPublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    return await _put(w, ent, None, body, if_match)


@router.delete(
    "/enterprises/{credit_code}/calendar",
    status_code=204,
    summary="删除企业班次日历 Remove the enterprise's calendar",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_enterprise_calendar(*, credit_code: CreditCodePath, w: WriterDep) -> None:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    await _delete(w, ent, None)


@router.put(
    "/enterprises/{credit_code}/lines/{code}/calendar",
    response_model=CalendarPublic,
    summary="设置产线班次日历 Set a line's own calendar",
    responses={**ETAG_RESPONSE, **problem_responses(401, 403, 404, 412, 422)},
)
async def put_line_calendar(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    body: CalendarIn,
    w: WriterDep,
    if_match: IfMatch = None,
) -> CalendarPublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    return await _put(w, ent, code, body, if_match)


@router.delete(
    "/enterprises/{credit_code}/lines/{code}/calendar",
    status_code=204,
    summary="删除产线班次日历 Remove a line's own calendar (the enterprise's applies)",
    responses=problem_responses(401, 403, 404, 422),
)
async def delete_line_calendar(
    *, credit_code: CreditCodePath, code: CodePath, w: WriterDep
) -> None:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    await _delete(w, ent, code)
