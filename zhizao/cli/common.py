"""Options and output shared by the command groups."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from zhizao.errors import ZhizaoError
from zhizao.settings import DatabaseSettings

console = Console()
err_console = Console(stderr=True)

DbUrlOption = Annotated[
    str | None,
    typer.Option("--db-url", help="Database URL (default: env ZHIZAO_DB_URL)."),
]


def db_settings(url: str | None) -> DatabaseSettings:
    return DatabaseSettings(url=url) if url else DatabaseSettings()


def fail(error: ZhizaoError, code: int = 2) -> typer.Exit:
    """Print a zhizao error for a person and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {error}")
    return typer.Exit(code)
