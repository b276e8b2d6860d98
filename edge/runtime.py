"""A running edge: spool, uplink, collectors and the health/metrics endpoint.

:func:`run_edge` (what ``zhizao edge run`` and ``zhizao demo`` call) opens the
spool, builds the collectors from the explicit registry, starts the uplink and the
HTTP endpoint and runs until ``stop`` is set or the task is cancelled. Each
collector runs under a supervisor: collectors reconnect by themselves, and one that
fails unexpectedly is logged, counted in its health and restarted after a pause,
without taking the others or the uplink down.

Shutdown order matters: collectors stop first (nothing new is put), the uplink
publishes its offline status and disconnects, then the spool closes. Anything not
acknowledged stays in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog

from edge.config import EdgeConfig
from edge.health import health_server
from edge.source import Collector
from edge.source_types import CollectorContext, build_collector
from edge.spool import Spool
from edge.uplink import Uplink
from zhizao.health import HealthServer
from zhizao.mqtt import ClientFactory, paho_client

log = structlog.get_logger(__name__)

COLLECTOR_RESTART_S = 5.0


class EdgeRuntime:
    """The parts of a running edge; :meth:`run` runs them."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        uplink_client_factory: ClientFactory = paho_client,
        collectors: Mapping[str, Collector] | None = None,
    ) -> None:
        self.config = config
        ident = config.identity
        self.spool = Spool(
            config.spool.path,
            enterprise=ident.enterprise,
            edge=ident.edge_id,
            max_bytes=config.spool.max_bytes,
            max_age_s=config.spool.max_age,
            durability=config.spool.durability,
        )
        self.uplink = Uplink(
            config.uplink,
            enterprise=ident.enterprise,
            edge_id=ident.edge_id,
            spool=self.spool,
            client_factory=uplink_client_factory,
        )
        context = CollectorContext(ident.enterprise, ident.edge_id)
        self.collectors: dict[str, Collector] = (
            dict(collectors)
            if collectors is not None
            else {source.name: build_collector(source, context) for source in config.sources}
        )
        self.health: HealthServer | None = None
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await self.spool.open()
        tasks: list[asyncio.Task[None]] = []
        uplink_task: asyncio.Task[None] | None = None
        try:
            if self.config.http.port is not None:
                self.health = health_server(
                    self.config.identity.edge_id,
                    self.spool,
                    self.uplink,
                    self.collectors,
                    host=self.config.http.host,
                    port=self.config.http.port,
                )
                await self.health.start()
            uplink_task = asyncio.create_task(self.uplink.run(), name="uplink")
            tasks = [
                asyncio.create_task(self._supervise(name, c), name=f"source-{name}")
                for name, c in self.collectors.items()
            ]
            log.info(
                "edge running",
                edge=self.config.identity.edge_id,
                sources=list(self.collectors),
                spool=str(self.config.spool.path),
                uplink=self.config.uplink.address,
            )
            self.ready.set()
            stopped = asyncio.create_task(stop.wait(), name="edge-stop")
            done, _ = await asyncio.wait(
                [stopped, uplink_task], return_when=asyncio.FIRST_COMPLETED
            )
            if uplink_task in done:
                stopped.cancel()
                uplink_task.result()  # re-raise what ended the uplink
            await self._shutdown(tasks, uplink_task)
        finally:
            for task in tasks:
                task.cancel()
            if uplink_task is not None and not uplink_task.done():
                uplink_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await uplink_task
            if self.health is not None:
                await self.health.close()
            await self.spool.close()

    async def _shutdown(
        self, tasks: list[asyncio.Task[None]], uplink_task: asyncio.Task[None]
    ) -> None:
        log.info("edge stopping", edge=self.config.identity.edge_id)
        for task in tasks:
            task.cancel()
        for name, collector in self.collectors.items():
            try:
                await collector.close()
            except Exception:
                log.exception("collector close failed", source=name)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.uplink.close()
        uplink_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await uplink_task

    async def _supervise(self, name: str, collector: Collector) -> None:
        while True:
            try:
                await collector.run(self.spool)
                log.warning("collector returned; restarting", source=name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A collector bug must not take the edge down: the others keep
                # flowing and the uplink keeps draining the spool.
                collector.health.errors += 1
                collector.health.last_error = f"crashed: {exc!r}"
                log.exception("collector crashed; restarting", source=name)
            await asyncio.sleep(COLLECTOR_RESTART_S)


async def run_edge(
    config: EdgeConfig,
    *,
    stop: asyncio.Event | None = None,
    uplink_client_factory: ClientFactory = paho_client,
) -> None:
    """Run an edge until ``stop`` is set (or the task is cancelled)."""
    await EdgeRuntime(config, uplink_client_factory=uplink_client_factory).run(stop)
