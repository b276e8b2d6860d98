"""The platform API (FastAPI): registry, telemetry, KPIs, users, tokens and audit.

``create_app(settings)`` builds the application; ``zhizao api run`` serves it with
uvicorn. Every route is under ``/api/v1`` except ``/health``, ``/ready`` and
``/metrics``.
"""

from platform_api.app import create_app
from platform_api.settings import ApiSettings, api_settings

__all__ = ["ApiSettings", "api_settings", "create_app"]
