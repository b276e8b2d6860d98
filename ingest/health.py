"""A minimal HTTP endpoint: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text).

Served by ``asyncio.start_server`` on the worker's own loop: no web framework and no
thread for two read-only routes. ``/healthz`` answers 200 while the worker is
connected to the broker and its last database attempt succeeded, 503 otherwise,
with the details in the body either way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog

from ingest.metrics import IngestMetrics

log = structlog.get_logger("ingest.health")

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    def __init__(
        self, metrics: IngestMetrics, status: Callable[[], dict[str, Any]], host: str, port: int
    ) -> None:
        self._metrics = metrics
        self._status = status
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("health endpoint listening", url=f"http://{self._host}:{self.port}/healthz")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

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
            log.debug("health request failed", error=str(exc))
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics.exposition()
        if path in ("/healthz", "/health", "/"):
            status = self._status()
            code = 200 if status.get("healthy") else 503
            return code, "application/json", json.dumps(status).encode()
        return 404, "text/plain", b"not found\n"
