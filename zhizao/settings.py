"""Settings shared by the services: the database.

Each service has its own ``Settings`` class with its own env prefix
(``ZHIZAO_EDGE_``, ``ZHIZAO_INGEST_``, ...), built by a factory rather than at import
time, so that tests and the demo can build them with explicit values.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_SECRET = "zhizao-demo-not-a-secret"  # noqa: S105 - the one default secret, demo only


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
        return value


def database_settings(**overrides: object) -> DatabaseSettings:
    return DatabaseSettings(**overrides)  # type: ignore[arg-type]
