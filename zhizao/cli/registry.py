"""``zhizao registry``: the equipment ledger (设备台账)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.table import Table

from zhizao.cli.common import DbUrlOption, console, db_settings, err_console, fail
from zhizao.errors import ZhizaoError
from zhizao.ledger import Ledger, read_ledger
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import connect
from zhizao.storage.registry import (
    EnterpriseSummary,
    RegistryChanges,
    cluster_names,
    enterprise_summaries,
    known_codes,
    store_ledger,
    summarise,
    table_counts,
)

app = typer.Typer(
    help="Equipment ledger: import spreadsheets, show what is registered.", no_args_is_help=True
)


async def import_ledger(settings: DatabaseSettings, path: Path) -> tuple[Ledger, RegistryChanges]:
    """Parse a ledger file and store every valid row in one transaction."""
    conn = await connect(settings.url)
    async with conn:
        enterprises, _, regions = await known_codes(conn)
        clusters = await cluster_names(conn)
        ledger = await asyncio.to_thread(
            read_ledger,
            path,
            known_enterprises=enterprises,
            known_clusters=clusters,
            known_regions=regions,
        )
        async with conn.transaction():
            changes = await store_ledger(conn, ledger)
    return ledger, changes


def print_changes(ledger: Ledger, changes: RegistryChanges) -> None:
    table = Table(title=f"导入结果 Import of {ledger.source}")
    for header in (
        "表 Table",
        "读取 Read",
        "存储 Stored",
        "拒绝 Rejected",
        "新增 Inserted",
        "更新 Updated",
        "未变 Unchanged",
    ):
        table.add_column(header, justify="right" if header != "表 Table" else "left")
    for line in table_counts(ledger, changes):
        table.add_row(
            line.label,
            str(line.read),
            str(line.stored),
            str(line.rejected),
            str(line.inserted),
            str(line.updated),
            str(line.unchanged),
        )
    console.print(table)
    summary = summarise(ledger, changes)
    console.print(str(summary))
    derived = [place for place in changes.new_places if place.derived]
    for place in derived:
        kind = "产线 line" if place.kind == "line" else "厂区/车间 site"
        console.print(f"新建 new {kind} {place.name} → {place.code} (code derived from the name)")
    if derived:
        console.print(
            "[dim]A derived code stays the same on every import of the same name; "
            "a 产线编号 / 车间编号 column chooses the code instead.[/]"
        )
    for sheet in ledger.sheets:
        if sheet.unused:
            console.print(
                f"[dim]{sheet.name}: 未使用的列 columns not used: {', '.join(sheet.unused)}[/]"
            )
    for warning in ledger.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}")
    if ledger.errors:
        errors = Table(
            title=f"{summary.rejected} 行被拒绝 rows rejected (others were stored), "
            f"{summary.problems} 个错误 problems"
        )
        for header in ("工作表 Sheet", "行 Row", "列 Column", "值 Value", "原因 Reason"):
            errors.add_column(header)
        for error in ledger.errors:
            errors.add_row(
                error.sheet,
                str(error.row),
                error.column,
                "" if error.value is None else str(error.value),
                error.reason,
            )
        err_console.print(errors)


@app.command("import")
def import_command(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV or XLSX ledger."),
    db_url: DbUrlOption = None,
) -> None:
    """Import enterprises, clusters, devices and edge gateways from a CSV or XLSX file.

    Every valid row is stored; every bad row is listed with its row, column and reason
    (exit code 1). Re-importing the same file changes nothing.
    """
    try:
        ledger, changes = asyncio.run(import_ledger(db_settings(db_url), file))
    except ZhizaoError as exc:
        raise fail(exc) from exc
    print_changes(ledger, changes)
    if ledger.errors:
        raise typer.Exit(1)


def print_summaries(summaries: list[EnterpriseSummary]) -> None:
    table = Table(title="设备台账 Equipment ledger (在役 in service today)")
    for header in (
        "企业 Enterprise",
        "地区 Region",
        "产业集群 Cluster",
        "规上/重点",
        "设备 Devices",
        "生产 Production",
        "数控 NC",
        "接入网关 On an edge",
        "网关 Edges",
    ):
        table.add_column(header)
    for s in summaries:
        tags = (
            "/".join(
                t for t, on in (("规上", s.above_designated_size), ("重点", s.key_enterprise)) if on
            )
            or "-"
        )
        table.add_row(
            f"{s.name}\n{s.credit_code}",
            s.region,
            s.clusters,
            tags,
            str(s.devices),
            str(s.production_devices),
            str(s.nc_devices),
            str(s.served_devices),
            str(s.edges),
        )
    console.print(table)


async def load_summaries(settings: DatabaseSettings) -> list[EnterpriseSummary]:
    conn = await connect(settings.url)
    async with conn:
        return await enterprise_summaries(conn)


@app.command("show")
def show_command(db_url: DbUrlOption = None) -> None:
    """Show every enterprise with its devices in service, NC devices and edges."""
    try:
        summaries = asyncio.run(load_summaries(db_settings(db_url)))
    except ZhizaoError as exc:
        raise fail(exc) from exc
    print_summaries(summaries)
