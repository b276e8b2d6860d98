"""The rollup service (``zhizao rollup serve``): the KPI rollups on a schedule, supervised.

A run (:func:`zhizao.storage.rollups.try_run_rollups`) is attempted every
``interval_s``. Whatever ends a run early, the database gone, a refused statement or a
bug in the interval splitting, is logged with its cause, counted, and the run is
attempted again after an exponential backoff; while runs fail, ``/health`` says
``degraded`` (503) with the error and the number of failures in a row, and the first
successful run makes it ``ok`` again. Nothing is lost meanwhile: a run consumes the
dirty marks of a chunk of devices in the same transaction that writes their rollups, so
an aborted run leaves the marks of every chunk it did not commit for the next one.

Several services may run against one database (two hosts, or a service beside a CLI
backfill). A run holds a PostgreSQL advisory lock for its whole length: one service
computes, the others find the lock taken, count the attempt as ``busy`` and try again
at their next tick (``standby`` in ``/health``). No bucket is computed by two runs at
once, and a run killed mid-way (SIGKILL, a lost host) releases the lock with its
connection, so another service's next tick finishes the work.

The same service runs inside an ingest worker when ``ZHIZAO_INGEST_ROLLUPS`` is true
(the demo and single-host trials); then its state is part of the worker's ``/health``
and its metrics are in the worker's registry. In production it runs alone: the
interval splitting is CPU-heavy and would share the worker's event loop with message
handling (docs/benchmarks.md, "Ingest with rollups beside it").
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from zhizao.backoff import Backoff
from zhizao.health import HealthServer
from zhizao.settings import DatabaseSettings, config_error, database_settings
from zhizao.storage.connection import connect
from zhizao.storage.rollups import RollupReport, RollupSettings, try_run_rollups

log = structlog.get_logger("rollup")

#: starting: no attempt yet; checking: connecting, trying the lock; running: computing
#: (holds the lock); idle: the last run succeeded; standby: another service was running;
#: failing: the last run failed (backoff); stopped.
State = Literal["starting", "checking", "running", "idle", "standby", "failing", "stopped"]

_RUN_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class RollupServiceSettings(BaseSettings):
    """Settings of ``zhizao rollup serve`` (env prefix ``ZHIZAO_ROLLUP_``).

    What a run computes (interval, micro-stop threshold, chunk size, history) are the
    ``ZHIZAO_KPI_*`` settings (:class:`RollupSettings`), shared with ``zhizao rollup run``
    and the ingest worker's embedded rollups.
    """

    model_config = SettingsConfigDict(env_prefix="ZHIZAO_ROLLUP_", extra="ignore")

    #: Health and Prometheus endpoint; None disables it, 0 picks a free port.
    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=9110, ge=0, le=65535)  # edge 9108, ingest 9109
    #: Backoff after a failed run: first and longest pause, seconds.
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    rollup: RollupSettings = Field(default_factory=RollupSettings)

    @model_validator(mode="after")
    def _ordered(self) -> RollupServiceSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"ZHIZAO_ROLLUP_RETRY_MAX_S ({self.retry_max_s}) must not be smaller than"
                f" ZHIZAO_ROLLUP_RETRY_INITIAL_S ({self.retry_initial_s})"
            )
        return self


def rollup_service_settings(**overrides: object) -> RollupServiceSettings:
    """Settings from the environment, explicit ``overrides`` first (``db_url`` too)."""
    db_url = overrides.pop("db_url", None)
    if "database" not in overrides:
        # Built here so that a wrong ZHIZAO_DB_* is named as such (ConfigError).
        overrides["database"] = (
            database_settings() if db_url is None else database_settings(url=str(db_url))
        )
    try:
        return RollupServiceSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise config_error(exc, "ZHIZAO_ROLLUP_") from exc


class RollupMetrics:
    """The service's Prometheus metrics, in the registry given (the worker's, embedded)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "zhizao_rollup_runs",
            "Rollup runs attempted, by outcome (ok; failed; busy: another service was running)",
            ["outcome"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "zhizao_rollup_run_seconds",
            "Duration of a successful run",
            buckets=_RUN_SECONDS,
            registry=r,
        )
        self.device_hours = Counter(
            "zhizao_rollup_device_hours", "Device-hour rollups computed", registry=r
        )
        self.device_days = Counter(
            "zhizao_rollup_device_days", "Device-day rollups computed", registry=r
        )
        self.dirty_marks = Counter(
            "zhizao_rollup_dirty_marks_consumed", "Dirty marks consumed by runs", registry=r
        )
        self.dirty_pending = Gauge(
            "zhizao_rollup_dirty_marks_pending",
            "Dirty marks waiting in the database after the last successful run",
            registry=r,
        )
        self.failures = Gauge(
            "zhizao_rollup_consecutive_failures",
            "Runs failed in a row (0 when the last run succeeded)",
            registry=r,
        )
        self.last_success = Gauge(
            "zhizao_rollup_last_success_timestamp_seconds",
            "Unix time of the last successful run (0: none yet)",
            registry=r,
        )
        self.computed_until = Gauge(
            "zhizao_rollup_computed_until_timestamp_seconds",
            "The instant the last successful run rolled up to",
            registry=r,
        )
        for outcome in ("ok", "failed", "busy"):
            self.runs.labels(outcome)


