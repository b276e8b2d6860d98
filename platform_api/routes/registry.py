"""The registry's top: regions, industrial clusters and enterprises (DESIGN §4).

Regions are public reference data: every authenticated user may read them. Clusters
and enterprises are read through the caller's scope (``cluster_filter``,
``enterprise_filter``); all three are created and changed by admins only. There is
no DELETE: an enterprise carries its devices' telemetry and KPI history, and
regions and clusters are referred to by enterprises and grants.

Writes go through the same store as the ledger import (``zhizao.storage.registry``)
and the same domain models (``zhizao.registry``), so the API and a spreadsheet obey
the same rules: codes, the GB 32100 check character, GB/T 2260 regions, GB/T 4754
industries, IANA time zones.
"""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query, Response
from psycopg import sql
from pydantic import BaseModel, Field, ValidationError

from platform_api.changes import (
    ETAG_RESPONSE,
    IfMatch,
    Kind,
    WriterDep,
    changed,
    changing,
    created,
    shown,
    tagged,
)
from platform_api.deps import AdminPrincipal, ConnDep, CurrentPrincipal, Principal
from platform_api.listing import SortParam, fetch_page, fetch_rows, order_by
from platform_api.problems import (
    ProblemError,
    field_error,
    not_found,
    problem_responses,
    validation_problem,
)
from platform_api.schemas import Limit, LocalTime, Offset, Page, RequestBody
from platform_api.scope import CreditCodePath, readable_enterprise
from zhizao import codes
from zhizao.errors import InvalidValue
from zhizao.registry import Cluster, Code, Enterprise, Region
from zhizao.storage.connection import Conn
from zhizao.storage.registry import upsert_clusters, upsert_enterprises, upsert_regions

router = APIRouter(prefix="/api/v1", tags=["registry 台账"])

RegionPath = Annotated[str, Path(pattern=r"^\d{6}$", examples=["330203"])]
ClusterPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$", examples=["NB-MOLD"])
]

LEVEL_LABELS = {
    codes.RegionLevel.PROVINCE: "省 province",
    codes.RegionLevel.CITY: "市 city",
    codes.RegionLevel.COUNTY: "区县 county",
}


def region_query(name: str, value: str | None) -> str | None:
    """A region code of a query parameter, or a 422 naming the parameter."""
    if value is None:
        return None
    try:
        return codes.validate_region_code(value)
    except InvalidValue as exc:
        raise field_error(f"query.{name}", value, exc.rule) from exc


