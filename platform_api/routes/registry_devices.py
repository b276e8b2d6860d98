"""Devices: the equipment ledger (设备台账) of an enterprise, and across enterprises.

``/api/v1/enterprises/{credit_code}/devices`` is one enterprise's ledger;
``/api/v1/devices`` lists the devices of every enterprise in the caller's scope, with
filters by region, cluster, enterprise, type and the flags the KPIs count by (what a
cluster operator or a regional analyst reads). Both go through the kernel's scope
filter, totals included.

A device is not deleted: it leaves service on its ``decommissioned_on`` day (PATCH),
and its telemetry and KPI history stay. The same domain model as the ledger import
(:class:`zhizao.registry.Device`) validates every create and change, and the same
store writes it (``upsert_devices``), so a device is the same whether it came from a
spreadsheet or from the API. Without ``is_production_equipment`` a device of an
auxiliary type (空压机, 叉车 ...) is not production equipment, as in the import.

Moving a device to another enterprise (``enterprise`` in a PATCH) needs the right to
change both; its site, line and edge gateways stay behind (another enterprise's
gateway may not send its data). For a target the caller may not change, existing or
not, the answer is the same 422.
"""

from __future__ import annotations

from datetime import date
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
    shown,
)
from platform_api.deps import ConnDep, CurrentPrincipal, Principal
from platform_api.listing import SortParam, fetch_page, fetch_rows, order_by
from platform_api.problems import (
    ProblemError,
    field_error,
    problem_responses,
    validation_problem,
)
from platform_api.routes.registry import contains, region_query
from platform_api.routes.registry_places import line_id, site_id
from platform_api.schemas import Limit, LocalTime, Offset, Page, RequestBody
from platform_api.scope import (
    CodePath,
    CreditCodePath,
    EnterpriseRef,
    find_enterprise,
    key_of,
    readable_enterprise,
    writable_enterprise,
)
from zhizao import codes
from zhizao.access import Access
from zhizao.registry import DEVICE_TYPE_LABELS, Device, DeviceType
from zhizao.storage.connection import Conn
from zhizao.storage.registry import upsert_devices

router = APIRouter(prefix="/api/v1", tags=["registry 台账"])


class DeviceCreate(RequestBody):
    code: str = Field(description="unique in the enterprise", examples=["M04"])
    name: str = Field(min_length=1, max_length=200, examples=["立式加工中心"])
    device_type: DeviceType = Field(examples=["cnc_machine_tool"])
    site_code: str | None = Field(default=None, examples=["W1"])
    line_code: str | None = Field(default=None, examples=["L1"])
    is_production_equipment: bool | None = Field(
        default=None,
        description="生产设备; omitted: false for auxiliary types (空压机, 叉车 ...), else true",
        examples=[True],
    )
    is_nc: bool = Field(default=False, description="数控", examples=[True])
    key_process: bool = Field(default=False, description="关键工序", examples=[False])
    ideal_cycle_time_s: float | None = Field(default=None, examples=[42.5])
    commissioned_on: date | None = Field(default=None, examples=["2024-03-01"])
    decommissioned_on: date | None = Field(default=None, examples=[None])


class DeviceUpdate(RequestBody):
    """Only the fields given change; ``null`` clears an optional one."""

    enterprise: str | None = Field(
        default=None,
        description="move the device to this enterprise (you must be able to change both)",
        examples=["91330203MA2NB0002V"],
    )
    name: str | None = Field(default=None, min_length=1, max_length=200, examples=["加工中心"])
    device_type: DeviceType | None = Field(default=None, examples=["cnc_machine_tool"])
    site_code: str | None = Field(default=None, examples=["W1"])
    line_code: str | None = Field(default=None, examples=["L1"])
    is_production_equipment: bool | None = Field(default=None, examples=[True])
    is_nc: bool | None = Field(default=None, examples=[True])
    key_process: bool | None = Field(default=None, examples=[True])
    ideal_cycle_time_s: float | None = Field(default=None, examples=[40.0])
    commissioned_on: date | None = Field(default=None, examples=["2024-03-01"])
    decommissioned_on: date | None = Field(
        default=None, description="停用日期: the first day out of service", examples=["2026-12-31"]
    )


