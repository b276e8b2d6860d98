"""Settings shared by the services: the database.

Each service has its own ``Settings`` class with its own env prefix
(``ZHIZAO_EDGE_``, ``ZHIZAO_INGEST_``, ...), built by a factory rather than at import
time, so that tests and the demo can build them with explicit values.
"""

from __future__ import annotations

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from zhizao.errors import ConfigError

DEMO_SECRET = "zhizao-demo-not-a-secret"  # noqa: S105 - the one default secret, demo only

#: What the shipped examples (deploy/env/*.example, deploy/compose/.env.example) write
#: where a secret belongs. A secret containing it was copied, not chosen: the services
#: refuse it, so that no installation runs on a password printed in this repository.
EXAMPLE_SECRET_MARK = "change-me"  # noqa: S105 - the placeholder that is refused


def refuse_example_secret(variable: str, secret: str) -> None:
    """ValueError naming ``variable`` if ``secret`` is the examples' placeholder."""
    if EXAMPLE_SECRET_MARK in secret.lower():
        raise ValueError(
            f"{variable} is the example's placeholder ({EXAMPLE_SECRET_MARK}...); set a secret"
            " of your own (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def url_password(url: str) -> str | None:
    """The password of a libpq connection string or URL (None: none, or unreadable)."""
    try:
        return conninfo_to_dict(url).get("password")  # type: ignore[return-value]
    except ProgrammingError:
        return None  # not a conninfo at all: connecting says so, with libpq's words


class DatabaseSettings(BaseSettings):
    """Where the platform database is and how the schema is maintained."""

    model_config = SettingsConfigDict(env_prefix="ZHIZAO_DB_", extra="ignore")

    url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/zhizao",
        description="libpq connection string or URL of the platform database",
    )
    #: Connections of the platform API's pool (``zhizao api run``). The ingest worker
    #: and the rollup service hold one or two connections each and use no pool.
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=8, ge=1)
    #: Raw metric points older than this are dropped by TimescaleDB's retention
    #: policy; ``off`` (or ``none``) keeps them for ever. State changes and counts are
    #: always kept: KPIs are recomputed from them. Reconciled by ``zhizao db upgrade``.
    metric_retention_days: int | None = Field(default=400, ge=1)
    #: Chunks older than this are compressed (TimescaleDB only). Reconciled by
    #: ``zhizao db upgrade``.
    compress_after_days: int = Field(default=7, ge=1)
    #: Use TimescaleDB when the extension is available to this server.
    use_timescaledb: bool = True

    @field_validator("metric_retention_days", mode="before")
    @classmethod
    def _retention_off(cls, value: object) -> object:
        # An env file cannot write None: "off" says it explicitly. An empty value is
        # refused (by the int parser) rather than read as "keep everything".
        if isinstance(value, str) and value.strip().lower() in ("off", "none"):
            return None
        if str(value).strip() == "0":
            raise ValueError("0 days would drop every point: write off to keep them for ever")
        return value

    @field_validator("url")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("ZHIZAO_DB_URL must not be empty")
        password = url_password(value)
        if password is not None:
            refuse_example_secret("the password", password)
        return value


def config_error(exc: ValidationError, prefix: str) -> ConfigError:
    """A settings class's ValidationError as one ConfigError naming the variable
    (``prefix`` + the field), or, for a model check whose message starts with the
    variable it is about, that variable."""
    first = exc.errors(include_url=False)[0]
    problem = str(first["msg"]).removeprefix("Value error, ")
    if first["loc"]:
        key = f"{prefix}{'_'.join(str(p) for p in first['loc']).upper()}"
    else:
        key, _, problem = problem.partition(": ")
    more = exc.error_count() - 1
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError("the environment", key, problem)


def database_settings(**overrides: object) -> DatabaseSettings:
    """The settings from the environment (and ``overrides``); ConfigError naming the
    variable (``ZHIZAO_DB_URL: ...``) if one is wrong."""
    try:
        return DatabaseSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "url"
        problem = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError("the environment", f"ZHIZAO_DB_{field.upper()}", problem) from exc
