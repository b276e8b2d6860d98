"""Changes to registry objects: one way to create, change and delete, audited alike.

Every registry write of the API goes the same way, whatever the object:

* **create**: the route claims the code (:func:`claim`, an INSERT that does nothing
  when the code is taken, so that two concurrent creations give one 201 and one 409,
  never an overwrite) or checks it is free, stores the object, and :func:`created`
  reads it back as the API shows it and writes the audit row.
* **change** (PATCH): :func:`changing` locks the object's row (``SELECT … FOR NO
  KEY UPDATE``: it waits for another change of the row, not for the foreign-key checks
  of rows that refer to it), reads it (404 when it is not there) and checks
  ``If-Match``; the route changes it; :func:`changed` reads it again, audits it
  before and after, and answers its new ETag.
* **delete**: :func:`changing` without a precondition; the route deletes;
  :func:`deleted` audits.

Lost updates (RFC 9110 §13.1.1). A GET or PATCH of an object answers an ``ETag``: a
digest of the object as the API shows it, so it changes whenever the answer does (a
renamed site, an edge's device list, a device's ``updated_at``) and is a strong
validator. A PATCH with ``If-Match`` is applied only if the tag is still the
object's; else 412. The row lock is taken before the tag is compared, so of two
PATCHes sent with the same tag one is applied and the other, waiting for the lock,
compares against the first one's result and gets 412. ``If-Match`` is optional: a
PATCH without it is applied as before (the last writer wins), so clients written
before it keep working.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel

from platform_api.audit import as_json, audit_change
from platform_api.deps import ClientAddr, ConnDep, CurrentPrincipal, Principal
from platform_api.problems import FieldProblem, ProblemError, not_found
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
    response: Response


async def _writer(
    request: Request,
    principal: CurrentPrincipal,
    conn: ConnDep,
    addr: ClientAddr,
    response: Response,
) -> Writer:
    return Writer(request, principal, conn, addr, response)


WriterDep = Annotated[Writer, Depends(_writer)]

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=1000,
        description=(
            "apply the change only if the object's ETag is still this one (412 if not);"
            " optional: without it the change is applied whatever came before"
        ),
    ),
]

#: ``responses=`` entries of routes that answer an object with its ETag.
ETAG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Successful Response",
        "headers": {
            "ETag": {
                "description": "the object's version; send it as If-Match with a PATCH",
                "schema": {"type": "string"},
            }
        },
    }
}


def _default_key(at: EnterpriseRef | None, code: str) -> str:
    return code if at is None else key_of(at, code)


@dataclass(frozen=True)
class Kind(Generic[S, P]):
    """A kind of registry object as its changes name it.

    ``at`` is the enterprise an object belongs to (``None`` for regions, clusters and
    enterprises themselves); ``lock`` selects its row ``FOR NO KEY UPDATE`` with the
    parameters ``ent`` (the enterprise's id) and ``code``.
    """

    name: str  # object_type of the audit log
    label: str  # how a 404 names it
    lock: str
    read: Callable[[Conn, S, str], Awaitable[P | None]]
    dump: Callable[[P], Any] = as_json
    key: Callable[[S, str], str] = _default_key


def etag(model: BaseModel) -> str:
    """A strong entity tag of the object as the API shows it."""
    digest = hashlib.sha256(model.model_dump_json().encode()).hexdigest()
    return f'"{digest[:32]}"'


def tagged(response: Response, model: P) -> P:
    """``model``, answered with its ETag."""
    response.headers["ETag"] = etag(model)
    return model


async def shown(conn: Conn, response: Response, kind: Kind[S, P], at: S, code: str) -> P:
    """The object for a GET, with its ETag; 404 if there is none."""
    found = await kind.read(conn, at, code)
    if found is None:
        raise not_found(kind.label, code)
    return tagged(response, found)


def _matches(if_match: str, tag: str) -> bool:
    # Strong comparison (RFC 9110 §13.1.1): a weak tag W/"…" never matches.
    return if_match.strip() == "*" or tag in (part.strip() for part in if_match.split(","))


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


async def changing(w: Writer, kind: Kind[S, P], at: S, code: str, if_match: str | None = None) -> P:
    """The object about to change, its row locked until the request commits; 404 if
    there is none, 412 if ``if_match`` is not its ETag."""
    ent = None if at is None else at.id
    await w.conn.execute(kind.lock.encode(), {"ent": ent, "code": code})
    before = await kind.read(w.conn, at, code)
    if before is None:
        raise not_found(kind.label, code)
    precondition(if_match, before, kind.label)
    return before


def precondition(if_match: str | None, current: BaseModel, label: str) -> None:
    """412 naming the header unless ``if_match`` is absent or matches ``current``'s ETag
    (the object as a GET shows it now, read under the lock the change holds)."""
    if if_match is None or _matches(if_match, etag(current)):
        return
    rule = (
        f"is not the {label}'s current ETag: it changed since you read it;"
        " GET it again and make your change to what it is now"
    )
    raise ProblemError(
        412,
        f"header.if-match: {rule}",
        kind="precondition-failed",
        errors=[FieldProblem(field="header.if-match", rule=rule, value=if_match)],
    )


async def changed(
    w: Writer, kind: Kind[S, P], at: S, code: str, before: P, *, key: str | None = None
) -> P:
    """The object after its change, audited with what it was, answered with its ETag.
    ``key`` names it in the audit log when not ``at`` (a device that moved)."""
    after = await kind.read(w.conn, at, code)
    assert after is not None  # noqa: S101 - it existed a moment ago, in this transaction
    await _audit(w, kind, "update", key or kind.key(at, code), before=before, after=after)
    return tagged(w.response, after)


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
