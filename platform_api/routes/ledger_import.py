"""Bulk upload of an equipment ledger (设备台账): the CLI's import, over HTTP.

The file (``.xlsx`` or ``.csv``, multipart field ``file``) goes through the same
parser (:func:`zhizao.ledger.parse_ledger`) and the same store
(:func:`zhizao.storage.registry.store_ledger`) as ``zhizao registry import``, in the
request's transaction, and the answer is the report the CLI prints: the four
numbers, the per-table counts, every error and warning with its sheet, row and
column. Every valid row is stored and every bad row reported (200 either way; the
CLI's exit code 1 is ``summary.rejected > 0`` here). A file that cannot be read at
all is a 422. ``dry_run=true`` answers the same report and stores nothing.

Admins may import anything. An enterprise engineer may import the devices and edge
gateways of their own enterprise(s): a row of any other enterprise is that row's
error, in the same words whether or not the enterprise exists, so the report
discloses nothing beyond the caller's scope; rows of regions, clusters and
enterprises are errors too (admins change those), and so is an edge id registered to
another enterprise. Other roles get 403. Every import, dry runs included, is audited.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from psycopg import sql
from pydantic import BaseModel, Field

from platform_api.audit import audit
from platform_api.deps import ClientAddr, ConnDep, CurrentPrincipal, SettingsDep
from platform_api.listing import fetch_rows
from platform_api.problems import ProblemError, field_error, problem_responses
from zhizao.errors import LedgerError
from zhizao.ledger import Ledger, RowError, parse_ledger
from zhizao.storage.registry import (
    RegistryChanges,
    cluster_names,
    known_codes,
    store_ledger,
    summarise,
    table_counts,
)

router = APIRouter(prefix="/api/v1", tags=["registry 台账"])

_CLUSTER_NAMES = sql.SQL("c.code, c.name")
_CLUSTERS = sql.SQL("cluster c")


class RowProblem(BaseModel):
    sheet: str = Field(description="sheet name (a CSV: the file name)", examples=["设备台账"])
    row: int = Field(description="the row a spreadsheet shows; 0: the sheet", examples=[7])
    column: str = Field(description="the header as written in the file", examples=["投产日期"])
    value: str | None = Field(default=None, examples=["2024-13-01"])
    reason: str = Field(examples=["must be a date such as 2024-03-01, 2024/3/1 or 2024年3月1日"])


class SummaryPublic(BaseModel):
    stored: int = Field(description="rows now in the registry as the file says", examples=[14])
    rejected: int = Field(description="rows with at least one error, not stored", examples=[3])
    problems: int = Field(description="errors, several per row possible", examples=[9])
    warnings: int = Field(description="rows kept, something to look at", examples=[2])
    text: str = Field(
        description="the line the CLI prints",
        examples=[
            "存储 14 行 rows stored · 拒绝 3 行 rows rejected · "
            "9 个错误 problems · 2 条警告 warnings"
        ],
    )


class TablePublic(BaseModel):
    table: str = Field(examples=["devices"])
    label: str = Field(examples=["设备 devices"])
    read: int = Field(examples=[12])
    stored: int = Field(examples=[10])
    rejected: int = Field(examples=[2])
    inserted: int = Field(examples=[8])
    updated: int = Field(examples=[1])
    unchanged: int = Field(examples=[1])


class NewPlacePublic(BaseModel):
    kind: str = Field(examples=["line"])
    enterprise: str = Field(examples=["91330203MA2NB0001X"])
    code: str = Field(examples=["L-8826412B"])
    name: str = Field(examples=["装配二线"])
    derived: bool = Field(description="the code was derived from the name", examples=[True])


class SheetPublic(BaseModel):
    name: str = Field(examples=["设备台账"])
    table: str | None = Field(default=None, examples=["devices"])
    header_row: int = Field(examples=[1])
    rows: int = Field(examples=[12])
    unused_columns: list[str] = Field(
        description="columns recognised but not used", examples=[["序号", "设备型号"]]
    )


class ImportReport(BaseModel):
    source: str = Field(examples=["设备台账.xlsx"])
    dry_run: bool = Field(description="nothing was stored", examples=[False])
    summary: SummaryPublic
    tables: list[TablePublic]
    new_places: list[NewPlacePublic]
    sheets: list[SheetPublic]
    errors: list[RowProblem]
    warnings: list[RowProblem]


def _problem(error: RowError) -> RowProblem:
    value = None if error.value is None else str(error.value)
    return RowProblem(
        sheet=error.sheet, row=error.row, column=error.column, value=value, reason=error.reason
    )


def report_of(ledger: Ledger, changes: RegistryChanges, *, dry_run: bool) -> ImportReport:
    summary = summarise(ledger, changes)
    return ImportReport(
        source=ledger.source,
        dry_run=dry_run,
        summary=SummaryPublic(
            stored=summary.stored,
            rejected=summary.rejected,
            problems=summary.problems,
            warnings=summary.warnings,
            text=str(summary),
        ),
        tables=[
            TablePublic(
                table=line.table.value,
                label=line.label,
                read=line.read,
                stored=line.stored,
                rejected=line.rejected,
                inserted=line.inserted,
                updated=line.updated,
                unchanged=line.unchanged,
            )
            for line in table_counts(ledger, changes)
        ],
        new_places=[
            NewPlacePublic(
                kind=p.kind, enterprise=p.enterprise, code=p.code, name=p.name, derived=p.derived
            )
            for p in changes.new_places
        ],
        sheets=[
            SheetPublic(
                name=s.name,
                table=None if s.table is None else s.table.value,
                header_row=s.header_row,
                rows=s.rows,
                unused_columns=list(s.unused),
            )
            for s in ledger.sheets
        ],
        errors=[_problem(e) for e in ledger.errors],
        warnings=[_problem(w) for w in ledger.warnings],
    )


def _file_name(name: str | None) -> str:
    """The upload's base name (its extension decides the format); never a path."""
    base = PurePosixPath((name or "").replace("\\", "/")).name.strip()
    if not base or len(base) > 200 or not base.isprintable():
        raise field_error("body.file", name, "needs a file name ending in .xlsx or .csv")
    return base


