"""deploy/compose/compose.yaml, checked without a Docker engine.

No container of it runs on the development machine. What can be checked here is: the
file against the Compose Specification's JSON schema (vendored, tests/data/compose-spec),
its variables against .env.example (no secret there, every secret required), every
``zhizao`` command against the CLI, every ``ZHIZAO_*`` variable against the settings
class that reads it, and the settings each service builds from the environment the
file gives it (with the example's placeholders: refused, naming the variable).
"""

from __future__ import annotations

# ruff: noqa: S104, S105 - containers listen on all their addresses; secrets are made up
import hashlib
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from jsonschema import Draft202012Validator
from pydantic_settings import BaseSettings

from edge.config import load_config
from edge.settings import EdgeSettings, apply_settings, edge_settings
from edge.simulator.edge_config import edge_config_for
from edge.simulator.scenario import bundled, load_scenario
from ingest import ingest_settings
from ingest.rollup_service import RollupServiceSettings
from ingest.settings import IngestSettings
from platform_api.settings import ApiSettings, api_settings
from tests.deploy.compose import (
    COMPOSE_DIR,
    ENV_EXAMPLE,
    MissingVariable,
    chosen_env,
    interpolate,
    raw,
    read_env,
    required,
    service_env,
    variables,
)
from zhizao.cli import app
from zhizao.errors import ConfigError
from zhizao.settings import DatabaseSettings, database_settings
from zhizao.storage.rollups import RollupSettings

SCHEMA_DIR = Path(__file__).parents[1] / "data" / "compose-spec"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

#: Variables of the services that no settings class reads, and who does.
NOT_SETTINGS = {
    "ZHIZAO_LOG_LEVEL": "the CLI's --log-level (zhizao/logs.py)",
    "ZHIZAO_HEALTH_URL": "the container health check (zhizao/probe.py)",
}


