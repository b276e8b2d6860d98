"""Changes to registry objects: one way to create, change and delete, audited alike.

Every registry write of the API goes the same way, whatever the object:

* **create**: the route claims the code (:func:`claim`, an INSERT that does nothing
  when the code is taken, so that two concurrent creations give one 201 and one 409,
  never an overwrite) or checks it is free, stores the object, and :func:`created`
  reads it back as the API shows it and writes the audit row.
* **change** (PATCH): :func:`changing` locks the object's row (``SELECT … FOR
  UPDATE``, so that concurrent changes of one object are applied one after the
  other) and reads it (404 when it is not there); the route changes it;
  :func:`changed` reads it again and audits it before and after.
* **delete**: :func:`changing`; the route deletes; :func:`deleted` audits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel

from platform_api.audit import as_json, audit_change
from platform_api.deps import ClientAddr, ConnDep, CurrentPrincipal, Principal
from platform_api.problems import ProblemError, not_found
from platform_api.scope import EnterpriseRef, key_of
from zhizao.storage.connection import Conn

S = TypeVar("S", bound=EnterpriseRef | None)
P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True)
class Writer:
    """What every registry change needs of its request."""

    request: Request
    principal: Principal
    conn: Conn
    addr: str


async def _writer(
    request: Request,
    principal: CurrentPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
) -> Writer:
    return Writer(request, principal, conn, addr)


WriterDep = Annotated[Writer, Depends(_writer)]


def _default_key(at: EnterpriseRef | None, code: str) -> str:
    return code if at is None else key_of(at, code)


@dataclass(frozen=True)
class Kind(Generic[S, P]):
    """A kind of registry object as its changes name it.

    ``at`` is the enterprise an object belongs to (``None`` for regions, clusters and
    enterprises themselves); ``lock`` selects its row ``FOR UPDATE`` with the
    parameters ``ent`` (the enterprise's id) and ``code``.
    """

    name: str  # object_type of the audit log
    label: str  # how a 404 names it
    lock: str
    read: Callable[[Conn, S, str], Awaitable[P | None]]
    dump: Callable[[P], Any] = as_json
    key: Callable[[S, str], str] = _default_key


async def shown(conn: Conn, kind: Kind[S, P], at: S, code: str) -> P:
    """The object for a GET; 404 if there is none."""
    found = await kind.read(conn, at, code)
    if found is None:
        raise not_found(kind.label, code)
    return found


async def claim(conn: Conn, query: str, params: tuple[object, ...], taken: str) -> None:
    """Run an ``INSERT … ON CONFLICT DO NOTHING RETURNING id``; 409 ``taken`` if it
    inserted nothing."""
    cur = await conn.execute(query.encode(), params)
    if await cur.fetchone() is None:
        raise ProblemError(409, taken, kind="conflict")


async def created(w: Writer, kind: Kind[S, P], at: S, code: str) -> P:
    """The object just stored, as the API shows it, audited as created."""
    found = await kind.read(w.conn, at, code)
    assert found is not None  # noqa: S101 - stored just above, in this transaction
    await _audit(w, kind, "create", kind.key(at, code), after=found)
    return found


async def changing(w: Writer, kind: Kind[S, P], at: S, code: str) -> P:
    """The object about to change, its row locked until the request commits; 404 if
    there is none."""
    ent = None if at is None else at.id
    await w.conn.execute(kind.lock.encode(), {"ent": ent, "code": code})
    before = await kind.read(w.conn, at, code)
    if before is None:
        raise not_found(kind.label, code)
    return before


async def changed(
    w: Writer, kind: Kind[S, P], at: S, code: str, before: P, *, key: str | None = None
) -> P:
    """The object after its change, audited with what it was.
    ``key`` names it in the audit log when not ``at`` (a device that moved)."""
    after = await kind.read(w.conn, at, code)
    assert after is not None  # noqa: S101 - it existed a moment ago, in this transaction
    await _audit(w, kind, "update", key or kind.key(at, code), before=before, after=after)
    return after


async def deleted(
    w: Writer,
    kind: Kind[S, P],
    at: S,
    code: str,
    before: P,
    *,
    detail: Mapping[str, Any] | None = None,
) -> None:
    await _audit(w, kind, "delete", kind.key(at, code), before=before, detail=detail)


async def _audit(
    w: Writer,
    kind: Kind[S, P],
    action: str,
    key: str,
    *,
    before: P | None = None,
    after: P | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    await audit_change(
        w.conn, w.request, w.principal, action, addr=w.addr, object_type=kind.name,
        object_key=key, before=before, after=after, dump=kind.dump,
        detail=None if detail is None else dict(detail),
    )  # fmt: skip
