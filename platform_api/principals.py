"""Who a caller is, kept between requests for as long as the database says nothing changed.

Authenticating a request with a JWT reads the user (disabled? sessions valid from?
grants) from the database, and under load that read, with the pool checkout and the
transaction around it, costs more than answering a KPI from the result cache. Each
API process therefore keeps the users it has read, and forgets them all when the
database announces a change to ``app_user`` or ``user_grant`` (channel
``zhizao_access``, migration 0015): a revoked grant or a disabled account takes effect
in every process within the notification's delivery, whichever process, command or
hand-written SQL made the change.

The kept users are trusted only while the process listens: before the listening
connection is up, and from the moment it fails until it is up again (and has emptied
the cache), every request reads the database as if there were no cache. A read that
began before a change and ends after it is not kept (generation counter), so a
notification can never be undone by a slow request. Entries also expire after
``ttl_s`` (belt and braces, e.g. a notification lost with a failover).

Machine tokens (``zt_…``) are not kept here: their use is recorded on every request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg
import structlog

from zhizao.backoff import Backoff
from zhizao.errors import DatabaseUnavailable
from zhizao.storage.connection import APPLICATION_NAME, Conn, connect
from zhizao.storage.users import UserRow, user_by_id

log = structlog.get_logger("platform_api.principals")

CHANNEL = "zhizao_access"


class PrincipalCache:
    def __init__(
        self, ttl_s: float, *, max_users: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_users = max_users
        self.clock = clock
        self._users: dict[int, tuple[UserRow, float]] = {}
        self._generation = 0
        #: True only while the process listens on CHANNEL (set by :meth:`listen`).
        self.trusted = False

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.trusted

    def clear(self) -> None:
        self._generation += 1
        self._users.clear()

    def kept(self, user_id: int) -> UserRow | None:
        """The user as last read, while that read is still known to be current."""
        if not self.enabled:
            return None
        found = self._users.get(user_id)
        if found is None:
            return None
        user, expires = found
        if expires <= self.clock():
            del self._users[user_id]
            return None
        return user

    async def user(self, conn: Conn, user_id: int) -> UserRow | None:
        """The user, kept or read from the database (and then kept)."""
        user = self.kept(user_id)
        if user is not None:
            return user
        generation = self._generation
        user = await user_by_id(conn, user_id)
        if user is not None and self.enabled and generation == self._generation:
            if len(self._users) >= self.max_users:
                self._users.clear()
            self._users[user_id] = (user, self.clock() + self.ttl_s)
        return user

    async def listen(
        self, url: str, *, retry_initial_s: float = 0.5, retry_max_s: float = 30.0
    ) -> None:
        """Listen on CHANNEL until cancelled, reconnecting with backoff; the cache is
        trusted only while a LISTEN is in place."""
        backoff = Backoff(retry_initial_s, retry_max_s)
        while True:
            conn: Conn | None = None
            try:
                conn = await connect(url, autocommit=True)
                await conn.execute(
                    "SELECT set_config('application_name', %s, false)",
                    (f"{APPLICATION_NAME}-api-listen",),
                )
                await conn.execute(f"LISTEN {CHANNEL}")
                # Listening first, then forgetting: a change committed in between
                # is both forgotten here and announced.
                self.clear()
                self.trusted = True
                backoff.reset()
                log.info("listening for access changes", channel=CHANNEL)
                async for _ in conn.notifies():
                    self.clear()
            except (psycopg.Error, OSError, DatabaseUnavailable) as exc:
                log.warning("access changes not heard; users are read on every request",
                            error=str(exc)[:200])  # fmt: skip
            finally:
                self.trusted = False
                self.clear()
                if conn is not None:
                    await conn.close()
            await asyncio.sleep(backoff.next_delay())
