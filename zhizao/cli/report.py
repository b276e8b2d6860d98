"""``zhizao report``: the networking-rate report as XLSX, CSV or JSON (docs/reports.md)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from zhizao.cli.common import DbUrlOption, db_settings, err_console, fail, with_conn
from zhizao.errors import ZhizaoError
from zhizao.report import NetworkingReport, networking_report, parse_period
from zhizao.report_files import TABLE_KEYS, plain, write_csv, write_xlsx
from zhizao.storage.connection import Conn
from zhizao.storage.kpi import display_zone

app = typer.Typer(help="Reports: 设备联网率统计报表 (XLSX, CSV, JSON).", no_args_is_help=True)


class Format(StrEnum):
    XLSX = "xlsx"
    CSV = "csv"
    JSON = "json"


@app.command("networking")
def networking_command(  # noqa: PLR0917 - typer maps each option to a parameter
    period: str = typer.Option(
        ...,
        help="A month (2026-10), a quarter (2026-Q4), a year (2026) or days"
        " (2026-10-01..2026-10-15).",
    ),
    region: str | None = typer.Option(None, help="A region code (330000, 330200, 330203 …)."),
    cluster: str | None = typer.Option(None, help="An industrial cluster's code."),
    fmt: Format = typer.Option(Format.XLSX, "--format", help="xlsx, csv or json."),
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
    if fmt is Format.XLSX and out is None:
        raise fail("--format xlsx needs --out FILE (a workbook is not written to a terminal)")
    if fmt is Format.CSV and table not in TABLE_KEYS:
        raise fail(f"--table {table!r} is not one of {', '.join(TABLE_KEYS)}")
    url = db_settings(db_url).url
    try:
        wanted = parse_period(period, "--period")
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err_console, transient=True) as progress:  # fmt: skip
            task = progress.add_task("报表 report", total=None)

            def step(text: str) -> None:
                progress.update(task, description=f"报表 report: {text}")

            async def job(conn: Conn) -> tuple[NetworkingReport, ZoneInfo]:
                report = await networking_report(conn, wanted, region=region, cluster=cluster,
                                                 behind=behind, progress=step)  # fmt: skip
                return report, await display_zone(conn)

            report, zone = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    if fmt is Format.XLSX and out is not None:
        with out.open("wb") as stream:
            write_xlsx(report, stream, zone)
    elif fmt is Format.CSV:
        if out is None:
            write_csv(report, sys.stdout, table)
        else:
            with out.open("w", encoding="utf-8", newline="") as text:
                write_csv(report, text, table)
    else:
        body = json.dumps(plain(report, zone), ensure_ascii=False, indent=2)
        if out is None:
            sys.stdout.write(body + "\n")
        else:
            out.write_text(body + "\n", encoding="utf-8")
    if out is not None:
        rows = len(report.networking) + len(report.nc) + len(report.enterprises)
        err_console.print(
            f"写入 wrote {out} ({report.period.label}, {len(report.enterprises)} 家企业"
            f" enterprises, {rows} 行 rows; 数据覆盖 coverage {report.covered_days}/"
            f"{report.period.days} 天 days)"
        )