class DevicePublic(BaseModel):
    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    enterprise_name: str = Field(examples=["宁波甲模具有限公司"])
    code: str = Field(examples=["M01"])
    name: str = Field(examples=["设备M01"])
    device_type: DeviceType = Field(examples=["cnc_machine_tool"])
    device_type_label: str = Field(examples=["数控机床"])
    site_code: str | None = Field(default=None, examples=["W1"])
    site_name: str | None = Field(default=None, examples=["一号车间"])
    line_code: str | None = Field(default=None, examples=["L1"])
    line_name: str | None = Field(default=None, examples=["一号线"])
    is_production_equipment: bool = Field(examples=[True])
    is_nc: bool = Field(examples=[True])
    key_process: bool = Field(examples=[False])
    ideal_cycle_time_s: float | None = Field(default=None, examples=[30.0])
    commissioned_on: date | None = Field(default=None, examples=["2024-03-01"])
    decommissioned_on: date | None = Field(default=None, examples=[None])
    in_service: bool = Field(
        description="in service today (the enterprise's local day)", examples=[True]
    )
    edge_ids: list[str] = Field(description="edge gateways serving it", examples=[["edge-nb1"]])
    updated_at: LocalTime = Field(examples=["2026-12-03T09:00:00+08:00"])


_TODAY = "(now() AT TIME ZONE e.time_zone)::date"
_IN_SERVICE = sql.SQL(
    f"(coalesce(d.commissioned_on <= {_TODAY}, true)"
    f" AND coalesce(d.decommissioned_on > {_TODAY}, true))"
)
_SELECT = sql.SQL(
    """e.credit_code AS enterprise, e.name AS enterprise_name, e.time_zone, d.code, d.name,
    d.device_type, s.code AS site_code, s.name AS site_name, l.code AS line_code,
    l.name AS line_name, d.is_production_equipment, d.is_nc, d.key_process,
    d.ideal_cycle_time_s, d.commissioned_on, d.decommissioned_on, {} AS in_service,
    coalesce((SELECT array_agg(g.edge_id ORDER BY g.edge_id) FROM edge_device ed
              JOIN edge_gateway g ON g.id = ed.edge_pk WHERE ed.device_id = d.id),
             '{{}}') AS edge_ids,
    d.updated_at"""
).format(_IN_SERVICE)
_SOURCE = sql.SQL(
    "device d JOIN enterprise e ON e.id = d.enterprise_id"
    " LEFT JOIN site s ON s.id = d.site_id LEFT JOIN line l ON l.id = d.line_id"
)
_SORT = {
    "enterprise": sql.SQL("e.credit_code"),
    "code": sql.SQL("d.code"),
    "name": sql.SQL("d.name"),
    "device_type": sql.SQL("d.device_type"),
    "site": sql.SQL("s.code"),
    "line": sql.SQL("l.code"),
    "commissioned_on": sql.SQL("d.commissioned_on"),
    "decommissioned_on": sql.SQL("d.decommissioned_on"),
    "ideal_cycle_time_s": sql.SQL("d.ideal_cycle_time_s"),
    "updated_at": sql.SQL("d.updated_at"),
}
_UNIQUE = [sql.SQL("e.credit_code"), sql.SQL("d.code")]


def device_public(row: dict[str, Any]) -> DevicePublic:
    zone = ZoneInfo(row.pop("time_zone"))
    kind = DeviceType(row["device_type"])
    return DevicePublic(
        **{**row, "updated_at": row["updated_at"].astimezone(zone)},
        device_type_label=DEVICE_TYPE_LABELS[kind],
    )


async def _device(conn: Conn, ent: EnterpriseRef, code: str) -> DevicePublic | None:
    rows = await fetch_rows(
        conn,
        select=_SELECT,
        source=_SOURCE,
        where=[sql.SQL("d.enterprise_id = %(ent)s AND d.code = %(code)s")],
        params={"ent": ent.id, "code": code},
    )
    return device_public(rows[0]) if rows else None


def _flags(
    where: list[sql.Composable],
    params: dict[str, Any],
    *,
    device_type: DeviceType | None,
    production: bool | None,
    nc: bool | None,
    key_process: bool | None,
    in_service: bool | None,
    q: str | None,
) -> None:
    """The filters both device lists share."""
    if device_type is not None:
        where.append(sql.SQL("d.device_type = %(device_type)s"))
        params["device_type"] = device_type.value
    for column, value in (
        ("is_production_equipment", production),
        ("is_nc", nc),
        ("key_process", key_process),
    ):
        if value is not None:
            where.append(sql.SQL("d.{} = %({})s").format(sql.Identifier(column), sql.SQL(column)))
            params[column] = value
    if in_service is not None:
        where.append(_IN_SERVICE if in_service else sql.SQL("NOT {}").format(_IN_SERVICE))
    if q:
        where.append(sql.SQL("(d.code LIKE %(q)s OR d.name LIKE %(q)s)"))
        params["q"] = contains(q)


