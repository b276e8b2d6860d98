"""Writing the audit log from routes: who, what, when and from where.

A change and its audit row are written on the request's connection, so they commit
together or not at all. Refused logins are committed on their own before the
refusal is answered (the request's transaction is rolled back on an error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel

from platform_api.deps import Principal
from zhizao.storage.connection import Conn
from zhizao.storage.users import AuditEntry, write_audit

M = TypeVar("M", bound=BaseModel)


def route_of(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


async def audit(
    conn: Conn,
    request: Request,
    principal: Principal | None,
    action: str,
    *,
    addr: str,
    object_type: str | None = None,
    object_key: str | None = None,
    before: Any = None,
    after: Any = None,
    status: int | None = None,
    detail: Any = None,
    actor: str | None = None,
) -> None:
    await write_audit(
        conn,
        AuditEntry(
            action=action,
            actor=principal.username if principal else actor,
            actor_id=principal.user_id if principal else None,
            method=request.method,
            route=route_of(request),
            object_type=object_type,
            object_key=object_key,
            before=before,
            after=after,
            status=status,
            client_addr=addr,
            detail=detail,
        ),
    )


#: The status of a registry change, by its audit action (a calendar's PUT says its own).
_STATUS = {"create": 201, "update": 200, "delete": 204}


def as_json(model: BaseModel) -> Any:
    """How the audit log keeps an object: as the API shows it."""
    return model.model_dump(mode="json")


async def audit_change(
    conn: Conn,
    request: Request,
    principal: Principal,
    action: str,
    *,
    addr: str,
    object_type: str,
    object_key: str,
    before: M | None = None,
    after: M | None = None,
    dump: Callable[[M], Any] = as_json,
    status: int | None = None,
    detail: Any = None,
) -> None:
    """The audit row of a registry change: the object before and after, as ``dump``
    keeps it (absent: ``None``), and the status its action answers."""
    await audit(
        conn,
        request,
        principal,
        action,
        addr=addr,
        object_type=object_type,
        object_key=object_key,
        before=None if before is None else dump(before),
        after=None if after is None else dump(after),
        status=_STATUS[action] if status is None else status,
        detail=detail,
    )
