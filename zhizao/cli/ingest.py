"""``zhizao ingest``: run a worker; list and replay dead letters."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from ingest import ingest_settings, run_ingest
from ingest.replay import replay_dead_letters
from zhizao.cli.common import DbUrlOption, console, db_settings, fail
from zhizao.errors import ZhizaoError
from zhizao.storage.connection import connect
from zhizao.storage.deadletters import list_dead_letters

app = typer.Typer(help="Ingest: broker → database; dead letters.", no_args_is_help=True)
dead_letters = typer.Typer(help="Rejected messages and points.", no_args_is_help=True)
app.add_typer(dead_letters, name="dead-letters")


@app.command("run")
def run_command(  # noqa: PLR0917 - typer maps each option to a parameter
    db_url: DbUrlOption = None,
    mqtt_url: Annotated[
        str | None,
        typer.Option(help="mqtt://host:port or mqtts:// (env ZHIZAO_INGEST_MQTT_URL)."),
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="MQTT protocol: 5 or 3.1.1.")] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Stable client id: the persistent session's name.")
    ] = None,
    shared_group: Annotated[
        str | None, typer.Option(help="Shared subscription group ('' for none).")
    ] = None,
    health_port: Annotated[
        int | None, typer.Option(help="Port of /healthz and /metrics (default 9109).")
    ] = None,
) -> None:
    """Consume the uplink topics and store them until SIGTERM."""
    # Also without --db-url: db_settings checks the schema of the ZHIZAO_DB_* database.
    overrides: dict[str, object] = {"database": db_settings(db_url)}
    if mqtt_url:
        overrides["mqtt_url"] = mqtt_url
    if protocol:
        overrides["mqtt_protocol"] = protocol
    if client_id:
        overrides["client_id"] = client_id
    if shared_group is not None:
        overrides["shared_group"] = shared_group or None
    if health_port is not None:
        overrides["health_port"] = health_port
    try:
        settings = ingest_settings(**overrides)
        asyncio.run(run_ingest(settings))
    except ZhizaoError as exc:
        raise fail(exc) from exc


@dead_letters.command("list")
def list_command(
    db_url: DbUrlOption = None,
    include_replayed: Annotated[
        bool, typer.Option("--all", help="Also those already replayed.")
    ] = False,
    enterprise: Annotated[str | None, typer.Option(help="Credit code.")] = None,
    reason: Annotated[str | None, typer.Option(help="Reason contains this text.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """List dead letters, oldest first."""

    async def _list() -> None:
        conn = await connect(db_settings(db_url).url)
        async with conn:
            letters = await list_dead_letters(
                conn,
                pending_only=not include_replayed,
                enterprise=enterprise,
                reason_contains=reason,
                limit=limit,
            )
        table = Table("id", "received", "topic", "seq", "point", "reason", "bytes", "replayed")
        for d in letters:
            table.add_row(
                str(d.id),
                d.received_at.isoformat(timespec="seconds"),
                d.topic,
                "" if d.seq is None else str(d.seq),
                "" if d.point_index is None else str(d.point_index),
                d.reason,
                str(len(d.payload)),
                "" if d.replayed_at is None else d.replayed_at.isoformat(timespec="seconds"),
            )
        console.print(table)

    try:
        asyncio.run(_list())
    except ZhizaoError as exc:
        raise fail(exc) from exc


@dead_letters.command("replay")
def replay_command(
    db_url: DbUrlOption = None,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Only these ids.")] = None,
    enterprise: Annotated[str | None, typer.Option(help="Credit code.")] = None,
    reason: Annotated[str | None, typer.Option(help="Reason contains this text.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 10_000,
) -> None:
    """Run pending dead letters through validation again; store what now passes.

    Exits 1 if some letter could not be replayed (unreadable, or refused by the
    database); each is listed with its id and why, and stays pending.
    """
    try:
        report = asyncio.run(
            replay_dead_letters(
                db_settings(db_url).url,
                ids=ids,
                enterprise=enterprise,
                reason_contains=reason,
                limit=limit,
                max_metric_names=ingest_settings().max_metric_names,
            )
        )
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(
        f"examined {report.examined}, replayed {report.replayed} ({report.rows_new} new rows,"
        f" {report.still_dead_points} points dead-lettered again),"
        f" still failing {len(report.still_failing)}, could not replay {len(report.failed)}"
    )
    for pk, why in report.still_failing[:20]:
        console.print(f"  {pk}: {why}", markup=False)
    if report.failed:
        # Every one of them: each needs a look, unlike letters that still fail validation.
        console.print("could not replay (still pending):")
        for pk, why in report.failed:
            console.print(f"  {pk}: {why}", markup=False)
        raise typer.Exit(1)