TypeFilter = Annotated[DeviceType | None, Query(description="设备类型")]
ProductionFilter = Annotated[bool | None, Query(description="生产设备")]
NcFilter = Annotated[bool | None, Query(description="数控设备")]
KeyProcessFilter = Annotated[bool | None, Query(description="关键工序")]
InServiceFilter = Annotated[bool | None, Query(description="in service today")]
TextFilter = Annotated[str | None, Query(max_length=100, description="part of code or name")]


@router.get(
    "/devices",
    response_model=Page[DevicePublic],
    summary="设备列表(跨企业) Devices of every enterprise in scope",
    responses=problem_responses(401, 422),
)
async def list_all_devices(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 50,
    offset: Offset = 0,
    sort: SortParam = None,
    region: Annotated[str | None, Query(description="enterprises in this region or below")] = None,
    cluster: Annotated[str | None, Query(max_length=64, description="enterprises of it")] = None,
    enterprise: Annotated[str | None, Query(max_length=18, description="credit code")] = None,
    device_type: TypeFilter = None,
    production: ProductionFilter = None,
    nc: NcFilter = None,
    key_process: KeyProcessFilter = None,
    in_service: InServiceFilter = None,
    q: TextFilter = None,
) -> Page[DevicePublic]:
    fragment, params = principal.visibility.enterprise_filter("e")
    where: list[sql.Composable] = [fragment]
    if (inside := region_query("region", region)) is not None:
        where.append(sql.SQL("e.region_code LIKE %(region)s"))
        params["region"] = codes.region_prefix(inside) + "%"
    if cluster is not None:
        where.append(
            sql.SQL(
                "e.id IN (SELECT ec.enterprise_id FROM enterprise_cluster ec"
                " JOIN cluster fc ON fc.id = ec.cluster_id WHERE fc.code = %(cluster)s)"
            )
        )
        params["cluster"] = cluster
    if enterprise is not None:
        where.append(sql.SQL("e.credit_code = %(enterprise)s"))
        params["enterprise"] = enterprise.strip().upper()
    _flags(where, params, device_type=device_type, production=production, nc=nc,
           key_process=key_process, in_service=in_service, q=q)  # fmt: skip
    total, rows = await fetch_page(
        conn,
        select=_SELECT,
        source=_SOURCE,
        where=where,
        params=params,
        order=order_by(sort, _SORT, default="enterprise,code", unique=_UNIQUE),
        limit=limit,
        offset=offset,
    )
    return Page[DevicePublic](
        total=total, limit=limit, offset=offset, items=[device_public(r) for r in rows]
    )


@router.get(
    "/enterprises/{credit_code}/devices",
    response_model=Page[DevicePublic],
    summary="企业设备台账 An enterprise's devices",
    responses=problem_responses(401, 404, 422),
)
async def list_devices(
    *,
    credit_code: CreditCodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 50,
    offset: Offset = 0,
    sort: SortParam = None,
    site: Annotated[str | None, Query(max_length=64, description="devices at this site")] = None,
    line: Annotated[str | None, Query(max_length=64, description="devices on this line")] = None,
    device_type: TypeFilter = None,
    production: ProductionFilter = None,
    nc: NcFilter = None,
    key_process: KeyProcessFilter = None,
    in_service: InServiceFilter = None,
    q: TextFilter = None,
) -> Page[DevicePublic]:
    ent = await readable_enterprise(conn, principal, credit_code)
    where: list[sql.Composable] = [sql.SQL("d.enterprise_id = %(ent)s")]
    params: dict[str, Any] = {"ent": ent.id}
    if site is not None:
        where.append(sql.SQL("s.code = %(site)s"))
        params["site"] = site
    if line is not None:
        where.append(sql.SQL("l.code = %(line)s"))
        params["line"] = line
    _flags(where, params, device_type=device_type, production=production, nc=nc,
           key_process=key_process, in_service=in_service, q=q)  # fmt: skip
    total, rows = await fetch_page(
        conn,
        select=_SELECT,
        source=_SOURCE,
        where=where,
        params=params,
        order=order_by(sort, _SORT, default="code", unique=_UNIQUE),
        limit=limit,
        offset=offset,
    )
    return Page[DevicePublic](
        total=total, limit=limit, offset=offset, items=[device_public(r) for r in rows]
    )


@router.get(
    "/enterprises/{credit_code}/devices/{code}",
    response_model=DevicePublic,
    summary="设备 A device",
    responses={**problem_responses(401, 404, 422), **ETAG_RESPONSE},
)
async def get_device(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    principal: CurrentPrincipal,
    conn: ConnDep,
    response: Response,
) -> DevicePublic:
    ent = await readable_enterprise(conn, principal, credit_code)
    return await shown(conn, response, DEVICE, ent, code)


