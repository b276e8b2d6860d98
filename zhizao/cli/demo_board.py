"""The demo's platform API and status board: its login, its user and its server.

``zhizao demo`` serves the API with the board (``/board/``) from a process of its own, on
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
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

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


class BoardServer:
    """The API with the board in a process of its own, on the socket ``sock``.

    Its own process, not a task of the demo's event loop: the simulator's OPC UA
    server and the edge's client keep that loop (and the interpreter) busy for seconds
    at a time, and the board must answer while they start. The child inherits the
    listening socket (so the port printed is the port served), reads the signing
    secret from the login file, gets the database URL in its environment (never on
    its command line), logs to the demo's log, and ends when the demo does, even one
    killed without a chance to stop it (it watches its parent).
    """

    def __init__(self, db_url: str, home: Path, sock: socket.socket, log: Path) -> None:
        self._db_url = db_url
        self._home = home
        self._sock = sock
        self._log = log
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self, timeout_s: float = 60.0) -> None:
        fd = self._sock.fileno()
        env = {**os.environ, "ZHIZAO_DB_URL": self._db_url}
        with self._log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "zhizao.cli.demo_serve", "--fd", str(fd),
                "--home", str(self._home), "--log", str(self._log),
                pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await _answers(self.port):
            if self._proc.returncode is not None:
                raise ZhizaoError(f"the board's API did not start (see {self._log})")
            if asyncio.get_running_loop().time() > deadline:
                raise ZhizaoError(f"the board's API did not answer in {timeout_s:g} s"
                                  f" (see {self._log})")  # fmt: skip
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._sock.close()


async def _answers(port: int) -> bool:
    """Whether the API answers /health on 127.0.0.1:port."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return b" 200 " in status


def board_url(host: str, port: int, enterprise: str, day: date) -> str:
    """The page to open: the demo factory's on ``day``, on a host a browser can reach."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a name, not a bind
    return f"http://{shown}:{port}/board/#/enterprise/{enterprise}?day={day.isoformat()}"
