"""``zhizao dashboards``: Grafana dashboards as code (docs/dashboards.md).

``push`` makes the dashboard roles in the database, then creates or updates Grafana's
folders, datasources and dashboards through its HTTP API; a rerun changes nothing and
says so. ``export`` writes the same as Grafana file provisioning. ``drop-roles`` removes
the roles of a database that is going away (roles outlive databases).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import typer
from grafana_client.api import GrafanaApi
from psycopg.conninfo import conninfo_to_dict

from dashboards.provision import Action, Database, export, push
from dashboards.roles import DashboardRole, PasswordFile, drop_roles, ensure_roles
from zhizao.cli.common import DbUrlOption, console, db_settings, fail, with_conn
from zhizao.errors import StorageError, ZhizaoError

app = typer.Typer(
    help="Grafana 看板 dashboards: push to a Grafana, export provisioning files.",
    no_args_is_help=True,
)

DEFAULT_PASSWORDS = Path.home() / ".config" / "zhizao" / "dashboard-roles.json"

PasswordsOption = typer.Option(
    DEFAULT_PASSWORDS,
    "--passwords",
    help="File (mode 0600) keeping the dashboard roles' generated passwords.",
)
PgAddressOption = typer.Option(
    None,
    "--pg-address",
    help="host:port at which Grafana reaches PostgreSQL (default: the --db-url's).",
)
SslModeOption = typer.Option("require", "--pg-sslmode", help="sslmode of the datasources.")
EnterpriseOption = typer.Option(
    None,
    "--enterprise",
    help="Only this enterprise (repeatable): its role, datasource and the line and"
    " enterprise dashboards, for a Grafana organisation of its own; no aggregates.",
)


def _database(url: str, address: str | None, sslmode: str) -> Database:
    params = conninfo_to_dict(url)
    host = params.get("host") or "127.0.0.1"
    port = params.get("port") or "5432"
    return Database(address or f"{host}:{port}", str(params.get("dbname") or "zhizao"), sslmode)


def _roles(url: str, passwords: Path, enterprises: list[str] | None) -> list[DashboardRole]:
    try:
        return with_conn(
            url, lambda conn: ensure_roles(conn, PasswordFile(passwords), enterprises=enterprises)
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StorageError(
            f"cannot make the dashboard roles: {exc}; the database user needs CREATEROLE"
            " and must own the tables"
        ) from exc


@app.command("push")
def push_command(  # noqa: PLR0917 - typer maps each option to a parameter
    url: str = typer.Option(..., "--url", help="Grafana's URL, e.g. http://grafana:3000"),
    token: str = typer.Option(
        ...,
        "--token",
        envvar="ZHIZAO_GRAFANA_TOKEN",
        help="A Grafana service-account token (env ZHIZAO_GRAFANA_TOKEN keeps it out of ps).",
    ),
    db_url: DbUrlOption = None,
    passwords: Path = PasswordsOption,
    pg_address: str | None = PgAddressOption,
    pg_sslmode: str = SslModeOption,
    enterprise: list[str] | None = EnterpriseOption,
) -> None:
    """Create or update folders, datasources and dashboards in Grafana; idempotent."""
    settings = db_settings(db_url)
    try:
        roles = _roles(settings.url, passwords, enterprise)
        api = GrafanaApi.from_url(url, credential=token)
        report = push(
            api, roles, _database(settings.url, pg_address, pg_sslmode), aggregate=not enterprise
        )
    except ZhizaoError as exc:
        raise fail(exc) from exc
    for change in report.changes:
        if change.action is not Action.UNCHANGED:
            console.print(f"{change.action} {change.kind} {change.uid} ({change.title})")
    for uid in report.strangers:
        console.print(f"left alone: dashboard {uid} is tagged zhizao but not made by zhizao")
    if report.changed:
        counts = {a: sum(c.action is a for c in report.changes) for a in Action}
        console.print(
            f"Grafana {report.grafana_version or '?'}: {counts[Action.CREATED]} created,"
            f" {counts[Action.UPDATED]} updated, {counts[Action.UNCHANGED]} unchanged"
        )
    else:
        console.print(
            f"no change: Grafana {report.grafana_version or '?'} already has all"
            f" {len(report.changes)} folders, datasources and dashboards as zhizao makes them"
        )


@app.command("export")
def export_command(  # noqa: PLR0917 - typer maps each option to a parameter
    directory: Path = typer.Argument(..., help="Where to write provisioning/ and dashboards/."),
    db_url: DbUrlOption = None,
    datasources: bool = typer.Option(
        True, help="Also make the roles and write the datasources (needs the database)."
    ),
    passwords: Path = PasswordsOption,
    pg_address: str | None = PgAddressOption,
    pg_sslmode: str = SslModeOption,
    dashboards_path: str = typer.Option(
        "/var/lib/grafana/dashboards/zhizao", help="Where Grafana will read the JSON files."
    ),
) -> None:
    """Write Grafana file provisioning (YAML) and the dashboards' JSON."""
    try:
        if datasources:
            settings = db_settings(db_url)
            roles = _roles(settings.url, passwords, None)
            db = _database(settings.url, pg_address, pg_sslmode)
            written = export(directory, roles, db, dashboards_path=dashboards_path)
        else:
            written = export(directory, None, None, dashboards_path=dashboards_path)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    for path in written:
        console.print(f"wrote {path}", soft_wrap=True)


@app.command("drop-roles")
def drop_roles_command(db_url: DbUrlOption = None) -> None:
    """Drop this database's dashboard roles (before dropping the database)."""
    settings = db_settings(db_url)
    try:
        dropped = with_conn(settings.url, drop_roles)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"dropped {len(dropped)} roles" + (f": {', '.join(dropped)}" if dropped else ""))
