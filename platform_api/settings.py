"""Settings of the API service (env prefix ``ZHIZAO_API_``), built by a factory.

There is no default signing secret: the API refuses to start without
``ZHIZAO_API_JWT_SECRET`` (32 characters or more), and refuses the demo's secret
unless it is the demo that starts it (``demo=True``, which ``zhizao demo`` sets and
no environment variable can).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from zhizao.settings import DEMO_SECRET, DatabaseSettings, refuse_example_secret
from zhizao.storage.users import MIN_AUDIT_RETENTION_DAYS

MIN_SECRET_LENGTH = 32


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIZAO_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    #: HMAC key of the access tokens (HS256). Every API process of an installation
    #: shares it; changing it ends every session.
    jwt_secret: SecretStr | None = None
    access_token_minutes: int = Field(default=15, ge=1, le=24 * 60)
    #: The longest a machine token may be made for.
    token_max_days: int = Field(default=365, ge=1, le=3650)
    #: Failed logins allowed per account and per client address within the window
    #: before further attempts are refused with 429 (counted in the database, so the
    #: limit holds across API processes).
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_addr: int = Field(default=20, ge=1)
    login_window_s: int = Field(default=900, ge=1)
    audit_retention_days: int = Field(default=MIN_AUDIT_RETENTION_DAYS, ge=MIN_AUDIT_RETENTION_DAYS)
    #: Addresses of reverse proxies whose X-Forwarded-For is believed (for the audit
    #: log and the per-address login limit); empty: the socket's peer address.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Zone of times that belong to no enterprise (users, tokens, the audit log).
    display_time_zone: str = "Asia/Shanghai"
    page_max: int = Field(default=1000, ge=1)
    #: Largest ledger upload accepted.
    upload_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    #: How long a request waits for a database connection before answering 503.
    db_timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: Seconds a KPI or series answer is reused for callers with the same grants
    #: (platform_api/cache.py); 0 computes every answer afresh.
    result_cache_s: float = Field(default=5.0, ge=0, le=3600)
    result_cache_entries: int = Field(default=2048, ge=1)
    #: Seconds a user's record (disabled? grants?) is kept between requests while the
    #: process hears the database announce every change (platform_api/principals.py);
    #: 0 reads it on every request.
    principal_cache_s: float = Field(default=60.0, ge=0, le=3600)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    #: Set by ``zhizao demo`` only: allows the demo's secret.
    demo: bool = Field(default=False, exclude=True)

    @model_validator(mode="after")
    def _secret(self) -> ApiSettings:
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if not secret:
            raise ValueError(
                "ZHIZAO_API_JWT_SECRET is not set: give the API a signing secret of at least"
                f" {MIN_SECRET_LENGTH} characters (e.g. python -c 'import secrets;"
                " print(secrets.token_urlsafe(48))')"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"ZHIZAO_API_JWT_SECRET has {len(secret)} characters; at least"
                f" {MIN_SECRET_LENGTH} are needed"
            )
        if secret.startswith(DEMO_SECRET) and not self.demo:
            raise ValueError("ZHIZAO_API_JWT_SECRET is the demo's secret; set a secret of your own")
        refuse_example_secret("ZHIZAO_API_JWT_SECRET", secret)
        return self

    def signing_key(self) -> str:
        # Never None once validated (_secret refuses it); this keeps mypy and callers honest.
        return self.jwt_secret.get_secret_value() if self.jwt_secret else ""


def api_settings(**overrides: object) -> ApiSettings:
    return ApiSettings(**overrides)  # type: ignore[arg-type]
