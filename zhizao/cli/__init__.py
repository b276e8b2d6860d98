"""The ``zhizao`` command: the one place that composes the services.

Each command group lives in its own module and is registered here explicitly.
"""

from __future__ import annotations

import typer

from zhizao import __version__
from zhizao.cli import (
    anomalies,
    api,
    contract,
    dashboards,
    db,
    edge,
    federation,
    ingest,
    kpi,
    registry,
    report,
    rollup,
    sim,
    users,
)
from zhizao.cli.demo import demo
from zhizao.logs import configure_logging

app = typer.Typer(
    name="zhizao",
    help="智造 zhizao: industrial-internet data platform (edge, ingest, KPIs, API).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(db.app, name="db")
app.add_typer(registry.app, name="registry")
app.add_typer(contract.app, name="contract")
app.add_typer(edge.app, name="edge")
app.add_typer(sim.app, name="sim")
app.add_typer(ingest.app, name="ingest")
app.add_typer(rollup.app, name="rollup")
kpi.app.command("anomalies")(anomalies.anomalies_command)
app.add_typer(kpi.app, name="kpi")
app.add_typer(report.app, name="report")
app.add_typer(federation.app, name="federation")
app.add_typer(api.app, name="api")
app.add_typer(users.app, name="users")
app.add_typer(users.tokens_app, name="tokens")
app.add_typer(dashboards.app, name="dashboards")
app.command("demo")(demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zhizao {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    log_json: bool | None = typer.Option(
        None, "--log-json/--log-text", help="JSON log lines (default when not on a terminal)."
    ),
    log_level: str | None = typer.Option(None, help="DEBUG, INFO, WARNING (env ZHIZAO_LOG_LEVEL)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    configure_logging(json_lines=log_json, level=log_level)


def main() -> None:
    app()
