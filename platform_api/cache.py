"""A short-lived cache of read-only KPI and series answers, per caller's grants.

Dashboards, the board and wall screens ask the same questions over and over: fifty
viewers of the province page each ask for the networking rate by city every few
seconds, and that figure only changes when the rollups do (every minute in
production). Each API process therefore keeps an answer ``ttl_s`` seconds (default
5, ``ZHIZAO_API_RESULT_CACHE_S``; 0 turns it off), the way BI tools and Grafana's
query cache do:

* **Keyed by the caller's grants**, with the route's path and every query parameter,
  so an answer is shared only between callers who see exactly the same part of the
  hierarchy. Authentication (the token, the user, their grants) still runs on every
  request: revoking a grant or disabling a user takes effect at once.
* **One computation per key at a time**: concurrent identical requests on a miss
  wait for the first one's answer instead of each running the query. Once an answer
  has expired, the next request computes it afresh while, for up to another
  ``ttl_s``, the others get the expired one (stale-while-revalidate), so callers do
  not queue behind the query every ``ttl_s``: an answer is at most ``2 × ttl_s``
  seconds old, plus the time its query takes.
* **Errors are never kept**; a successful write through this process empties the
  cache (:class:`WriteInvalidation`). Writes elsewhere (another API process, the
  CLI, the rollup service) show within ``ttl_s``: answers say how old they are
  (``Age``) and for how long they may be reused (``Cache-Control``).
* Bounded by entries and bytes, least recently used first out.
* **Served before routing** when it can be (:class:`KeptAnswers`): a request whose
  answer is kept, from a caller whose session is known to be valid
  (:mod:`platform_api.principals`), is answered without the router, the route's
  dependencies or a database connection; everything else takes the full path.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_JSON = "application/json"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class _Entry:
    body: bytes
    stored: float
    expires: float
    #: The route that computed it (the metrics label the answer by its template).
    route: Any = None


class ResultCache:
    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 2048,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: Seconds, monotonic (tests move it by hand).
        self.clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._running: dict[Hashable, asyncio.Future[_Entry]] = {}
        #: Bumped by every clear: an answer whose computation began before a clear
        #: may hold the data as it was before the write, and is not kept.
        self._generation = 0
        self.hits = 0
        self.stale = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> tuple[Response, Any] | None:
        """A kept answer (fresh, or stale while another request computes it afresh)
        and its route; None when only computing would answer."""
        if not self.enabled:
            return None
        found = self._lookup(key)
        if isinstance(found, Response):
            return found, self._entries[key].route
        return None

    async def answer(
        self, key: Hashable, compute: Callable[[], Awaitable[BaseModel]], *, route: Any = None
    ) -> Response | BaseModel:
        """The kept answer of ``key``, or ``compute()``'s, serialised and kept. Off,
        the route's own model, which FastAPI serialises as for any route."""
        if not self.enabled:
            return await compute()
        while True:
            found = self._lookup(key)
            if isinstance(found, Response):
                return found
            if found is None:
                return await self._compute(key, compute, route)
            # Another request is computing an answer not kept at all: wait for it. If
            # it failed or was cancelled (its client went away), compute it here.
            await asyncio.wait({found})
            if not found.cancelled() and found.exception() is None:
                self.hits += 1
                entry = found.result()
                now = self.clock()
                return _response(entry.body, age=now - entry.stored, left=entry.expires - now)
            if self._running.get(key) is found:
                del self._running[key]

    def _lookup(self, key: Hashable) -> Response | asyncio.Future[_Entry] | None:
        """A kept answer; else the computation to wait for; else None (compute it)."""
        now = self.clock()
        entry = self._entries.get(key)
        running = self._running.get(key)
        if entry is not None and entry.expires > now:
            self._entries.move_to_end(key)
            self.hits += 1
            return _response(entry.body, age=now - entry.stored, left=entry.expires - now)
        if entry is not None and entry.expires + self.ttl_s > now and running is not None:
            # Stale while revalidated: another request is computing the answer afresh;
            # meanwhile the last one serves, so that callers never queue behind the
            # query each time an answer expires.
            self.stale += 1
            return _response(entry.body, age=now - entry.stored, left=0.0)
        return running

    async def _compute(
        self, key: Hashable, compute: Callable[[], Awaitable[BaseModel]], route: Any
    ) -> Response:
        self.misses += 1
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        generation = self._generation
        try:
            body = _body(await compute())
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: waiters read it, nobody else needs to
            else:
                future.cancel()
            raise
        finally:
            if self._running.get(key) is future:
                del self._running[key]
        stored = self.clock()
        entry = _Entry(body, stored, stored + self.ttl_s, route)
        future.set_result(entry)
        if generation == self._generation:
            self._keep(key, entry)
        return _response(body, age=0.0, left=self.ttl_s)

    def _keep(self, key: Hashable, entry: _Entry) -> None:
        if len(entry.body) > self.max_bytes // 4:
            return  # one huge answer must not push out everything else
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._entries[key] = entry
        self._bytes += len(entry.body)
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped.body)


def _body(model: BaseModel) -> bytes:
    # As FastAPI serialises a response_model (by alias, unset fields included).
    return model.__pydantic_serializer__.to_json(model, by_alias=True)


def _response(body: bytes, *, age: float, left: float) -> Response:
    headers = {
        "Age": str(int(age)),
        "Cache-Control": f"private, max-age={max(int(left), 0)}",
    }
    return Response(body, media_type=_JSON, headers=headers)


def request_key(scope: Scope, grants: Hashable) -> Hashable:
    """The path, the query parameters (order ignored) and the caller's grants. Made
    from the ASGI scope, so that :class:`KeptAnswers` (before routing) and the route's
    dependency make the same key; the query is parsed as Starlette parses it."""
    raw: bytes = scope.get("query_string", b"")
    query = tuple(sorted(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)))
    return (scope["path"], query, grants)


def bearer_token(scope: Scope) -> str | None:
    """The ``Authorization: Bearer …`` credential, as OAuth2PasswordBearer reads it."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            return credential if scheme.lower() == "bearer" and credential else None
    return None


class KeptAnswers:
    """Pure ASGI middleware: a GET whose answer is kept is answered before routing.

    ``grants_of(token)`` gives the caller's grants when the token is a valid access
    token of a user whose record is kept and current (:mod:`platform_api.principals`),
    else None. The key is then the one the route's own dependency makes; an answer is
    kept under a path only by the route the router chose for that path, so the path
    needs no matching here. Anything else (no kept answer, a machine token, a user
    not kept, an invalid token) goes to the application, which answers as always.
    """

    def __init__(
        self, app: ASGIApp, cache: ResultCache, grants_of: Callable[[str], Hashable | None]
    ) -> None:
        self.app = app
        self.cache = cache
        self.grants_of = grants_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # An empty cache (just started, just written to) has nothing to serve: no token
        # check here that the full path would repeat.
        if scope["type"] == "http" and scope.get("method") == "GET" and len(self.cache):
            token = bearer_token(scope)
            grants = self.grants_of(token) if token else None
            if grants is not None:
                kept = self.cache.peek(request_key(scope, grants))
                if kept is not None:
                    response, route = kept
                    scope["route"] = route
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class WriteInvalidation:
    """Pure ASGI middleware: a successful write through this process empties the cache,
    so that its own caller (and everyone else here) reads the change at once."""

    def __init__(self, app: ASGIApp, cache: ResultCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method", "GET") in _READS:
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and int(message["status"]) < 400:
                self.cache.clear()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # Also after the response: an answer computed while the write ran may
            # have been kept with the data as it was before.
            self.cache.clear()