def _prefixes() -> dict[str, type[BaseSettings]]:
    return {
        "ZHIZAO_DB_": DatabaseSettings,
        "ZHIZAO_INGEST_": IngestSettings,
        "ZHIZAO_KPI_": RollupSettings,
        "ZHIZAO_API_": ApiSettings,
        "ZHIZAO_EDGE_": EdgeSettings,
        "ZHIZAO_ROLLUP_": RollupServiceSettings,
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as Compose loads it for an installation that filled in .env."""
    return interpolate(raw(), chosen_env())


def _zhizao_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in doc["services"].items() if "build" in s}


def _leaf(tokens: list[str]) -> tuple[Any, list[str]]:
    command: Any = typer.main.get_command(app)
    while hasattr(command, "commands") and tokens and tokens[0] in command.commands:
        command, tokens = command.commands[tokens[0]], tokens[1:]
    return command, tokens


# -- the file itself -----------------------------------------------------------------


def test_the_vendored_schema_is_the_named_one() -> None:
    digest = hashlib.sha256((SCHEMA_DIR / "compose-spec.json").read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, "tests/data/compose-spec/README.md names another file"


def test_compose_file_is_valid_by_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    for doc in (raw(), compose):  # as written, and after interpolation
        problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(doc)]  # fmt: skip
        assert problems == []
    # The schema is not a formality: a misspelt key is refused.
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["enviroment"] = {}
    assert any("enviroment" in e.message for e in validator.iter_errors(broken))


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rpartition(":")[2]
        assert "/" not in tag, f"{name}: {image} is not pinned"
        assert tag != "latest", f"{name}: {image} is not pinned"
        assert re.match(r"^v?\d+\.\d+\.\d+", tag), f"{name}: {image} has no x.y.z version"
    db = compose["services"]["db"]["image"]
    assert db.startswith("timescale/timescaledb:")  # the official TimescaleDB image


def test_references_resolve(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], set(compose["volumes"])
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on {dependency}"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                path = (COMPOSE_DIR / source).resolve()
                ignored = ("passwd", "grafana-passwords.env", "certs")
                assert path.exists() or path.name in ignored, f"{name}: {source} does not exist"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
        for config in service.get("configs") or []:
            assert config["source"] in compose["configs"]


# -- the .env ------------------------------------------------------------------------


def test_env_example_holds_no_secret_and_compose_requires_each() -> None:
    example = read_env(ENV_EXAMPLE)
    doc = raw()
    assert set(example) - {"COMPOSE_PROFILES"} <= variables(doc), "unused variables"
    assert variables(doc) <= set(example), "variables .env.example does not list"
    secrets = {key for key in example if re.search(r"PASSWORD|SECRET|COOKIE", key)}
    assert secrets <= required(doc), "a secret compose would start without"
    for key in secrets:
        assert example[key] == "" or example[key].startswith("change-me"), key
    # Left empty, Compose itself refuses to start and names the variable.
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(doc, example)
    env = {**example, "POSTGRES_PASSWORD": "x", "EMQX_NODE_COOKIE": "x",
           "EMQX_DASHBOARD_PASSWORD": "x"}  # fmt: skip
    with pytest.raises(MissingVariable, match="GF_SECURITY_ADMIN_PASSWORD"):
        interpolate(doc, env)


def _settings_of(service: dict[str, Any], tmp: Path) -> list[object]:
    """What the service's command builds from its environment (as the CLI does)."""
    command = service["command"]
    built: list[object] = []
    if command[:2] == ["ingest", "run"]:
        built.append(ingest_settings())
    elif command[:2] == ["api", "run"]:
        built.append(api_settings(database=database_settings()))
    elif command[:2] == ["rollup", "serve"]:
        module = importlib.import_module("ingest.rollup_service")
        built.append(module.rollup_service_settings())
    elif command[:2] == ["edge", "run"]:
        mounted = {target: source for source, target, *_ in
                   (m.split(":") for m in service["volumes"])}  # fmt: skip
        config = load_config(COMPOSE_DIR / mounted[command[2]])
        built.append(apply_settings(config, edge_settings()))
    if "ZHIZAO_DB_URL" in service_env(service):
        built.append(database_settings())
    return built


@pytest.mark.parametrize("name", sorted(_zhizao_services(interpolate(raw(), chosen_env()))))
def test_each_service_command_and_variables_fit_the_cli_and_the_settings(
    name: str, compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    service = compose["services"][name]
    command = [str(token) for token in service["command"]]
    leaf, rest = _leaf(list(command))
    if hasattr(leaf, "commands"):
        pytest.fail(f"{name}: `zhizao {' '.join(command)}` is not a command")
    try:
        leaf.make_context(leaf.name, list(rest))
    except Exception as exc:  # noqa: BLE001 - the CLI library's own usage errors
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        # Paths inside the image do not exist here; anything else is a wrong command.
        assert "does not exist" in message, f"{name}: zhizao {' '.join(command)}: {message}"

    env = service_env(service)
    prefixes = _prefixes()
    for key in env:
        assert key.startswith("ZHIZAO_"), f"{name}: {key} is not a zhizao variable"
        if key in NOT_SETTINGS:
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        assert prefix is not None, f"{name}: no settings class reads {key}"
        settings = prefixes[prefix]
        field = key.removeprefix(prefix).lower()
        assert field in settings.model_fields, f"{name}: {key} is no field of {settings.__name__}"

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    built = _settings_of(service, tmp_path)
    # The simulator alone has no settings: its command line is all it reads.
    assert built or command[:2] == ["sim", "run"], f"{name}: no settings built"
    for settings in built:
        if isinstance(settings, IngestSettings):
            assert settings.health_host == "0.0.0.0"  # reachable for health checks, scrapes
            assert settings.shared_group == "ingest"
            assert settings.client_id == env["ZHIZAO_INGEST_CLIENT_ID"]
            assert settings.rollups is False
            assert settings.broker.username == "zhizao-ingest"
            assert f":{settings.health_port}/" in env["ZHIZAO_HEALTH_URL"]
        if isinstance(settings, ApiSettings):
            assert (settings.host, settings.port) == ("0.0.0.0", 8000)
            assert f":{settings.port}/" in env["ZHIZAO_HEALTH_URL"]
        if isinstance(settings, DatabaseSettings):
            assert "@db:5432/zhizao" in settings.url


def test_ingest_workers_share_one_subscription_under_their_own_sessions(
    compose: dict[str, Any],
) -> None:
    workers = {n: service_env(s) for n, s in compose["services"].items() if n.startswith("ingest-")}
    assert len(workers) == 2
    assert {env["ZHIZAO_INGEST_SHARED_GROUP"] for env in workers.values()} == {"ingest"}
    assert len({env["ZHIZAO_INGEST_CLIENT_ID"] for env in workers.values()}) == 2
    # One on each EMQX node: the cluster spreads the shared subscription over both.
    assert {env["ZHIZAO_INGEST_MQTT_URL"] for env in workers.values()} == {
        "mqtt://emqx1:1883",
        "mqtt://emqx2:1883",
    }


def test_the_example_placeholders_are_refused_by_each_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """.env.example with only the other containers' secrets filled in: the zhizao
    services refuse to start, each naming the variable that still holds change-me."""
    example = read_env(ENV_EXAMPLE)
    env = {key: value or "x" for key, value in example.items()}
    doc = interpolate(raw(), env)
    refusals = {
        "ingest-1": "ZHIZAO_DB_URL: the password is the example's",
        "api": "ZHIZAO_DB_URL: the password is the example's",
        "migrate": "ZHIZAO_DB_URL: the password is the example's",
        "edge": "ZHIZAO_EDGE_UPLINK_PASSWORD: the password is the example's",
    }
    for name, expected in refusals.items():
        with monkeypatch.context() as patch:
            for key, value in service_env(doc["services"][name]).items():
                patch.setenv(key, value)
            with pytest.raises(ConfigError, match=expected):
                _settings_of(doc["services"][name], tmp_path)
    # With the database's chosen, the next placeholder is named.
    env["ZHIZAO_DB_PASSWORD"] = "chosen-db-password"
    doc = interpolate(raw(), env)
    with monkeypatch.context() as patch:
        for key, value in service_env(doc["services"]["ingest-1"]).items():
            patch.setenv(key, value)
        with pytest.raises(ConfigError, match="ZHIZAO_INGEST_MQTT_PASSWORD: the password"):
            ingest_settings()
    with monkeypatch.context() as patch:
        for key, value in service_env(doc["services"]["api"]).items():
            patch.setenv(key, value)
        with pytest.raises(ValueError, match="ZHIZAO_API_JWT_SECRET is the example's"):
            api_settings(database=database_settings())


def test_health_checks_call_each_service_health_endpoint(compose: dict[str, Any]) -> None:
    for name, service in _zhizao_services(compose).items():
        check = service.get("healthcheck", {})
        if check.get("disable"):
            assert service.get("restart") == "no", f"{name}: a long-running service unchecked"
            continue
        test = check["test"]
        assert test[:4] == ["CMD", "python", "-m", "zhizao.probe"], name
        assert test[4] == service_env(service)["ZHIZAO_HEALTH_URL"], name
        assert test[4].endswith("/health"), name


def test_sim_edge_config_is_what_the_simulator_needs() -> None:
    """deploy/compose/sim/edge.yaml equals what edge_config_for builds for the bundled
    factory scenario: the checked-in file cannot drift from the simulator."""
    shipped = load_config(COMPOSE_DIR / "sim" / "edge.yaml")
    built = edge_config_for(
        load_scenario(bundled("factory")), enterprise="91330206MA2GR7K17L",
        edge_id="EDGE-RC-01", opcua_endpoint="opc.tcp://simulator:4840/zhizao/sim/",
        device_broker_url="mqtt://sim-devices:1883", uplink_url="mqtt://emqx1:1883",
        spool_path=Path("/var/lib/zhizao/spool.db"), http_port=9108,
    )  # fmt: skip
    built = built.model_copy(update={"http": built.http.model_copy(update={"host": "0.0.0.0"})})
    assert shipped.model_dump(mode="json") == built.model_dump(mode="json")
    # The spool lives on the volume mounted at /var/lib/zhizao (compose.yaml: edge-spool).
    volumes = raw()["services"]["edge"]["volumes"]
    assert "edge-spool:/var/lib/zhizao" in volumes
    assert shipped.spool.path.parent == Path("/var/lib/zhizao")
