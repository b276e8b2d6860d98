"""Reports 报表: the networking-rate report (设备联网率统计报表) as JSON, CSV or XLSX.

The report is built by :func:`zhizao.report.networking_report` over the caller's
enterprises (the same restriction as every KPI route), so its figures equal the KPI
routes' for the same scope and period. A region or cluster out of reach is the same
404 as a missing one. Every download is written to the audit log as an export.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from enum import StrEnum
from typing import IO, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from platform_api.audit import audit
from platform_api.deps import ClientAddr, ConnDep, CurrentPrincipal
from platform_api.problems import field_error, problem_responses
from platform_api.routes.kpi import ClusterQ, RegionQ, area
from zhizao.errors import InvalidValue
from zhizao.registry import is_code
from zhizao.report import ReportPeriod, cluster_report, networking_report, parse_period
from zhizao.report_files import (
    CLUSTER_TABLE_KEYS,
    TABLE_KEYS,
    ReportFormat,
    cluster_csv_text,
    cluster_plain,
    csv_text,
    plain,
    write_cluster_xlsx,
    write_xlsx,
)
from zhizao.storage import kpi

router = APIRouter(prefix="/api/v1/reports", tags=["reports 报表"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Table(StrEnum):
    CITY = "city"
    COUNTY = "county"
    CLUSTER = "cluster"
    INDUSTRY_SECTION = "industry_section"
    INDUSTRY_DIVISION = "industry_division"
    NC = "nc"
    ENTERPRISES = "enterprises"
    BEHIND = "behind"
    DEVICES = "devices"


assert tuple(t.value for t in Table) == TABLE_KEYS  # noqa: S101 - one list of tables

PeriodQ = Annotated[
    str,
    Query(description="a month (2026-10), a quarter (2026-Q4), a year (2026) or days"
                      " (2026-10-01..2026-10-15)", examples=["2026-10"]),
]  # fmt: skip
FormatQ = Annotated[ReportFormat, Query(description="json, csv or xlsx")]

_EXAMPLE: dict[str, Any] = {
    "period": {"kind": "month", "label": "2026-10", "label_zh": "2026年10月",
               "first_day": "2026-10-01", "last_day": "2026-10-31"},
    "region": "330200", "restricted": True, "covered_days": 31, "days": 31,
    "networking": [{"breakdown": "city", "group": "330200", "name": "宁波市", "scope": "all",
                    "enterprises": 2, "numerator": 93, "denominator": 124, "rate": 0.75,
                    "mean_rate": 0.75, "previous_rate": 0.70, "change": 0.05}],
}  # fmt: skip
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "报表 the report: JSON, CSV (UTF-8 with BOM) or XLSX",
        "content": {
            "application/json": {"example": _EXAMPLE},
            "text/csv": {"schema": {"type": "string"}},
            XLSX: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **problem_responses(401, 404, 422),
}


@router.get("/networking", summary="设备联网率统计报表 Networking-rate report",
            responses=_RESPONSES, response_class=Response)  # fmt: skip
async def get_networking_report(
    *,
    request: Request,
    principal: CurrentPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
    period: Annotated[
        str,
        Query(
            description="a month (2026-10), a quarter (2026-Q4), a year (2026) or days"
            " (2026-10-01..2026-10-15)",
            examples=["2026-10"],
        ),
    ],
    region: RegionQ = None,
    cluster: ClusterQ = None,
    format: Annotated[ReportFormat, Query(description="json, csv or xlsx")] = ReportFormat.JSON,
    table: Annotated[Table, Query(description="with format=csv: the table")] = Table.CITY,
    behind: Annotated[int, Query(ge=1, le=500, description="enterprises furthest behind")] = 20,
) -> Response:
    """By city, county, cluster and industry (GB/T 4754 section and division) for every
    enterprise scope: networked and in-service production device-days, the rate by
    both methods, the change against the previous period; every enterprise's rate, the
    enterprises furthest behind, the production devices not networked on the period's
    last day with when they were last seen, and the NC rate (both variants) on that
    day. Over the caller's enterprises only (``restricted`` says when that narrows it)."""
    wanted = _period(period)
    within = await area(conn, principal, region, cluster)
    zone = await kpi.display_zone(conn, within=within)
    report = await networking_report(conn, wanted, region=region, cluster=cluster,
                                     within=within, restricted=not principal.is_admin,
                                     behind=behind)  # fmt: skip
    await audit(conn, request, principal, "export", addr=addr, object_type="report",
                object_key=f"networking {wanted.label}",
                detail={"format": format.value, "region": region, "cluster": cluster,
                        "table": table.value if format is ReportFormat.CSV else None,
                        "enterprises": len(report.enterprises)})  # fmt: skip
    name = f"设备联网率_{wanted.label}{'_' + region if region else ''}"
    return _answer(
        format, f"{name}_{table.value}" if format is ReportFormat.CSV else name,
        data=lambda: plain(report, zone), csv=lambda: csv_text(report, table.value),
        xlsx=lambda out: write_xlsx(report, out, zone),
    )  # fmt: skip


