"""Writing the audit log from routes: who, what, when and from where.

A change and its audit row are written on the request's connection, so they commit
together or not at all. Refused logins are committed on their own before the
refusal is answered (the request's transaction is rolled back on an error).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from platform_api.deps import Principal
from zhizao.storage.connection import Conn
from zhizao.storage.users import AuditEntry, write_audit


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
