"""The demo's platform API and status board: its login, its user and its server.

``zhizao demo`` serves the API with the board (``/board/``) from its own process, on
``--board-port`` (default 8765, or a free port when that one is taken). It never uses
a fixed password or signing secret: both are generated the first time a data
directory is used, kept in ``board-login.json`` there (file mode 0600) and printed,
so a second run prints the same login and an open browser tab keeps working.

The signing secret starts with the demo prefix (:data:`zhizao.settings.DEMO_SECRET`),
which ``zhizao api run`` refuses: a secret copied from a demo cannot sign tokens for a
real installation. The demo user ``demo`` is a regional analyst of the province
(KPIs and the ledger of every sample enterprise) and an engineer of the demo factory
(its raw telemetry too), so the board shows both the province's rates and the
factory's lines, and how a role narrows what is seen (other factories' timelines are
refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import uvicorn

from platform_api import create_app
from platform_api.security import hash_password, verify_password
from platform_api.settings import ApiSettings, api_settings
from zhizao.access import Grant, Role
from zhizao.errors import ZhizaoError
from zhizao.settings import DEMO_SECRET
from zhizao.storage.connection import Conn
from zhizao.storage.users import add_grant, create_user, update_user, user_by_name

LOGIN_FILE = "board-login.json"
DEMO_USER = "demo"
DEFAULT_PORT = 8765
#: The province of the sample ledger's enterprises.
PROVINCE = "330000"
#: Demo tokens last a working day, so a board left open does not log out mid-demo.
TOKEN_MINUTES = 8 * 60


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    jwt_secret: str


def _generate() -> DemoLogin:
    return DemoLogin(
        username=DEMO_USER,
        password=secrets.token_urlsafe(12),
        jwt_secret=f"{DEMO_SECRET}-{secrets.token_urlsafe(32)}",
    )


def demo_login(home: Path) -> DemoLogin:
    """The data directory's login, made (mode 0600) on its first use."""
    path = home / LOGIN_FILE
    if path.exists():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            login = DemoLogin(str(raw["username"]), str(raw["password"]), str(raw["jwt_secret"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ZhizaoError(
                f"{path} is not a demo login file; remove it to make a new one"
            ) from exc
        path.chmod(0o600)
        return login
    login = _generate()
    # Created with 0600 from the start: the password is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(login.__dict__, out, indent=2)
        out.write("\n")
    return login


def demo_grants(enterprise: str) -> tuple[Grant, ...]:
    return (Grant(Role.REGIONAL_ANALYST, PROVINCE), Grant(Role.ENTERPRISE_ENGINEER, enterprise))


async def ensure_demo_user(conn: Conn, login: DemoLogin, enterprise: str) -> None:
    """The demo user with the login's password and the demo grants (idempotent: an
    unchanged password is left alone, so open sessions stay valid)."""
    user = await user_by_name(conn, login.username)
    if user is None:
        user = await create_user(conn, login.username, hash_password(login.password), "演示用户")
    else:
        ok, _ = verify_password(login.password, user.password_hash)
        if not ok:
            await update_user(conn, user.id, password_hash=hash_password(login.password))
    held = set(user.grants)
    for grant in demo_grants(enterprise):
        if grant not in held:
            await add_grant(conn, user.id, grant)


def listen(host: str, wanted: int | None) -> socket.socket:
    """A listening socket on ``wanted``, or on the default port when that is free,
    else on any free port (bound here, so no other process can take it meanwhile)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in (wanted,) if wanted is not None else (DEFAULT_PORT, 0):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if wanted is not None or port == 0:
                raise ZhizaoError(f"the board cannot listen on {host}:{port}: {exc}") from exc
            continue
        sock.listen(128)
        return sock
    raise AssertionError("unreachable: port 0 always binds or raises")


def board_settings(db_url: str, login: DemoLogin) -> ApiSettings:
    return api_settings(
        jwt_secret=login.jwt_secret, demo=True, access_token_minutes=TOKEN_MINUTES,
        database={"url": db_url, "pool_min_size": 1, "pool_max_size": 4},
    )  # fmt: skip


class _Server(uvicorn.Server):
    """uvicorn inside the demo's event loop: the demo owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BoardServer:
    """The API with the board on ``sock``, served in the demo's event loop until ``stop()``."""

    def __init__(self, settings: ApiSettings, sock: socket.socket) -> None:
        config = uvicorn.Config(
            create_app(settings), log_config=None, access_log=False, lifespan="on"
        )
        self._server = _Server(config)
        self._sock = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve([self._sock]), name="demo-api")
        while not self._server.started:
            if self._task.done():
                error = None if self._task.cancelled() else self._task.exception()
                raise ZhizaoError(f"the board's API did not start: {error or 'it stopped'}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sock.close()


def board_url(host: str, port: int, enterprise: str, day: date) -> str:
    """The page to open: the demo factory's on ``day``, on a host a browser can reach."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a name, not a bind
    return f"http://{shown}:{port}/board/#/enterprise/{enterprise}?day={day.isoformat()}"
