"""``zhizao rollup``: the rollup service; bring the rollups up to date, or backfill them."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ingest.rollup_service import rollup_service_settings, serve_rollups
from zhizao.cli.common import DbUrlOption, console, db_settings, fail
from zhizao.errors import InvalidValue, ZhizaoError
from zhizao.storage.connection import connect
from zhizao.storage.kpi import display_zone
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
    url: str, since: datetime | None, until: datetime | None, micro: float, history_days: int
) -> tuple[RollupReport, ZoneInfo]:
    conn = await connect(url, autocommit=True)
    async with conn:
        zone = await display_zone(conn)
        if since is None:
            report = await run_rollups(
                conn, until=until, micro_stop_s=micro, history_days=history_days
            )
            return report, zone
        with Progress(
            TextColumn("回填 backfill"), BarColumn(), MofNCompleteColumn(),
            TextColumn("devices"), TimeRemainingColumn(), console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task("rollup", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = await run_rollups(
                conn, since=since, until=until, micro_stop_s=micro,
                history_days=history_days, progress=progress,
            )  # fmt: skip
            return report, zone


@app.command("run")
def run_command(
    since: str | None = typer.Option(
        None,
        help="Also recompute every device from this instant (ISO 8601 with offset), e.g."
        " after changing the micro-stop threshold. Late data, new devices and ledger"
        " changes need no --since.",
    ),
    until: str | None = typer.Option(None, help="Stop at this instant instead of now."),
    micro_stop_s: float | None = typer.Option(
        None,
        help="Stops shorter than this many seconds are micro-stops (短暂停机);"
        " default env ZHIZAO_KPI_MICRO_STOP_S or 120.",
    ),
    history_days: int | None = typer.Option(
        None,
        min=0,
        help="Devices without older data are rolled up from this many days before today"
        " (never before commissioning); default env ZHIZAO_KPI_HISTORY_DAYS or 62.",
    ),
    db_url: DbUrlOption = None,
) -> None:
    """Roll up what was ingested, loaded late or changed in the ledger since the last run."""
    settings = db_settings(db_url)
    try:
        defaults = rollup_settings()
        report, zone = asyncio.run(
            _run(
                settings.url,
                parse_instant(since, "--since"),
                parse_instant(until, "--until"),
                defaults.micro_stop_s if micro_stop_s is None else micro_stop_s,
                defaults.history_days if history_days is None else history_days,
            )
        )
    except ZhizaoError as exc:
        raise fail(exc) from exc
    until_local = report.until.astimezone(zone).isoformat(sep=" ", timespec="minutes")
    console.print(
        f"汇总完成 rolled up until {until_local}: {report.devices} devices,"
        f" {report.device_hours} device-hours, {report.device_days} device-days,"
        f" {report.dirty_marks} dirty marks consumed in {report.seconds:.2f} s"
        f" ({report.device_hours_per_s:,.0f} device-hours/s)"
    )


@app.command("serve")
def serve_command(
    db_url: DbUrlOption = None,
    health_port: int | None = typer.Option(
        None, help="Port of /health and /metrics (env ZHIZAO_ROLLUP_HEALTH_PORT, default 9110)."
    ),
    interval_s: float | None = typer.Option(
        None, min=0.01, help="Seconds between runs (env ZHIZAO_KPI_INTERVAL_S, default 60)."
    ),
    until: str | None = typer.Option(
        None,
        help="Roll up to this fixed instant instead of the database clock (replays of"
        " history, tests).",
    ),
) -> None:
    """Run the rollups on a schedule until SIGTERM, with /health and /metrics.

    Restarts a failed run with backoff; several may run at once (one computes at a
    time, the others stand by). docs/operations.md.
    """
    overrides: dict[str, object] = {"database": db_settings(db_url)}
    if health_port is not None:
        overrides["health_port"] = health_port
    try:
        fixed = parse_instant(until, "--until")
        settings = rollup_service_settings(**overrides)
        if interval_s is not None:
            settings.rollup = settings.rollup.model_copy(update={"interval_s": interval_s})
        asyncio.run(serve_rollups(settings, until=None if fixed is None else (lambda: fixed)))
    except ZhizaoError as exc:
        raise fail(exc) from exc
