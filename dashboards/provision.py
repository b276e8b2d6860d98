"""Put the dashboards into Grafana: through its HTTP API (:func:`push`, with
``grafana-client``) or as file provisioning (:func:`export`).

Both make the same things: a folder per level, a PostgreSQL datasource per enterprise
(logging in as that enterprise's role) and one for the aggregates (the aggregate role),
and the four dashboards. :func:`push` compares what Grafana holds with what it would
send and sends only what differs, so a second run changes nothing and says so. What is
compared: folder titles; the datasource fields zhizao sets (and that Grafana has a
password, which it never returns); the dashboard JSON without Grafana's ``id`` and
``version``, and its folder.

Passwords never enter a dashboard or a YAML file: :func:`push` sends them once, when a
role is made or given a new one; :func:`export` writes ``$ENV`` references that Grafana
expands when it reads the provisioning, with the values in a separate file of mode 0600.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards.build import (
    AGGREGATE_DS_UID,
    ENTERPRISE_DS_NAME,
    LEVELS,
    TAG,
    Level,
    dashboards,
    enterprise_ds_uid,
    to_json,
)
from dashboards.query import POSTGRES_TYPE
from dashboards.roles import DashboardRole
from zhizao.errors import ZhizaoError


class ProvisionError(ZhizaoError):
    """Grafana refused or could not be reached; the message names what and why."""


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    kind: str  # folder, datasource, dashboard
    uid: str
    title: str
    action: Action


@dataclass
class PushReport:
    changes: list[Change] = field(default_factory=list)
    #: dashboards tagged zhizao in Grafana that this zhizao does not make (left alone)
    strangers: list[str] = field(default_factory=list)
    grafana_version: str | None = None

    @property
    def changed(self) -> bool:
        return any(c.action is not Action.UNCHANGED for c in self.changes)


@dataclass(frozen=True)
class Database:
    """How Grafana reaches the platform's PostgreSQL (which may differ from how the
    CLI does: another host name inside a compose network, TLS)."""

    address: str  # host:port
    name: str
    sslmode: str = "require"


@dataclass(frozen=True)
class DatasourceSpec:
    body: dict[str, Any]  # without the password
    password: str
    role: DashboardRole

    @property
    def uid(self) -> str:
        return str(self.body["uid"])

    def with_password(self) -> dict[str, Any]:
        return {**self.body, "secureJsonData": {"password": self.password}}


def datasource_specs(roles: Sequence[DashboardRole], db: Database) -> list[DatasourceSpec]:
    out: list[DatasourceSpec] = []
    for role in roles:
        if role.kind == "aggregate":
            uid, name = AGGREGATE_DS_UID, "zhizao 汇总 aggregates"
        else:
            assert role.enterprise is not None  # noqa: S101 - an enterprise role has one
            uid = enterprise_ds_uid(role.enterprise)
            name = f"{ENTERPRISE_DS_NAME}{role.enterprise_name} {role.enterprise}"
        body: dict[str, Any] = {
            "uid": uid,
            "name": name,
            "type": POSTGRES_TYPE,
            "access": "proxy",
            "url": db.address,
            "user": role.name,
            "basicAuth": False,
            "isDefault": False,
            "jsonData": {
                "database": db.name,
                "sslmode": db.sslmode,
                "postgresVersion": 1500,
                "timescaledb": False,
                "maxOpenConns": 5,
                "maxIdleConns": 2,
                "connMaxLifetime": 14400,
            },
        }
        out.append(DatasourceSpec(body, role.password, role))
    return out


def _same(have: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether Grafana's object already has every field zhizao sets, as it sets them."""
    for key, value in want.items():
        if isinstance(value, dict):
            if not isinstance(have.get(key), dict) or not _same(have[key], value):
                return False
        elif have.get(key) != value:
            return False
    return True


def _get(call: Any, *args: Any) -> dict[str, Any] | None:
    """A GET of grafana-client; None on 404."""
    try:
        result: dict[str, Any] = call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise
    return result


def _dashboard_body(board: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in board.items() if k not in ("id", "version")}


def push(
    api: Any, roles: Sequence[DashboardRole], db: Database, *, aggregate: bool = True
) -> PushReport:
    """Create or update folders, datasources and dashboards; changes nothing that is
    already as zhizao makes it. ``api`` is a ``grafana_client.GrafanaApi`` (untyped: its
    answers are Grafana's JSON, read here as dicts). Without ``aggregate``, only the line and
    enterprise levels and the enterprise datasources (a Grafana organisation of one
    enterprise must not hold the aggregate datasource: it shows every enterprise's rates)."""
    report = PushReport()
    try:
        build = api.health.check() or {}
        report.grafana_version = build.get("version")
        levels = [lv for lv in LEVELS if aggregate or not lv.aggregate]
        kept = [r for r in roles if aggregate or r.kind == "enterprise"]
        _push(api, levels, kept, db, report)
    except GrafanaException as exc:
        raise ProvisionError(
            f"Grafana answered {exc.status_code}: {exc.message}"
            if exc.status_code
            else f"Grafana cannot be reached: {exc.message}"
        ) from exc
    except OSError as exc:
        raise ProvisionError(f"Grafana cannot be reached: {exc}") from exc
    return report


