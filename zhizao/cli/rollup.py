"""``zhizao rollup``: bring the hour and day rollups up to date, or backfill them."""

from __future__ import annotations

import asyncio
from datetime import datetime

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from zhizao.cli.common import DbUrlOption, console, db_settings, fail
from zhizao.errors import InvalidValue, ZhizaoError
from zhizao.storage.connection import connect
from zhizao.storage.rollups import RollupReport, rollup_settings, run_rollups

app = typer.Typer(
    help="Rollups of facts per device-hour and device-day (预聚合汇总).", no_args_is_help=True
)


def parse_instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 instant; a date or a time without offset is refused, not guessed."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidValue(option, value, "must be an ISO 8601 instant") from exc
    if parsed.tzinfo is None:
        raise InvalidValue(option, value, "needs a UTC offset, e.g. 2026-03-01T00:00+08:00")
    return parsed


async def _run(
    url: str, since: datetime | None, until: datetime | None, micro: float
) -> RollupReport:
    conn = await connect(url, autocommit=True)
    async with conn:
        if since is None:
            return await run_rollups(conn, until=until, micro_stop_s=micro)
        with Progress(
            TextColumn("回填 backfill"), BarColumn(), MofNCompleteColumn(),
            TextColumn("devices"), TimeRemainingColumn(), console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task("rollup", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return await run_rollups(
                conn, since=since, until=until, micro_stop_s=micro, progress=progress
            )


@app.command("run")
def run_command(
    since: str | None = typer.Option(
        None, help="Recompute every device from this instant (ISO 8601 with offset): a backfill."
    ),
    until: str | None = typer.Option(None, help="Stop at this instant instead of now."),
    micro_stop_s: float | None = typer.Option(
        None,
        help="Stops shorter than this many seconds are micro-stops (短暂停机);"
        " default env ZHIZAO_KPI_MICRO_STOP_S or 120.",
    ),
    db_url: DbUrlOption = None,
) -> None:
    """Roll up what was ingested since the last run (or everything since --since)."""
    settings = db_settings(db_url)
    try:
        report = asyncio.run(
            _run(
                settings.url,
                parse_instant(since, "--since"),
                parse_instant(until, "--until"),
                rollup_settings().micro_stop_s if micro_stop_s is None else micro_stop_s,
            )
        )
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(
        f"汇总完成 rolled up until {report.until.isoformat()}: {report.devices} devices,"
        f" {report.device_hours} device-hours, {report.device_days} device-days,"
        f" {report.dirty_marks} dirty marks consumed in {report.seconds:.2f} s"
        f" ({report.device_hours_per_s:,.0f} device-hours/s)"
    )
