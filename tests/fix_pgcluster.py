"""A PostgreSQL cluster owned by one test, which it can stop and start again.

Tests that take the database away (ingest's outage test) must not disturb the
shared server other tests use. ``pg_cluster`` runs ``initdb`` into a temporary
folder and ``pg_ctl`` on a free port with Debian's binaries
(``/usr/lib/postgresql/<version>/bin``, or ``ZHIZAO_TEST_PG_BIN``). PostgreSQL
refuses to run as root, so under root the commands run as the ``postgres`` user
through ``runuser``.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fix_mqtt import free_port
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import ensure_database
from zhizao.storage.migrate import upgrade


def _bin_dir() -> Path | None:
    configured = os.environ.get("ZHIZAO_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@dataclass
class PgCluster:
    folder: Path
    bin_dir: Path
    port: int = field(default_factory=free_port)
    running: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/zhizao"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"),
            "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w", "-t", "60", "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A migrated database ``zhizao`` on a cluster of the test's own."""
    bin_dir = _bin_dir()
    if bin_dir is None or (shutil.which("runuser") is None and os.geteuid() == 0):
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) and runuser are required")
    folder = Path(tempfile.mkdtemp(prefix="zhizao-pg-"))
    cluster = PgCluster(folder, bin_dir)
    cluster.init()
    cluster.start()
    asyncio.run(ensure_database(cluster.url))
    asyncio.run(upgrade(DatabaseSettings(url=cluster.url)))
    try:
        yield cluster
    finally:
        if cluster.running:
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
