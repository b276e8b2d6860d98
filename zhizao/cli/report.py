"""``zhizao report``: the networking-rate report as XLSX, CSV or JSON (docs/reports.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from zhizao.cli.common import DbUrlOption, db_settings, err_console, fail, with_conn
from zhizao.errors import ZhizaoError
from zhizao.provenance import Source, describe
from zhizao.report import (
    ClusterReport,
    NetworkingReport,
    cluster_report,
    networking_report,
    parse_period,
)
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
from zhizao.storage.connection import Conn
from zhizao.storage.kpi import display_zone

R = TypeVar("R")

app = typer.Typer(help="Reports: 设备联网率统计报表 (XLSX, CSV, JSON).", no_args_is_help=True)


@app.command("networking")
def networking_command(  # noqa: PLR0917 - typer maps each option to a parameter
    period: str = typer.Option(
        ...,
        help="A month (2026-10), a quarter (2026-Q4), a year (2026) or days"
        " (2026-10-01..2026-10-15).",
    ),
    region: str | None = typer.Option(None, help="A region code (330000, 330200, 330203 …)."),
    cluster: str | None = typer.Option(None, help="An industrial cluster's code."),
    fmt: ReportFormat = typer.Option(ReportFormat.XLSX, "--format", help="xlsx, csv or json."),
    out: Path | None = typer.Option(
        None, help="The file to write (default: stdout for csv and json)."
    ),
    table: str = typer.Option(
        "city", help=f"With --format csv, the table: {', '.join(TABLE_KEYS)}."
    ),
    behind: int = typer.Option(20, min=1, help="How many enterprises furthest behind."),
    db_url: DbUrlOption = None,
) -> None:
    """设备联网率统计报表: by city, county, cluster and industry, both methods, the change
    against the previous period, enterprises, those furthest behind, the devices not
    networked, and the NC rate."""
    _check_output(fmt, out, table, TABLE_KEYS)
    url = db_settings(db_url).url
    try:
        wanted = parse_period(period, "--period")

        def build(conn: Conn, step: Callable[[str], None]) -> Awaitable[NetworkingReport]:
            return networking_report(conn, wanted, region=region, cluster=cluster,
                                     behind=behind, progress=step)  # fmt: skip

        report, zone = _build(url, build)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    _write(
        fmt, out,
        xlsx=lambda stream: write_xlsx(report, stream, zone),
        csv_text=lambda: csv_text(report, table),
        data=lambda: plain(report, zone),
    )  # fmt: skip
    if out is not None:
        err_console.print(
            f"写入 wrote {out} ({report.period.label}, {len(report.enterprises)} 家企业"
            f" enterprises; 数据覆盖 coverage {report.covered_days}/{report.period.days}"
            " 天 days)"
        )
    _say_sources(report.sources, zone)


@app.command("cluster")
def cluster_command(  # noqa: PLR0917 - typer maps each option to a parameter
    code: str = typer.Argument(..., help="The industrial cluster's code."),
    period: str = typer.Option(..., help="A month (2026-10), a quarter, a year or days."),
    fmt: ReportFormat = typer.Option(ReportFormat.XLSX, "--format", help="xlsx, csv or json."),
    out: Path | None = typer.Option(
        None, help="The file to write (default: stdout for csv and json)."
    ),
    table: str = typer.Option(
        "enterprises", help=f"With --format csv, the table: {', '.join(CLUSTER_TABLE_KEYS)}."
    ),
    db_url: DbUrlOption = None,
) -> None:
    """产业集群月度报告: the cluster's enterprises ranked by networking rate and by OEE,
    its trend over the last 12 months, and each enterprise's data coverage."""
    _check_output(fmt, out, table, CLUSTER_TABLE_KEYS)
    url = db_settings(db_url).url
    try:
        wanted = parse_period(period, "--period")

        def build(conn: Conn, step: Callable[[str], None]) -> Awaitable[ClusterReport]:
            return cluster_report(conn, code, wanted, progress=step)

        report, zone = _build(url, build)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    _write(
        fmt, out,
        xlsx=lambda stream: write_cluster_xlsx(report, stream, zone),
        csv_text=lambda: cluster_csv_text(report, table),
        data=lambda: cluster_plain(report, zone),
    )  # fmt: skip
    if out is not None:
        err_console.print(
            f"写入 wrote {out} ({report.cluster} {report.cluster_name}, {report.period.label},"
            f" {len(report.enterprises)} 家企业 enterprises)"
        )
    _say_sources(report.sources, zone)


def _say_sources(sources: Sequence[Source], zone: ZoneInfo) -> None:
    # On the province: which instances' reports the figures rest on, and how fresh.
    if any(s.federated for s in sources):
        err_console.print(f"数据来源 sources: {describe(sources, zone)}")


def _check_output(fmt: ReportFormat, out: Path | None, table: str, tables: tuple[str, ...]) -> None:
    if fmt is ReportFormat.XLSX and out is None:
        raise fail("--format xlsx needs --out FILE (a workbook is not written to a terminal)")
    if fmt is ReportFormat.CSV and table not in tables:
        raise fail(f"--table {table!r} is not one of {', '.join(tables)}")


def _build(
    url: str, build: Callable[[Conn, Callable[[str], None]], Awaitable[R]]
) -> tuple[R, ZoneInfo]:
    """The report, with each step shown while it reads, and the zone to show times in."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:  # fmt: skip
        task = progress.add_task("报表 report", total=None)

        def step(text: str) -> None:
            progress.update(task, description=f"报表 report: {text}")

        async def job(conn: Conn) -> tuple[R, ZoneInfo]:
            report = await build(conn, step)
            return report, await display_zone(conn)

        return with_conn(url, job)


def _write(
    fmt: ReportFormat,
    out: Path | None,
    *,
    xlsx: Callable[[IO[bytes]], None],
    csv_text: Callable[[], str],
    data: Callable[[], object],
) -> None:
    if fmt is ReportFormat.XLSX and out is not None:
        with out.open("wb") as stream:
            xlsx(stream)
        return
    if fmt is ReportFormat.CSV:
        text = csv_text()
    else:
        text = json.dumps(data(), ensure_ascii=False, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        with out.open("w", encoding="utf-8", newline="") as stream_text:
            stream_text.write(text)
