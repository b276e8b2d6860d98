"""``zhizao api run``: the platform API (and, later, the board) under uvicorn.

Settings come from ``ZHIZAO_API_*`` (the signing secret ``ZHIZAO_API_JWT_SECRET`` is
required) and ``ZHIZAO_DB_*``; the options override them. With ``--workers`` above 1,
uvicorn runs that many processes; they share the database, so the login rate limit
and token revocation hold across them.
"""

from __future__ import annotations

import os

import typer
import uvicorn
from pydantic import ValidationError

from zhizao.cli.common import DbUrlOption, db_settings, fail, one_line

app = typer.Typer(help="The platform API 平台接口 (FastAPI).", no_args_is_help=True)

_FACTORY = "platform_api.serve:app_from_env"


@app.command("run")
def run_command(
    host: str | None = typer.Option(None, help="Address to listen on (env ZHIZAO_API_HOST)."),
    port: int | None = typer.Option(None, help="Port (env ZHIZAO_API_PORT, default 8000)."),
    workers: int | None = typer.Option(None, help="Processes (env ZHIZAO_API_WORKERS)."),
    db_url: DbUrlOption = None,
) -> None:
    """Serve the API 启动平台接口服务: /api/v1, /api/v1/docs, /health, /ready, /metrics."""
    from platform_api.settings import api_settings

    database = db_settings(db_url)
    overrides: dict[str, object] = {"database": database}
    for key, value in (("host", host), ("port", port), ("workers", workers)):
        if value is not None:
            overrides[key] = value
    try:
        settings = api_settings(**overrides)
    except ValidationError as exc:
        raise fail(f"API settings: {one_line(exc.errors(include_url=False)[0]['msg'])}") from exc
    # The worker processes build their settings from the environment: hand them
    # what the options changed.
    os.environ["ZHIZAO_DB_URL"] = database.url
    uvicorn.run(
        _FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        # uvicorn kills a worker that does not answer its supervisor's ping within this
        # time; its default (5 s) kills busy workers under a burst on a small machine,
        # dropping every request they hold (seen in bench/bench_api.py on 2 cores).
        timeout_worker_healthcheck=30,
    )