class ClusterTable(StrEnum):
    ENTERPRISES = "enterprises"
    TREND = "trend"


assert tuple(t.value for t in ClusterTable) == CLUSTER_TABLE_KEYS  # noqa: S101


@router.get("/cluster/{code}", summary="产业集群月度报告 Industrial cluster's report",
            responses=_RESPONSES, response_class=Response)  # fmt: skip
async def get_cluster_report(
    *,
    request: Request,
    principal: CurrentPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
    code: str,
    period: PeriodQ,
    format: FormatQ = ReportFormat.JSON,
    table: Annotated[
        ClusterTable, Query(description="with format=csv: the table")
    ] = ClusterTable.ENTERPRISES,
) -> Response:
    """The cluster's enterprises ranked by networking rate and by OEE (ties share a
    rank), with A, P, Q and data coverage (the share of planned time with data, and
    the days with data), and the cluster's trend over the last 12 months."""
    wanted = _period(period)
    if not is_code(code):
        raise field_error(
            "path.code", code, "must be a cluster code (letters, digits, '_', '.', '-')"
        )
    within = await area(conn, principal, None, code)
    zone = await kpi.display_zone(conn, within=within)
    report = await cluster_report(conn, code, wanted, within=within,
                                  restricted=not principal.is_admin)  # fmt: skip
    await audit(conn, request, principal, "export", addr=addr, object_type="report",
                object_key=f"cluster {code} {wanted.label}",
                detail={"format": format.value, "cluster": code,
                        "table": table.value if format is ReportFormat.CSV else None,
                        "enterprises": len(report.enterprises)})  # fmt: skip
    name = f"产业集群_{code}_{wanted.label}"
    return _answer(
        format, f"{name}_{table.value}" if format is ReportFormat.CSV else name,
        data=lambda: cluster_plain(report, zone),
        csv=lambda: cluster_csv_text(report, table.value),
        xlsx=lambda out: write_cluster_xlsx(report, out, zone),
    )  # fmt: skip


def _period(text: str) -> ReportPeriod:
    try:
        return parse_period(text)
    except InvalidValue as exc:
        raise field_error(f"query.{exc.field}", exc.value, exc.rule) from exc


def _answer(
    format: ReportFormat,
    name: str,
    *,
    data: Callable[[], object],
    csv: Callable[[], str],
    xlsx: Callable[[IO[bytes]], None],
) -> Response:
    if format is ReportFormat.JSON:
        return JSONResponse(data())
    if format is ReportFormat.CSV:
        return Response(csv().encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers=_attachment(f"{name}.csv"))  # fmt: skip
    buffer = io.BytesIO()
    xlsx(buffer)
    return Response(buffer.getvalue(), media_type=XLSX, headers=_attachment(f"{name}.xlsx"))


def _attachment(filename: str) -> dict[str, str]:
    # RFC 6266: an ASCII fallback and the UTF-8 name for browsers that read it.
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    return {
        "Content-Disposition": f'attachment; filename="{ascii_name}";'
        f" filename*=UTF-8''{quote(filename)}"
    }
