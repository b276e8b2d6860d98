"""Environment overrides for the edge (``ZHIZAO_EDGE_...``), built by a factory.

Secrets need not live in the YAML: ``ZHIZAO_EDGE_UPLINK_USERNAME`` and
``ZHIZAO_EDGE_UPLINK_PASSWORD`` (e.g. from a systemd credential or an env file
readable by the edge user only) override the uplink's credentials, and
``ZHIZAO_EDGE_HTTP_PORT`` the health/metrics port. What differs per installation
rather than per machine mapping can come from there too: ``ZHIZAO_EDGE_UPLINK_URL``
and the TLS files ``ZHIZAO_EDGE_UPLINK_TLS_CA_FILE``, ``..._CERT_FILE`` and
``..._KEY_FILE`` (deploy/env/edge.env.example).

The environment is checked like the YAML: a value beyond its type (a port of 10**30,
``nine``, a user name with a control character) is a
:class:`zhizao.errors.ConfigError` naming the variable, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge.config import EdgeConfig, UplinkConfig
from edge.quantities import printable
from zhizao.errors import ConfigError

_PREFIX = "ZHIZAO_EDGE_"


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_PREFIX, extra="ignore")

    uplink_username: (
        Annotated[str, Field(min_length=1, max_length=256), AfterValidator(printable)] | None
    ) = None
    uplink_password: SecretStr | None = None
    uplink_url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    uplink_tls_ca_file: Path | None = None
    uplink_tls_cert_file: Path | None = None
    uplink_tls_key_file: Path | None = None
    http_port: Annotated[int, Field(ge=0, le=65535)] | None = None


def edge_settings(**overrides: object) -> EdgeSettings:
    """The settings from the environment (and ``overrides``); ConfigError if one is wrong."""
    try:
        return EdgeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        problem = str(first["msg"]).removeprefix("Value error, ")
        more = exc.error_count() - 1
        if more:
            problem += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError("the environment", f"{_PREFIX}{field.upper()}", problem) from exc


def apply_settings(config: EdgeConfig, settings: EdgeSettings) -> EdgeConfig:
    """The config with the environment's overrides applied (a copy, validated again:
    a TLS file that does not exist is a ConfigError naming its variable)."""
    uplink: dict[str, Any] = {}
    if settings.uplink_url is not None:
        uplink["url"] = settings.uplink_url
    if settings.uplink_username is not None:
        uplink["username"] = settings.uplink_username
    if settings.uplink_password is not None:
        uplink["password"] = settings.uplink_password
    tls = {
        key: value
        for key, value in (
            ("ca_file", settings.uplink_tls_ca_file),
            ("cert_file", settings.uplink_tls_cert_file),
            ("key_file", settings.uplink_tls_key_file),
        )
        if value is not None
    }
    update: dict[str, object] = {}
    if uplink or tls:
        current = config.uplink.model_dump(exclude_unset=True)
        if tls:
            current["tls"] = {**(current.get("tls") or {}), **tls}
        try:
            update["uplink"] = UplinkConfig.model_validate({**current, **uplink})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = [str(part) for part in first["loc"]]
            problem = str(first["msg"]).removeprefix("Value error, ")
            word = problem.split(" ", 1)[0]  # a check of a whole model names its field first
            if loc in ([], ["tls"]):
                loc = ["tls", word] if word in ("ca_file", "cert_file", "key_file") else ["url"]
            name = "_".join(loc[:2]) if loc[0] == "tls" and len(loc) > 1 else loc[0]
            raise ConfigError(
                "the environment", f"{_PREFIX}UPLINK_{name.upper()}", problem
            ) from exc
    if settings.http_port is not None:
        update["http"] = config.http.model_copy(update={"port": settings.http_port})
    return config.model_copy(update=update) if update else config
