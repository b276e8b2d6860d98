"""``/health`` (JSON) and ``/metrics`` (Prometheus) for every zhizao service.

One small asyncio server on the service's own loop: two read-only GET routes do not
justify a web framework or a thread, on a factory PC or in the data centre. Each
service gives a function that describes its health at request time and a
prometheus-client registry of its own (several services, or several workers, can run
in one process: the demo, tests, benchmarks).

The health function returns ``(ok, document)``. The body is the document with
``status`` set to ``ok`` or, when not ok, the service's word for it
(``degraded_status``: ``degraded`` for the edge and the rollup service, ``failing``
for ingest, as its runbooks say). The HTTP status of a service that is not ok is the
service's choice too (``degraded_code``): ingest and the rollup service answer 503 so
that a load balancer or supervisor notices; the edge answers 200, because a broker
outage is exactly when it must keep running and spooling, and a supervisor must not
restart it for that.

``/healthz`` is an alias of ``/health`` (the ingest worker served that name first;
existing probes keep working).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger(__name__)

HealthFn = Callable[[], tuple[bool, dict[str, Any]]]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_HEALTH_PATHS = frozenset(("/health", "/healthz", "/"))


class HealthServer:
    """Serves ``GET /health`` (``/healthz``) and ``GET /metrics`` until closed."""

    def __init__(
        self,
        name: str,
        health: HealthFn,
        registry: CollectorRegistry,
        *,
        host: str,
        port: int,
        degraded_code: int = 503,
        degraded_status: str = "degraded",
    ) -> None:
        self.name = name
        self._health = health
        self.registry = registry
        self._host = host
        self._port = port
        self._degraded_code = degraded_code
        self._degraded_status = degraded_status
        self._server: asyncio.Server | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("health and metrics listening", service=self.name, url=f"{self.url}/health")
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def document(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and body ``/health`` answers now."""
        ok, doc = self._health()
        status = "ok" if ok else self._degraded_status
        return (200 if ok else self._degraded_code), {"status": status, **doc}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            code, ctype, body = self._route(method, path.split("?", 1)[0])
            head = (
                f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ) as exc:
            log.debug("health request failed", service=self.name, error=str(exc))
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in _HEALTH_PATHS:
            code, doc = self.document()
            return code, "application/json", json.dumps(doc).encode()
        return 404, "text/plain", b"try /health or /metrics\n"