@router.post(
    "/ledger/import",
    response_model=ImportReport,
    summary="导入设备台账 Import a ledger file (xlsx/csv)",
    responses=problem_responses(401, 403, 413, 422),
)
async def import_ledger(
    *,
    request: Request,
    principal: CurrentPrincipal,
    conn: ConnDep,
    settings: SettingsDep,
    addr: ClientAddr,
    file: Annotated[UploadFile, File(description="设备台账 ledger, .xlsx or .csv")],
    dry_run: Annotated[bool, Query(description="report what would change; store nothing")] = False,
) -> ImportReport:
    vis = principal.visibility
    if not (vis.admin or vis.writable):
        raise ProblemError(
            403,
            "importing a ledger needs the admin or an enterprise_engineer role",
            kind="forbidden",
        )
    source = _file_name(file.filename)
    data = await file.read(settings.upload_max_bytes + 1)
    if len(data) > settings.upload_max_bytes:
        raise ProblemError(
            413, f"the file is larger than {settings.upload_max_bytes} bytes", kind="too-large"
        )
    enterprises, _, regions = await known_codes(conn)
    known_clusters: dict[str, str]
    if vis.admin:
        only: frozenset[str] | None = None
        known_enterprises: set[str] | frozenset[str] = enterprises
        known_clusters = await cluster_names(conn)
    else:
        # The parser knows only the caller's own enterprises, so no message it writes
        # can depend on whether another enterprise exists.
        only = known_enterprises = vis.writable
        fragment, params = vis.cluster_filter("c")
        rows = await fetch_rows(
            conn, select=_CLUSTER_NAMES, source=_CLUSTERS, where=[fragment], params=params
        )
        known_clusters = {str(r["code"]): str(r["name"]) for r in rows}
    try:
        ledger = await asyncio.to_thread(
            parse_ledger,
            data,
            source,
            known_enterprises=known_enterprises,
            known_clusters=known_clusters,
            known_regions=regions,
            only_enterprises=only,
        )
    except LedgerError as exc:
        raise field_error("body.file", source, str(exc)) from exc
    async with conn.transaction(force_rollback=dry_run):
        changes = await store_ledger(conn, ledger, writable=only)
    report = report_of(ledger, changes, dry_run=dry_run)
    detail: dict[str, Any] = {
        "dry_run": dry_run,
        "bytes": len(data),
        "summary": report.summary.model_dump(exclude={"text"}),
        "tables": [t.model_dump(exclude={"label"}) for t in report.tables],
    }
    await audit(
        conn,
        request,
        principal,
        "import",
        addr=addr,
        object_type="ledger",
        object_key=source,
        status=200,
        detail=detail,
    )
    return report