def industry_query(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return codes.validate_industry_code(value)
    except InvalidValue as exc:
        raise field_error("query.industry", value, exc.rule) from exc


def contains(value: str) -> str:
    """A LIKE pattern matching ``value`` anywhere, its wildcards taken literally."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# --- regions ---------------------------------------------------------------------------


class RegionCreate(RequestBody):
    code: str = Field(description="GB/T 2260 six-digit code", examples=["320000"])
    name: str = Field(min_length=1, max_length=200, examples=["江苏省"])


class RegionUpdate(RequestBody):
    name: str = Field(min_length=1, max_length=200, examples=["鄞州区"])


class RegionPublic(BaseModel):
    code: str = Field(examples=["330203"])
    name: str = Field(examples=["海曙区"])
    level: codes.RegionLevel = Field(examples=["county"])
    level_label: str = Field(examples=["区县 county"])
    parent_code: str | None = Field(default=None, examples=["330200"])


def region_public(row: dict[str, Any]) -> RegionPublic:
    level = codes.RegionLevel(row["level"])
    return RegionPublic(
        code=row["code"],
        name=row["name"],
        level=level,
        level_label=LEVEL_LABELS[level],
        parent_code=row["parent_code"],
    )


_REGION_SORT = {
    "code": sql.SQL("r.code"),
    "name": sql.SQL("r.name"),
    "level": sql.SQL("array_position(ARRAY['province','city','county'], r.level)"),
}
_REGION_SOURCE = sql.SQL("region r")
_REGION_SELECT = sql.SQL("r.code, r.name, r.level, r.parent_code")


async def _region(conn: Conn, code: str) -> RegionPublic | None:
    rows = await fetch_rows(
        conn,
        select=_REGION_SELECT,
        source=_REGION_SOURCE,
        where=[sql.SQL("r.code = %(code)s")],
        params={"code": code},
    )
    return region_public(rows[0]) if rows else None


async def _read_region(conn: Conn, _: None, code: str) -> RegionPublic | None:
    return await _region(conn, code)


REGION: Kind[None, RegionPublic] = Kind(
    "region", "region", "SELECT 1 FROM region WHERE code = %(code)s FOR NO KEY UPDATE", _read_region
)


@router.get(
    "/regions",
    response_model=Page[RegionPublic],
    summary="行政区划列表 List regions (GB/T 2260)",
    responses=problem_responses(401, 422),
)
async def list_regions(
    *,
    _: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: SortParam = None,
    level: Annotated[
        codes.RegionLevel | None, Query(description="province, city or county")
    ] = None,
    within: Annotated[str | None, Query(description="regions inside this one (itself too)")] = None,
    parent: Annotated[str | None, Query(description="regions directly below this one")] = None,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
) -> Page[RegionPublic]:
    where: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if level is not None:
        where.append(sql.SQL("r.level = %(level)s"))
        params["level"] = level.value
    if (inside := region_query("within", within)) is not None:
        where.append(sql.SQL("r.code LIKE %(within)s"))
        params["within"] = codes.region_prefix(inside) + "%"
    if (above := region_query("parent", parent)) is not None:
        where.append(sql.SQL("r.parent_code = %(parent)s"))
        params["parent"] = above
    if q:
        where.append(sql.SQL("r.name LIKE %(q)s"))
        params["q"] = contains(q)
    total, rows = await fetch_page(
        conn,
        select=_REGION_SELECT,
        source=_REGION_SOURCE,
        where=where,
        params=params,
        order=order_by(sort, _REGION_SORT, default="code", unique=[sql.SQL("r.code")]),
        limit=limit,
        offset=offset,
    )
    return Page[RegionPublic](
        total=total, limit=limit, offset=offset, items=[region_public(r) for r in rows]
    )


@router.get(
    "/regions/{code}",
    response_model=RegionPublic,
    summary="行政区划 A region",
    responses={**problem_responses(401, 404, 422), **ETAG_RESPONSE},
)
async def get_region(
    *, code: RegionPath, _: CurrentPrincipal, conn: ConnDep, response: Response
) -> RegionPublic:
    return await shown(conn, response, REGION, None, code)


@router.post(
    "/regions",
    response_model=RegionPublic,
    status_code=201,
    summary="新建行政区划 Create a region (admin)",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_region(*, body: RegionCreate, _: AdminPrincipal, w: WriterDep) -> RegionPublic:
    conn = w.conn
    try:
        region = Region(code=body.code, name=body.name)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    if await _region(conn, region.code) is not None:
        raise ProblemError(409, f"region {region.code} exists", kind="conflict")
    parent = region.parent_code
    if parent is not None and await _region(conn, parent) is None:
        raise field_error(
            "body.code",
            region.code,
            f"its parent region {parent} is not in the registry; create it first",
        )
    await upsert_regions(conn, [region])
    return await created(w, REGION, None, region.code)


@router.patch(
    "/regions/{code}",
    response_model=RegionPublic,
    summary="修改行政区划名称 Rename a region (admin)",
    responses={**problem_responses(401, 403, 404, 412, 422), **ETAG_RESPONSE},
)
async def update_region(
    *,
    code: RegionPath,
    body: RegionUpdate,
    _: AdminPrincipal,
    w: WriterDep,
    if_match: IfMatch = None,
) -> RegionPublic:
    before = await changing(w, REGION, None, code, if_match)
    try:
        region = Region(code=code, name=body.name)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    await upsert_regions(w.conn, [region])
    return await changed(w, REGION, None, code, before)


# --- clusters --------------------------------------------------------------------------


class ClusterCreate(RequestBody):
    code: str = Field(examples=["NB-MOLD"])
    name: str = Field(min_length=1, max_length=200, examples=["宁波模具产业集群"])
    region_code: str = Field(examples=["330203"])
    industry_code: str = Field(description="GB/T 4754", examples=["C35"])


class ClusterUpdate(RequestBody):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, examples=["宁波模具产业集群"]
    )
    region_code: str | None = Field(default=None, examples=["330203"])
    industry_code: str | None = Field(default=None, examples=["C35"])


class ClusterPublic(BaseModel):
    code: str = Field(examples=["NB-MOLD"])
    name: str = Field(examples=["宁波模具产业集群"])
    region_code: str = Field(examples=["330203"])
    region_name: str | None = Field(default=None, examples=["海曙区"])
    industry_code: str = Field(examples=["C35"])


_CLUSTER_SELECT = sql.SQL("c.code, c.name, c.region_code, r.name AS region_name, c.industry_code")
_CLUSTER_SOURCE = sql.SQL("cluster c LEFT JOIN region r ON r.code = c.region_code")
_CLUSTER_SORT = {
    "code": sql.SQL("c.code"),
    "name": sql.SQL("c.name"),
    "region_code": sql.SQL("c.region_code"),
    "industry_code": sql.SQL("c.industry_code"),
}


async def _cluster(
    conn: Conn, code: str, principal: Principal | None = None
) -> ClusterPublic | None:
    """The cluster, through ``principal``'s scope when one is given."""
    where: list[sql.Composable] = [sql.SQL("c.code = %(code)s")]
    params: dict[str, Any] = {"code": code}
    if principal is not None:
        fragment, scope = principal.visibility.cluster_filter("c")
        where.append(fragment)
        params.update(scope)
    rows = await fetch_rows(
        conn, select=_CLUSTER_SELECT, source=_CLUSTER_SOURCE, where=where, params=params
    )
    return ClusterPublic(**rows[0]) if rows else None


async def _read_cluster(conn: Conn, _: None, code: str) -> ClusterPublic | None:
    return await _cluster(conn, code)


CLUSTER: Kind[None, ClusterPublic] = Kind(
    "cluster",
    "cluster",
    "SELECT id FROM cluster WHERE code = %(code)s FOR NO KEY UPDATE",
    _read_cluster,
)


async def _check_region(conn: Conn, field: str, code: str) -> None:
    if await _region(conn, code) is None:
        raise field_error(field, code, "region is not in the registry")


@router.get(
    "/clusters",
    response_model=Page[ClusterPublic],
    summary="产业集群列表 List industrial clusters",
    responses=problem_responses(401, 422),
)
async def list_clusters(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: SortParam = None,
    region: Annotated[str | None, Query(description="clusters in this region or below")] = None,
    industry: Annotated[str | None, Query(description="GB/T 4754 code or its prefix")] = None,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
) -> Page[ClusterPublic]:
    fragment, params = principal.visibility.cluster_filter("c")
    where: list[sql.Composable] = [fragment]
    if (inside := region_query("region", region)) is not None:
        where.append(sql.SQL("c.region_code LIKE %(region)s"))
        params["region"] = codes.region_prefix(inside) + "%"
    if (industry_code := industry_query(industry)) is not None:
        where.append(sql.SQL("c.industry_code LIKE %(industry)s"))
        params["industry"] = industry_code + "%"
    if q:
        where.append(sql.SQL("c.name LIKE %(q)s"))
        params["q"] = contains(q)
    total, rows = await fetch_page(
        conn,
        select=_CLUSTER_SELECT,
        source=_CLUSTER_SOURCE,
        where=where,
        params=params,
        order=order_by(sort, _CLUSTER_SORT, default="code", unique=[sql.SQL("c.code")]),
        limit=limit,
        offset=offset,
    )
    return Page[ClusterPublic](
        total=total, limit=limit, offset=offset, items=[ClusterPublic(**r) for r in rows]
    )


@router.get(
    "/clusters/{code}",
    response_model=ClusterPublic,
    summary="产业集群 A cluster",
    responses={**problem_responses(401, 404, 422), **ETAG_RESPONSE},
)
async def get_cluster(
    *, code: ClusterPath, principal: CurrentPrincipal, conn: ConnDep, response: Response
) -> ClusterPublic:
    cluster = await _cluster(conn, code, principal)
    if cluster is None:
        raise not_found("cluster", code)
    return tagged(response, cluster)


async def _store_cluster(conn: Conn, data: dict[str, Any]) -> Cluster:
    try:
        cluster = Cluster.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    await _check_region(conn, "body.region_code", cluster.region_code)
    await upsert_clusters(conn, [cluster])
    return cluster


@router.post(
    "/clusters",
    response_model=ClusterPublic,
    status_code=201,
    summary="新建产业集群 Create a cluster (admin)",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_cluster(*, body: ClusterCreate, _: AdminPrincipal, w: WriterDep) -> ClusterPublic:
    if await _cluster(w.conn, body.code) is not None:
        raise ProblemError(409, f"cluster {body.code!r} exists", kind="conflict")
    cluster = await _store_cluster(w.conn, body.model_dump())
    return await created(w, CLUSTER, None, cluster.code)


@router.patch(
    "/clusters/{code}",
    response_model=ClusterPublic,
    summary="修改产业集群 Update a cluster (admin)",
    responses={**problem_responses(401, 403, 404, 412, 422), **ETAG_RESPONSE},
)
async def update_cluster(
    *,
    code: ClusterPath,
    body: ClusterUpdate,
    _: AdminPrincipal,
    w: WriterDep,
    if_match: IfMatch = None,
) -> ClusterPublic:
    before = await changing(w, CLUSTER, None, code, if_match)
    current = before.model_dump(exclude={"region_name"})
    await _store_cluster(w.conn, {**current, **body.model_dump(exclude_unset=True)})
    return await changed(w, CLUSTER, None, code, before)


# --- enterprises -----------------------------------------------------------------------


class EnterpriseCreate(RequestBody):
    credit_code: str = Field(
        description="统一社会信用代码, GB 32100 check character verified",
        examples=["91330203MA2NB0003L"],
    )
    name: str = Field(min_length=1, max_length=200, examples=["宁波丁精密机械有限公司"])
    region_code: str = Field(examples=["330203"])
    industry_code: str = Field(description="GB/T 4754", examples=["C3484"])
    cluster_codes: list[Code] = Field(default_factory=list, max_length=100, examples=[["NB-MOLD"]])
    above_designated_size: bool = Field(default=False, description="规上", examples=[True])
    key_enterprise: bool = Field(default=False, description="重点企业", examples=[False])
    time_zone: str = Field(default="Asia/Shanghai", examples=["Asia/Shanghai"])


class EnterpriseUpdate(RequestBody):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, examples=["宁波丁精密机械有限公司"]
    )
    region_code: str | None = Field(default=None, examples=["330203"])
    industry_code: str | None = Field(default=None, examples=["C3484"])
    cluster_codes: list[Code] | None = Field(default=None, max_length=100, examples=[["NB-MOLD"]])
    above_designated_size: bool | None = Field(default=None, examples=[True])
    key_enterprise: bool | None = Field(default=None, examples=[True])
    time_zone: str | None = Field(default=None, examples=["Asia/Shanghai"])


class EnterprisePublic(BaseModel):
    credit_code: str = Field(examples=["91330203MA2NB0001X"])
    name: str = Field(examples=["宁波甲模具有限公司"])
    region_code: str = Field(examples=["330203"])
    region_name: str | None = Field(default=None, examples=["海曙区"])
    industry_code: str = Field(examples=["C35"])
    cluster_codes: list[str] = Field(examples=[["NB-MOLD"]])
    above_designated_size: bool = Field(examples=[True])
    key_enterprise: bool = Field(examples=[True])
    tags_label: str = Field(description="规上 / 重点, as reports show them", examples=["规上/重点"])
    time_zone: str = Field(examples=["Asia/Shanghai"])
    created_at: LocalTime = Field(examples=["2026-12-03T09:00:00+08:00"])
    updated_at: LocalTime = Field(examples=["2026-12-03T09:00:00+08:00"])


_ENTERPRISE_SELECT = sql.SQL(
    """e.credit_code, e.name, e.region_code, r.name AS region_name, e.industry_code,
    coalesce((SELECT array_agg(c.code ORDER BY c.code) FROM enterprise_cluster ec
              JOIN cluster c ON c.id = ec.cluster_id WHERE ec.enterprise_id = e.id),
             '{}') AS cluster_codes,
    e.above_designated_size, e.key_enterprise, e.time_zone, e.created_at, e.updated_at"""
)
_ENTERPRISE_SOURCE = sql.SQL("enterprise e LEFT JOIN region r ON r.code = e.region_code")
_ENTERPRISE_SORT = {
    "credit_code": sql.SQL("e.credit_code"),
    "name": sql.SQL("e.name"),
    "region_code": sql.SQL("e.region_code"),
    "industry_code": sql.SQL("e.industry_code"),
    "created_at": sql.SQL("e.created_at"),
    "updated_at": sql.SQL("e.updated_at"),
}


def enterprise_public(row: dict[str, Any]) -> EnterprisePublic:
    zone = ZoneInfo(row["time_zone"])
    tags = [
        t
        for t, on in (("规上", row["above_designated_size"]), ("重点", row["key_enterprise"]))
        if on
    ]
    return EnterprisePublic(
        **{k: v for k, v in row.items() if k not in ("created_at", "updated_at")},
        tags_label="/".join(tags),
        created_at=row["created_at"].astimezone(zone),
        updated_at=row["updated_at"].astimezone(zone),
    )


async def _enterprise(conn: Conn, credit_code: str) -> EnterprisePublic | None:
    rows = await fetch_rows(
        conn,
        select=_ENTERPRISE_SELECT,
        source=_ENTERPRISE_SOURCE,
        where=[sql.SQL("e.credit_code = %(credit)s")],
        params={"credit": credit_code.upper()},
    )
    return enterprise_public(rows[0]) if rows else None


@router.get(
    "/enterprises",
    response_model=Page[EnterprisePublic],
    summary="企业列表 List enterprises",
    responses=problem_responses(401, 422),
)
async def list_enterprises(
    *,
    principal: CurrentPrincipal,
    conn: ConnDep,
    limit: Limit = 50,
    offset: Offset = 0,
    sort: SortParam = None,
    region: Annotated[str | None, Query(description="enterprises in this region or below")] = None,
    cluster: Annotated[
        str | None, Query(max_length=64, description="members of this cluster")
    ] = None,
    industry: Annotated[str | None, Query(description="GB/T 4754 code or its prefix")] = None,
    above_designated_size: Annotated[bool | None, Query(description="规上")] = None,
    key_enterprise: Annotated[bool | None, Query(description="重点企业")] = None,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
) -> Page[EnterprisePublic]:
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
    if (industry_code := industry_query(industry)) is not None:
        where.append(sql.SQL("e.industry_code LIKE %(industry)s"))
        params["industry"] = industry_code + "%"
    for name, flag in (
        ("above_designated_size", above_designated_size),
        ("key_enterprise", key_enterprise),
    ):
        if flag is not None:
            where.append(sql.SQL("e.{} = %({})s").format(sql.Identifier(name), sql.SQL(name)))
            params[name] = flag
    if q:
        where.append(sql.SQL("e.name LIKE %(q)s"))
        params["q"] = contains(q)
    total, rows = await fetch_page(
        conn,
        select=_ENTERPRISE_SELECT,
        source=_ENTERPRISE_SOURCE,
        where=where,
        params=params,
        order=order_by(
            sort, _ENTERPRISE_SORT, default="credit_code", unique=[sql.SQL("e.credit_code")]
        ),
        limit=limit,
        offset=offset,
    )
    return Page[EnterprisePublic](
        total=total, limit=limit, offset=offset, items=[enterprise_public(r) for r in rows]
    )


@router.get(
    "/enterprises/{credit_code}",
    response_model=EnterprisePublic,
    summary="企业 An enterprise",
    responses={**problem_responses(401, 404, 422), **ETAG_RESPONSE},
)
async def get_enterprise(
    *, credit_code: CreditCodePath, principal: CurrentPrincipal, conn: ConnDep, response: Response
) -> EnterprisePublic:
    ref = await readable_enterprise(conn, principal, credit_code)
    found = await _enterprise(conn, ref.credit_code)
    assert found is not None  # noqa: S101 - found through the scope a moment ago
    return tagged(response, found)


async def _read_enterprise(conn: Conn, _: None, credit_code: str) -> EnterprisePublic | None:
    return await _enterprise(conn, credit_code)


ENTERPRISE: Kind[None, EnterprisePublic] = Kind(
    "enterprise",
    "enterprise",
    "SELECT id FROM enterprise WHERE credit_code = upper(%(code)s) FOR NO KEY UPDATE",
    _read_enterprise,
    key=lambda _, credit_code: credit_code.upper(),
)


async def _store_enterprise(conn: Conn, data: dict[str, Any]) -> Enterprise:
    try:
        ent = Enterprise.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    await _check_region(conn, "body.region_code", ent.region_code)
    for i, code in enumerate(ent.cluster_codes):
        if await _cluster(conn, code) is None:
            raise field_error(f"body.cluster_codes.{i}", code, "cluster is not in the registry")
    await upsert_enterprises(conn, [ent])
    return ent


@router.post(
    "/enterprises",
    response_model=EnterprisePublic,
    status_code=201,
    summary="新建企业 Create an enterprise (admin)",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_enterprise(
    *, body: EnterpriseCreate, _: AdminPrincipal, w: WriterDep
) -> EnterprisePublic:
    conn = w.conn
    data = body.model_dump()
    data["cluster_codes"] = tuple(dict.fromkeys(body.cluster_codes))
    try:
        credit = codes.validate_credit_code(body.credit_code)
    except InvalidValue as exc:
        raise field_error("body.credit_code", body.credit_code, exc.rule) from exc
    if await _enterprise(conn, credit) is not None:
        raise ProblemError(409, f"enterprise {credit} exists", kind="conflict")
    ent = await _store_enterprise(conn, data)
    return await created(w, ENTERPRISE, None, ent.credit_code)


@router.patch(
    "/enterprises/{credit_code}",
    response_model=EnterprisePublic,
    summary="修改企业 Update an enterprise (admin)",
    responses={**problem_responses(401, 403, 404, 412, 422), **ETAG_RESPONSE},
)
async def update_enterprise(
    *,
    credit_code: CreditCodePath,
    body: EnterpriseUpdate,
    _: AdminPrincipal,
    w: WriterDep,
    if_match: IfMatch = None,
) -> EnterprisePublic:
    before = await changing(w, ENTERPRISE, None, credit_code, if_match)
    current = before.model_dump(exclude={"region_name", "tags_label", "created_at", "updated_at"})
    change = body.model_dump(exclude_unset=True)
    if change.get("cluster_codes") is not None:
        change["cluster_codes"] = tuple(dict.fromkeys(change["cluster_codes"]))
    await _store_enterprise(w.conn, {**current, **change})
    return await changed(w, ENTERPRISE, None, credit_code, before)
