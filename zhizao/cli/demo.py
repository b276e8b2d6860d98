"""``zhizao demo``: the platform's main job on embedded defaults.

On a machine with nothing installed but this package it starts an embedded
PostgreSQL (unless ``--db-url`` or ZHIZAO_DB_URL names one), migrates it, imports
the sample equipment ledger of a Zhejiang pilot factory, prints what the registry
holds and where to look, then keeps the platform running until Ctrl-C (or for
``--duration`` seconds). Each step prints as it goes, so a person sees where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from importlib import resources
from pathlib import Path

import typer
from rich.panel import Panel

from zhizao.cli.common import DbUrlOption, console, fail
from zhizao.cli.db import upgrade_database
from zhizao.cli.registry import import_ledger, load_summaries, print_changes, print_summaries
from zhizao.embedded import EmbeddedPostgres, demo_home
from zhizao.errors import ZhizaoError
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import drop_database, redact, with_database

DEMO_DATABASE = "zhizao_demo"


def sample_ledger_path() -> Path:
    return Path(str(resources.files("zhizao.data") / "sample_ledger.xlsx"))


async def _run(db_url: str | None, fresh: bool, duration: float | None) -> None:
    embedded: EmbeddedPostgres | None = None
    if db_url is None:
        pgdata = demo_home() / "pgdata"
        with console.status(f"启动嵌入式 PostgreSQL starting embedded PostgreSQL in {pgdata}"):
            embedded = EmbeddedPostgres(pgdata)
            server_url = await asyncio.to_thread(embedded.start)
        db_url = with_database(server_url, DEMO_DATABASE)
        console.print(f"[green]✓[/] embedded PostgreSQL 18 running ({pgdata})")
    settings = DatabaseSettings(url=db_url)
    try:
        if fresh:
            await drop_database(settings.url)
        with console.status("迁移数据库 migrating the database"):
            result = await upgrade_database(settings)
        console.print(
            f"[green]✓[/] schema at version {result.version}"
            f" ({len(result.applied)} migrations applied;"
            f" {'TimescaleDB' if result.timescaledb else 'plain PostgreSQL'})"
        )
        ledger_file = sample_ledger_path()
        with console.status(f"导入设备台账 importing the sample ledger {ledger_file.name}"):
            ledger, changes = await import_ledger(settings, ledger_file)
        print_changes(ledger, changes)
        print_summaries(await load_summaries(settings))
        console.print(
            Panel.fit(
                f"数据库 database: {redact(settings.url)}\n"
                f"  psql '{settings.url}'\n"
                "  zhizao registry show --db-url '<that URL>'\n"
                f"台账样例 sample ledger: {ledger_file}\n"
                "接入说明 docs: docs/registry-import.md, docs/wire-contract.md",
                title="智造 zhizao demo: where to look",
            )
        )
        await _serve(duration)
    finally:
        if embedded is not None and os.environ.get("ZHIZAO_DEMO_KEEP_DB") != "1":
            await asyncio.to_thread(embedded.stop)


async def _serve(duration: float | None) -> None:
    """Run until Ctrl-C / SIGTERM, or for ``duration`` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is None:
        console.print("运行中 running; Ctrl-C stops the demo")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration)
    console.print("停止 stopping")


def demo(
    db_url: DbUrlOption = None,
    fresh: bool = typer.Option(False, help="Drop the demo database first and start anew."),
    duration: float | None = typer.Option(
        None, help="Stop after this many seconds (default: run until Ctrl-C)."
    ),
) -> None:
    """Run the platform on embedded defaults, print what it holds and where to look."""
    try:
        asyncio.run(_run(db_url or os.environ.get("ZHIZAO_DB_URL"), fresh, duration))
    except ZhizaoError as exc:
        raise fail(exc) from exc
