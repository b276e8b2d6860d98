"""Prometheus metrics of one API application, in a registry of its own.

Requests are labelled by the route's template (``/api/v1/devices/{code}``), never the
raw path, so the number of series stays bounded whatever clients ask for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from platform_api.cache import ResultCache

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "zhizao_api_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "zhizao_api_request_seconds", "Time to answer, by route", ["method", "route"],
            buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "zhizao_api_errors", "Answers with a 5xx status", ["route"], registry=r
        )
        self.logins = Counter(
            "zhizao_api_logins", "Login attempts by outcome", ["outcome"], registry=r
        )
        self.in_progress = Gauge(
            "zhizao_api_requests_in_progress", "Requests being answered", registry=r
        )
        self._cache_collector: _CacheCollector | None = None
        self.pool_size = Gauge("zhizao_api_db_pool_size", "Database connections open", registry=r)
        self.pool_available = Gauge(
            "zhizao_api_db_pool_available", "Database connections idle in the pool", registry=r
        )

    def watch_cache(self, cache: ResultCache) -> None:
        # Once per registry: an app made again with the same metrics reports its cache.
        if self._cache_collector is None:
            self._cache_collector = _CacheCollector(cache)
            self.registry.register(self._cache_collector)
        self._cache_collector.cache = cache


class _CacheCollector(Collector):
    """The result cache's own counts, read when Prometheus scrapes."""

    def __init__(self, cache: ResultCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        answers = CounterMetricFamily(
            "zhizao_api_result_cache_answers", "KPI and series answers by cache outcome",
            labels=["outcome"],
        )  # fmt: skip
        answers.add_metric(["hit"], self.cache.hits)
        answers.add_metric(["stale"], self.cache.stale)
        answers.add_metric(["miss"], self.cache.misses)
        yield answers
        yield GaugeMetricFamily(
            "zhizao_api_result_cache_entries", "Answers kept", value=len(self.cache)
        )


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.dec()
            route = scope.get("route")
            # path_format: the template without converters ({metric}, not {metric:path}).
            template = getattr(route, "path_format", None) or "<unmatched>"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
            if status >= 500:
                self.metrics.errors.labels(template).inc()
