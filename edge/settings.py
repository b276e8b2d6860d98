"""Environment overrides for the edge (``ZHIZAO_EDGE_...``), built by a factory.

Secrets need not live in the YAML: ``ZHIZAO_EDGE_UPLINK_USERNAME`` and
``ZHIZAO_EDGE_UPLINK_PASSWORD`` (e.g. from a systemd credential or an env file
readable by the edge user only) override the uplink's credentials, and
``ZHIZAO_EDGE_HTTP_PORT`` the health/metrics port.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.config import EdgeConfig


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIZAO_EDGE_", extra="ignore")

    uplink_username: str | None = None
    uplink_password: SecretStr | None = None
    http_port: int | None = None


def edge_settings(**overrides: object) -> EdgeSettings:
    return EdgeSettings(**overrides)  # type: ignore[arg-type]


def apply_settings(config: EdgeConfig, settings: EdgeSettings) -> EdgeConfig:
    """The config with the environment's overrides applied (a copy)."""
    uplink: dict[str, object] = {}
    if settings.uplink_username is not None:
        uplink["username"] = settings.uplink_username
    if settings.uplink_password is not None:
        uplink["password"] = settings.uplink_password
    update: dict[str, object] = {}
    if uplink:
        update["uplink"] = config.uplink.model_copy(update=uplink)
    if settings.http_port is not None:
        update["http"] = config.http.model_copy(update={"port": settings.http_port})
    return config.model_copy(update=update) if update else config