def _domain(data: dict[str, Any]) -> Device:
    try:
        return Device.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc


async def _check_places(conn: Conn, ent: EnterpriseRef, device: Device) -> None:
    if device.site_code is not None and await site_id(conn, ent, device.site_code) is None:
        raise field_error(
            "body.site_code", device.site_code, "is not a site of this enterprise (POST …/sites)"
        )
    if device.line_code is not None and await line_id(conn, ent, device.line_code) is None:
        raise field_error(
            "body.line_code", device.line_code, "is not a line of this enterprise (POST …/lines)"
        )


def _audited(device: DevicePublic) -> dict[str, Any]:
    return device.model_dump(mode="json", exclude={"enterprise_name", "in_service"})


DEVICE: Kind[EnterpriseRef, DevicePublic] = Kind(
    "device",
    "device",
    "SELECT id FROM device WHERE enterprise_id = %(ent)s AND code = %(code)s FOR NO KEY UPDATE",
    _device,
    dump=_audited,
)


@router.post(
    "/enterprises/{credit_code}/devices",
    response_model=DevicePublic,
    status_code=201,
    summary="新建设备 Add a device to the ledger",
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def create_device(
    *, credit_code: CreditCodePath, body: DeviceCreate, w: WriterDep
) -> DevicePublic:
    ent = await writable_enterprise(w.conn, w.principal, credit_code)
    data = body.model_dump()
    if data["is_production_equipment"] is None:
        data["is_production_equipment"] = not body.device_type.is_auxiliary
    device = _domain({**data, "enterprise": ent.credit_code})
    await _check_places(w.conn, ent, device)
    # Claim the code first, so that a concurrent creation of the same code is a 409
    # rather than an overwrite by the store's upsert; the upsert then fills the row.
    await claim(
        w.conn,
        "INSERT INTO device (enterprise_id, code, name, device_type) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (enterprise_id, code) DO NOTHING RETURNING id",
        (ent.id, device.code, device.name, device.device_type.value),
        f"device {device.code!r} exists",
    )
    await upsert_devices(w.conn, [device])
    return await created(w, DEVICE, ent, device.code)


async def _target(
    conn: Conn, principal: Principal, source: EnterpriseRef, credit_code: str | None
) -> EnterpriseRef:
    if credit_code is None or credit_code.strip().upper() == source.credit_code:
        return source
    target = await find_enterprise(conn, principal, credit_code, Access.WRITE)
    if target is None:
        # The same answer for an enterprise that exists outside the caller's reach
        # and one that does not exist: nothing is disclosed.
        raise field_error("body.enterprise", credit_code, "is not an enterprise you may change")
    return target


@router.patch(
    "/enterprises/{credit_code}/devices/{code}",
    response_model=DevicePublic,
    summary="修改设备(含停用) Update a device, decommission it, or move it",
    responses={**problem_responses(401, 403, 404, 409, 412, 422), **ETAG_RESPONSE},
)
async def update_device(
    *,
    credit_code: CreditCodePath,
    code: CodePath,
    body: DeviceUpdate,
    w: WriterDep,
    if_match: IfMatch = None,
) -> DevicePublic:
    conn = w.conn
    ent = await writable_enterprise(conn, w.principal, credit_code)
    before = await changing(w, DEVICE, ent, code, if_match)
    change = body.model_dump(exclude_unset=True)
    target = await _target(conn, w.principal, ent, change.pop("enterprise", None))
    current = before.model_dump(
        include={
            "code", "name", "device_type", "site_code", "line_code", "is_production_equipment",
            "is_nc", "key_process", "ideal_cycle_time_s", "commissioned_on", "decommissioned_on",
        }
    )  # fmt: skip
    device = _domain({**current, **change, "enterprise": target.credit_code})
    await _check_places(conn, target, device)
    if target.id != ent.id:
        if await _device(conn, target, code) is not None:
            raise ProblemError(
                409, f"the target enterprise has a device {code!r} already", kind="conflict"
            )
        await conn.execute(
            "DELETE FROM edge_device ed USING device d"
            " WHERE ed.device_id = d.id AND d.enterprise_id = %s AND d.code = %s",
            (ent.id, code),
        )
        await conn.execute(
            "UPDATE device SET enterprise_id = %s, site_id = NULL, line_id = NULL,"
            " updated_at = now() WHERE enterprise_id = %s AND code = %s",
            (target.id, ent.id, code),
        )
    await upsert_devices(conn, [device])
    # A moved device is read where it is now, and audited under the key it had.
    return await changed(w, DEVICE, target, code, before, key=key_of(ent, code))
