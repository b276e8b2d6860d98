"""The examples' placeholder secrets (``change-me``) are refused by every service.

deploy/env/*.example and deploy/compose/.env.example write ``change-me...`` where a
secret belongs; an installation that copied one without choosing its own must not
start. Each refusal names the variable or key it is about.
"""

from __future__ import annotations

# ruff: noqa: S106 - the secrets here are the examples' placeholders, on purpose
from pathlib import Path

import pytest

from edge.config import parse_config
from edge.settings import apply_settings, edge_settings
from ingest import ingest_settings
from platform_api.settings import api_settings
from zhizao.errors import ConfigError
from zhizao.settings import EXAMPLE_SECRET_MARK, database_settings

SOURCE = {"type": "mqtt", "name": "m", "broker": {"url": "mqtt://x"},
          "topics": [{"topic": "t/{device}", "fields": [{"path": "v", "name": "v"}]}]}  # fmt: skip


def _edge(tmp_path: Path, **uplink: object) -> dict[str, object]:
    return {
        "identity": {"enterprise": "91330206MA2GR7K17L", "edge_id": "EDGE-RC-01"},
        "uplink": {"url": "mqtt://broker:1883", **uplink},
        "spool": {"path": str(tmp_path / "spool.db")},
        "sources": [SOURCE],
    }


def test_the_mark_is_what_the_examples_write() -> None:
    root = Path(__file__).parents[2] / "deploy"
    for example in [*root.glob("env/*.example"), root / "compose" / ".env.example"]:
        assert EXAMPLE_SECRET_MARK in example.read_text(encoding="utf-8"), example


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://zhizao:change-me@db:5432/zhizao",
        "postgresql://zhizao:CHANGE-ME-to-a-db-password@db/zhizao",
        "host=db user=zhizao password=change-me-too dbname=zhizao",
    ],
)
def test_database_url_with_the_example_password_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="ZHIZAO_DB_URL: the password is the example's"):
        database_settings(url=url)
    # Any other password, or none, is the operator's business.
    assert database_settings(url=url.replace("change-me", "x").replace("CHANGE-ME", "y"))


def test_api_refuses_the_example_signing_secret() -> None:
    with pytest.raises(ValueError, match="ZHIZAO_API_JWT_SECRET is the example's placeholder"):
        api_settings(jwt_secret="change-me-to-48-random-characters-from-secrets-token")
    assert api_settings(jwt_secret="a-long-enough-secret-chosen-by-the-operator-0123")


def test_ingest_refuses_the_example_broker_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIZAO_DB_URL", "postgresql://zhizao:chosen@db/zhizao")
    monkeypatch.setenv("ZHIZAO_INGEST_MQTT_USERNAME", "zhizao-ingest")
    monkeypatch.setenv("ZHIZAO_INGEST_MQTT_PASSWORD", "change-me")
    with pytest.raises(ConfigError, match="ZHIZAO_INGEST_MQTT_PASSWORD: the password is the"):
        ingest_settings()
    monkeypatch.delenv("ZHIZAO_INGEST_MQTT_USERNAME")
    monkeypatch.delenv("ZHIZAO_INGEST_MQTT_PASSWORD")
    monkeypatch.setenv("ZHIZAO_INGEST_MQTT_URL", "mqtt://zhizao-ingest:change-me@broker:1883")
    with pytest.raises(ConfigError, match="ZHIZAO_INGEST_MQTT_URL: the password in the URL"):
        ingest_settings()


def test_edge_refuses_the_example_password_from_env_and_yaml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = parse_config(_edge(tmp_path), source="edge.yaml")
    monkeypatch.setenv("ZHIZAO_EDGE_UPLINK_USERNAME", "91330206MA2GR7K17L/edge/EDGE-RC-01")
    monkeypatch.setenv("ZHIZAO_EDGE_UPLINK_PASSWORD", "change-me")
    with pytest.raises(ConfigError, match="ZHIZAO_EDGE_UPLINK_PASSWORD: the password is the"):
        apply_settings(config, edge_settings())
    with pytest.raises(ConfigError, match=r"edge.yaml: uplink.password: .*example's placeholder"):
        parse_config(_edge(tmp_path, username="u", password="change-me-please"), source="edge.yaml")
