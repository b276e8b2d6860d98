"""``zhizao dashboards push`` against a fake Grafana (tests/dashboards/fake_grafana.py)
and ``zhizao dashboards export``: folders per level, a datasource per enterprise role
and one for the aggregate role, the four dashboards; a rerun changes nothing and says so.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from grafana_client.api import GrafanaApi
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from dashboards.build import LEVELS, dashboards, enterprise_ds_uid, to_json
from dashboards.provision import Action, Database, ProvisionError, export, push
from tests.dashboards.conftest import World
from tests.dashboards.fake_grafana import FakeGrafana
from tests.dashboards.world import HOME
from zhizao.cli import app

TOKEN = "glsa_test_token_not_a_secret"  # noqa: S105 - the fake Grafana's own
GOLDEN = Path(__file__).parent / "golden"
RENEWED = "renewed-for-the-test"  # a made-up password of the test
DB = Database("db.example:5432", "zhizao", "require")


@pytest.fixture
def grafana(httpserver: HTTPServer) -> FakeGrafana:
    fake = FakeGrafana(TOKEN)
    fake.install(httpserver)
    return fake


def _api(httpserver: HTTPServer, token: str = TOKEN) -> GrafanaApi:
    return GrafanaApi.from_url(httpserver.url_for("/").rstrip("/"), credential=token)


def test_push_makes_folders_datasources_and_dashboards(
    world: World, grafana: FakeGrafana, httpserver: HTTPServer
) -> None:
    report = push(_api(httpserver), world.roles, DB)
    assert report.grafana_version == "11.6.0"
    assert {c.action for c in report.changes} == {Action.CREATED}
    assert set(grafana.folders) == {level.folder_uid for level in LEVELS}
    enterprises = [r for r in world.roles if r.kind == "enterprise"]
    assert len(enterprises) == 8
    assert len(grafana.datasources) == 9
    home = world.role_of(HOME)
    source = grafana.datasources[enterprise_ds_uid(HOME)]
    assert source["user"] == home.name
    assert source["url"] == "db.example:5432"
    assert source["jsonData"]["database"] == "zhizao"
    assert grafana.passwords[enterprise_ds_uid(HOME)] == home.password
    assert grafana.datasources["zhizao-agg"]["user"] == world.role_of(None).name
    for level in LEVELS:
        saved = grafana.boards[level.uid]
        assert saved["meta"]["folderUid"] == level.folder_uid
        stored = {k: v for k, v in saved["dashboard"].items() if k not in ("id", "version")}
        assert stored == to_json(dashboards()[level.uid])


def test_a_second_push_changes_nothing(
    world: World, grafana: FakeGrafana, httpserver: HTTPServer
) -> None:
    push(_api(httpserver), world.roles, DB)
    writes = len(grafana.writes)
    again = push(_api(httpserver), [_known(r) for r in world.roles], DB)
    assert not again.changed
    assert {c.action for c in again.changes} == {Action.UNCHANGED}
    assert len(grafana.writes) == writes  # not one POST or PUT


def _known(role):  # type: ignore[no-untyped-def]
    """The role as a later run finds it: made before, password in the file."""
    from dataclasses import replace

    return replace(role, created=False)


def test_what_was_changed_by_hand_is_put_back_and_nothing_else(
    world: World, grafana: FakeGrafana, httpserver: HTTPServer
) -> None:
    push(_api(httpserver), world.roles, DB)
    grafana.boards["zhizao-cluster"]["dashboard"]["title"] = "edited in the UI"
    grafana.datasources["zhizao-agg"]["url"] = "elsewhere:5432"
    grafana.folders["zhizao-line"]["title"] = "Lines"
    report = push(_api(httpserver), [_known(r) for r in world.roles], DB)
    changed = {(c.kind, c.uid) for c in report.changes if c.action is Action.UPDATED}
    assert changed == {
        ("dashboard", "zhizao-cluster"), ("datasource", "zhizao-agg"), ("folder", "zhizao-line")
    }  # fmt: skip
    assert grafana.boards["zhizao-cluster"]["dashboard"]["title"].startswith("产业集群")
    assert grafana.datasources["zhizao-agg"]["url"] == "db.example:5432"


def test_a_new_password_reaches_grafana(
    world: World, grafana: FakeGrafana, httpserver: HTTPServer
) -> None:
    push(_api(httpserver), [_known(r) for r in world.roles], DB)
    from dataclasses import replace

    home = world.role_of(HOME)
    renewed = [replace(r, password=RENEWED, created=True) if r == home else _known(r)
               for r in world.roles]  # fmt: skip
    report = push(_api(httpserver), renewed, DB)
    assert [c.uid for c in report.changes if c.action is Action.UPDATED] == [
        enterprise_ds_uid(HOME)
    ]
    assert grafana.passwords[enterprise_ds_uid(HOME)] == RENEWED


def test_a_refused_token_is_one_sentence(
    world: World, grafana: FakeGrafana, httpserver: HTTPServer
) -> None:
    with pytest.raises(ProvisionError, match="401"):
        push(_api(httpserver, "wrong"), world.roles, DB)
    assert grafana.writes == []


def test_the_cli_pushes_then_says_no_change(
    world: World, grafana: FakeGrafana, httpserver: HTTPServer
) -> None:
    args = ["dashboards", "push", "--url", httpserver.url_for("/").rstrip("/"),
            "--db-url", world.url, "--passwords", str(world.passwords),
            "--pg-address", "db.example:5432"]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(app, args, env={"ZHIZAO_GRAFANA_TOKEN": TOKEN})
    assert first.exit_code == 0, first.output
    assert "created dashboard zhizao-province" in first.output
    grafana.boards["zzz-other"] = {
        "dashboard": {"id": 99, "uid": "zzz-other", "title": "mine", "tags": ["zhizao"],
                      "version": 1},
        "meta": {"folderUid": "", "url": "/d/zzz-other/mine"},
    }  # fmt: skip
    second = runner.invoke(app, [*args, "--token", TOKEN])
    assert second.exit_code == 0, second.output
    assert "no change" in second.output
    assert "left alone: dashboard zzz-other" in second.output
    assert "created" not in second.output
    assert "updated" not in second.output
    bad = runner.invoke(app, [*args, "--token", "wrong"])
    assert bad.exit_code == 2
    assert "401" in bad.output


def test_export_writes_provisioning_without_secrets(world: World, tmp_path: Path) -> None:
    written = export(tmp_path, world.roles, DB)
    assert all(p.exists() for p in written)
    providers = yaml.safe_load((tmp_path / "provisioning/dashboards/zhizao.yaml").read_text())
    assert [p["folderUid"] for p in providers["providers"]] == [lv.folder_uid for lv in LEVELS]
    sources_text = (tmp_path / "provisioning/datasources/zhizao.yaml").read_text()
    sources = yaml.safe_load(sources_text)["datasources"]
    assert len(sources) == 9
    env = tmp_path / "grafana-passwords.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1) for line in env.read_text().splitlines() if not line.startswith("#")
    )
    for source in sources:
        reference = source["secureJsonData"]["password"]
        assert reference.startswith("${ZHIZAO_PG_PASSWORD_")
        role = next(r for r in world.roles if r.name == source["user"])
        assert values[reference[2:-1]] == role.password
        assert role.password not in sources_text
    for level in LEVELS:
        path = tmp_path / "dashboards" / level.folder_uid / f"{level.uid}.json"
        assert json.loads(path.read_text()) == json.loads(
            (GOLDEN / f"{level.uid}.json").read_text()
        )


def test_export_of_dashboards_alone_needs_no_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "export", str(tmp_path), "--no-datasources"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "provisioning/datasources").exists()
    assert len(list((tmp_path / "dashboards").rglob("*.json"))) == 4


DEPLOY = Path(__file__).parents[2] / "deploy" / "grafana"


def test_the_files_deploy_mounts_are_what_export_writes_now(tmp_path: Path) -> None:
    written = export(tmp_path, None, None)
    for path in written:
        shipped = DEPLOY / path.relative_to(tmp_path)
        assert shipped.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{shipped} is stale: run `zhizao dashboards export deploy/grafana --no-datasources`"
        )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    grafana = compose["services"]["grafana"]
    assert grafana["image"].endswith(":11.6.0")  # the version the SDK build is pinned for
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith(".")}
    assert mounts["./provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((DEPLOY / "provisioning/dashboards/zhizao.yaml").read_text())
    for provider in providers["providers"]:
        inside = provider["options"]["path"].removeprefix(mounts["./dashboards"]).lstrip("/")
        assert list((DEPLOY / "dashboards" / inside).glob("*.json")), provider["name"]
    # No default secret: the admin password must be given.
    assert ":?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_an_organisation_of_one_enterprise_gets_no_aggregates(
    world: World, grafana: FakeGrafana, httpserver: HTTPServer
) -> None:
    args = ["dashboards", "push", "--url", httpserver.url_for("/").rstrip("/"),
            "--token", TOKEN, "--db-url", world.url, "--passwords", str(world.passwords),
            "--enterprise", HOME]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert set(grafana.datasources) == {enterprise_ds_uid(HOME)}
    assert set(grafana.boards) == {"zhizao-line", "zhizao-enterprise"}
    assert set(grafana.folders) == {"zhizao-line", "zhizao-enterprise"}


def test_an_unreachable_grafana_is_one_sentence(world: World) -> None:
    from tests.fix_mqtt import free_port

    api = GrafanaApi.from_url(f"http://127.0.0.1:{free_port()}", credential=TOKEN, timeout=2)
    with pytest.raises(ProvisionError, match="Grafana cannot be reached"):
        push(api, world.roles, DB)


def test_drop_roles_removes_the_databases_roles_and_groups(world: World) -> None:
    """Last in this module: its world's roles are gone afterwards."""
    import psycopg

    names = [r.name for r in world.roles]
    result = CliRunner().invoke(app, ["dashboards", "drop-roles", "--db-url", world.url])
    assert result.exit_code == 0, result.output
    assert f"dropped {len(names) + 2} roles" in result.output  # and the two groups
    with psycopg.connect(world.url) as conn:
        left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,))
        assert left.fetchall() == []