def _push(
    api: Any,
    levels: Sequence[Level],
    roles: Sequence[DashboardRole],
    db: Database,
    report: PushReport,
) -> None:
    _push_folders(api, levels, report)
    _push_datasources(api, roles, db, report)
    _push_dashboards(api, levels, report)


def _push_folders(api: Any, levels: Sequence[Level], report: PushReport) -> None:
    for level in levels:
        have = _get(api.folder.get_folder, level.folder_uid)
        if have is None:
            api.folder.create_folder(level.folder_title, uid=level.folder_uid)
            action = Action.CREATED
        elif have.get("title") != level.folder_title:
            api.folder.update_folder(level.folder_uid, title=level.folder_title, overwrite=True)
            action = Action.UPDATED
        else:
            action = Action.UNCHANGED
        report.changes.append(Change("folder", level.folder_uid, level.folder_title, action))


def _push_datasources(
    api: Any, roles: Sequence[DashboardRole], db: Database, report: PushReport
) -> None:
    for spec in datasource_specs(roles, db):
        have = _get(api.datasource.get_datasource_by_uid, spec.uid)
        if have is None:
            api.datasource.create_datasource(spec.with_password())
            action = Action.CREATED
        elif (
            spec.role.created
            or not (have.get("secureJsonFields") or {}).get("password")
            or not _same(have, spec.body)
        ):
            # A new role or password, or a datasource changed by hand: send it whole.
            api.datasource.update_datasource_by_uid(spec.uid, spec.with_password())
            action = Action.UPDATED
        else:
            action = Action.UNCHANGED
        report.changes.append(Change("datasource", spec.uid, str(spec.body["name"]), action))


def _push_dashboards(api: Any, levels: Sequence[Level], report: PushReport) -> None:
    boards = dashboards()
    for level in levels:
        body = to_json(boards[level.uid])
        have = _get(api.dashboard.get_dashboard, level.uid)
        if have is None:
            action = Action.CREATED
        elif (
            _dashboard_body(have.get("dashboard", {})) == _dashboard_body(body)
            and (have.get("meta") or {}).get("folderUid") == level.folder_uid
        ):
            action = Action.UNCHANGED
        else:
            action = Action.UPDATED
        if action is not Action.UNCHANGED:
            api.dashboard.update_dashboard({
                "dashboard": {**_dashboard_body(body), "id": None},
                "folderUid": level.folder_uid,
                "overwrite": True,
                "message": "zhizao dashboards push",
            })  # fmt: skip
        report.changes.append(Change("dashboard", level.uid, str(body["title"]), action))

    ours = {level.uid for level in LEVELS}
    found = api.search.search_dashboards(tag=TAG, type_="dash-db") or []
    report.strangers = sorted(str(d["uid"]) for d in found if d.get("uid") not in ours)


def _env_name(role: DashboardRole) -> str:
    return "ZHIZAO_PG_PASSWORD_" + role.name.upper()


def export(
    directory: Path,
    roles: Sequence[DashboardRole] | None,
    db: Database | None,
    *,
    dashboards_path: str = "/var/lib/grafana/dashboards/zhizao",
) -> list[Path]:
    """Write Grafana file provisioning under ``directory``; returns the files written.

    ``provisioning/dashboards/zhizao.yaml`` (a provider per folder, reading
    ``dashboards_path``/<level>/), ``dashboards/<level>/<uid>.json``, and with roles
    ``provisioning/datasources/zhizao.yaml`` (passwords as ``$ENV`` references) and
    ``grafana-passwords.env`` (mode 0600) with their values.
    """
    written: list[Path] = []
    boards = dashboards()
    providers = []
    for level in LEVELS:
        folder = directory / "dashboards" / level.folder_uid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{level.uid}.json"
        path.write_text(
            json.dumps(to_json(boards[level.uid]), ensure_ascii=False, indent=2, sort_keys=True)
            + "\n",
            encoding="utf-8",
        )
        written.append(path)
        providers.append({
            "name": level.folder_uid,
            "orgId": 1,
            "type": "file",
            "folder": level.folder_title,
            "folderUid": level.folder_uid,
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 60,
            "options": {"path": f"{dashboards_path}/{level.folder_uid}"},
        })  # fmt: skip
    written.append(
        _yaml(directory / "provisioning" / "dashboards" / "zhizao.yaml",
              {"apiVersion": 1, "providers": providers})
    )  # fmt: skip
    if roles is not None and db is not None:
        specs = datasource_specs(roles, db)
        sources = [
            {
                **{k: v for k, v in spec.body.items() if k != "isDefault"},
                "orgId": 1,
                "editable": False,
                "secureJsonData": {"password": "${" + _env_name(spec.role) + "}"},
            }
            for spec in specs
        ]
        written.append(
            _yaml(directory / "provisioning" / "datasources" / "zhizao.yaml",
                  {"apiVersion": 1, "datasources": sources})
        )  # fmt: skip
        env = directory / "grafana-passwords.env"
        fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("# Passwords of the dashboard roles: give these to Grafana's environment.\n")
            for spec in specs:
                out.write(f"{_env_name(spec.role)}={spec.password}\n")
        os.chmod(env, 0o600)
        written.append(env)
    return written


def _yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by `zhizao dashboards export`; edit the code in dashboards/, not this file.\n"
        + yaml.safe_dump(document, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return path
