"""The factory uvicorn calls in each worker process (``zhizao api run``)."""

from __future__ import annotations

from fastapi import FastAPI

from platform_api.app import create_app
from platform_api.settings import api_settings
from zhizao.logs import configure_logging


def app_from_env() -> FastAPI:
    configure_logging()
    return create_app(api_settings())