class RollupService:
    """Runs the rollups every ``settings.interval_s`` and restarts them after any error."""

    def __init__(
        self,
        db_url: str,
        settings: RollupSettings,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        until: Callable[[], datetime] | None = None,
        metrics: RollupMetrics | None = None,
    ) -> None:
        self._url = db_url
        self._settings = settings
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        #: The clock of each run (default: the database's). The demo gives its simulated
        #: clock; a replay of history a fixed instant.
        self._until = until
        self.metrics = metrics or RollupMetrics()
        self.state: State = "starting"
        self.failures = 0
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self.last_report: RollupReport | None = None
        self.runs_ok = 0

    @property
    def healthy(self) -> bool:
        return self.failures == 0

    def health(self) -> dict[str, Any]:
        """The service's part of a ``/health`` document."""
        report = self.last_report
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "runs_ok": self.runs_ok,
            "last_success_age_s": (
                None
                if self.last_success_at is None
                else round(time.time() - self.last_success_at, 1)
            ),
            "computed_until": None if report is None else report.until.isoformat(),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Attempt a run per interval until ``stop``; never raises for a failed run."""
        log.info(
            "rollup service starting",
            interval_s=self._settings.interval_s,
            chunk_devices=self._settings.chunk_devices,
            history_days=self._settings.history_days,
        )
        try:
            while not stop.is_set():
                pause = await self._attempt(stop)
                if pause is None:
                    break
                await _sleep(stop, pause)
        finally:
            self.state = "stopped"
            log.info("rollup service stopped", runs_ok=self.runs_ok)

    async def _attempt(self, stop: asyncio.Event) -> float | None:
        """One run, supervised; returns the pause before the next (None: stopping)."""
        self.state = "checking"
        job = asyncio.create_task(self._once(), name="rollup-run")
        stopping = asyncio.create_task(stop.wait(), name="rollup-stop")
        try:
            await asyncio.wait((job, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not job.done():
            # Abandoned: the chunk in hand rolls back with its connection, its marks stay.
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            log.info("rollup run abandoned at shutdown; its dirty marks stay for the next run")
            return None
        try:
            report = job.result()
        except Exception as exc:  # noqa: BLE001 - supervised: any error restarts the run
            return self._failed(exc)
        self._backoff.reset()
        self.failures = 0
        self.last_error = None
        self.metrics.failures.set(0)
        if report is None:
            self.state = "standby"
            self.metrics.runs.labels("busy").inc()
            log.debug("rollups run elsewhere; standing by")
        else:
            self.state = "idle"
        return self._settings.interval_s

    async def _once(self) -> RollupReport | None:
        conn = await connect(self._url)
        async with conn:
            report = await try_run_rollups(
                conn,
                micro_stop_s=self._settings.micro_stop_s,
                chunk_devices=self._settings.chunk_devices,
                history_days=self._settings.history_days,
                until=None if self._until is None else self._until(),
                locked=self._locked,
            )
            if report is None:
                return None
            cur = await conn.execute("SELECT count(*) FROM rollup_dirty")
            row = await cur.fetchone()
            pending = 0 if row is None else int(row[0])
        self._succeeded(report, pending)
        return report

    def _locked(self) -> None:
        self.state = "running"

    def _succeeded(self, report: RollupReport, pending: int) -> None:
        now = time.time()
        m = self.metrics
        m.runs.labels("ok").inc()
        m.run_seconds.observe(report.seconds)
        m.device_hours.inc(report.device_hours)
        m.device_days.inc(report.device_days)
        m.dirty_marks.inc(report.dirty_marks)
        m.dirty_pending.set(pending)
        m.last_success.set(now)
        m.computed_until.set(report.until.timestamp())
        if self.failures:
            log.info("rollups recovered", after_failures=self.failures)
        self.last_report = report
        self.last_success_at = now
        self.runs_ok += 1
        log.info(
            "rollups run",
            devices=report.devices,
            device_hours=report.device_hours,
            device_days=report.device_days,
            dirty_marks=report.dirty_marks,
            dirty_pending=pending,
            seconds=round(report.seconds, 3),
        )

    def _failed(self, exc: Exception) -> float:
        self.failures += 1
        self.state = "failing"
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self.metrics.runs.labels("failed").inc()
        self.metrics.failures.set(self.failures)
        delay = self._backoff.next_delay()
        log.error(
            "rollup run failed; retrying after a pause",
            error=self.last_error,
            consecutive_failures=self.failures,
            retry_in_s=round(delay, 2),
            exc_info=exc,
        )
        return delay


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return


def _install_signals(stop: asyncio.Event) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread: the caller stops us
        installed.append(sig)
    return installed


async def serve_rollups(
    settings: RollupServiceSettings,
    *,
    stop: asyncio.Event | None = None,
    until: Callable[[], datetime] | None = None,
    started: Callable[[RollupService, HealthServer | None], None] | None = None,
) -> None:
    """Run the rollup service with its ``/health`` and ``/metrics`` until ``stop``
    (or SIGTERM/SIGINT when not given)."""
    signals: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        signals = _install_signals(stop)
    service = RollupService(
        settings.database.url,
        settings.rollup,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
        until=until,
    )
    health: HealthServer | None = None
    if settings.health_port is not None:

        def status() -> tuple[bool, dict[str, Any]]:
            return service.healthy, {"service": "rollup", **service.health()}

        health = HealthServer(
            "rollup",
            status,
            service.metrics.registry,
            host=settings.health_host,
            port=settings.health_port,
        )
        await health.start()
    try:
        if started is not None:
            started(service, health)
        await service.run(stop)
    finally:
        if health is not None:
            await health.close()
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
