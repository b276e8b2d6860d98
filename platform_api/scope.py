"""The enterprise a registry route is about, found through the caller's scope.

Every route below an enterprise (``/api/v1/enterprises/{credit_code}/...``) starts
here. The enterprise is looked up through the kernel's one filter
(:meth:`zhizao.access.Visibility.enterprise_filter`): outside the caller's scope it
does not exist (404, the same answer as for a credit code nobody registered). A
change needs the WRITE level: a caller who may see the enterprise but not change it
gets 403, one who may not see it still 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import Path
from psycopg import sql

from platform_api.deps import Principal
from platform_api.problems import ProblemError, not_found
from zhizao.access import Access
from zhizao.storage.connection import Conn

CreditCodePath = Annotated[
    str,
    Path(
        pattern=r"^[0-9A-Za-z]{18}$",
        description="统一社会信用代码 unified social credit code (GB 32100)",
        examples=["91330203MA2NB0001X"],
    ),
]
CodePath = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
        description="code within the enterprise",
        examples=["L1"],
    ),
]


@dataclass(frozen=True, slots=True)
class EnterpriseRef:
    id: int
    credit_code: str
    name: str
    zone: ZoneInfo


async def find_enterprise(
    conn: Conn, principal: Principal, credit_code: str, access: Access
) -> EnterpriseRef | None:
    """The enterprise if it exists and ``access`` to it is granted, else None."""
    fragment, params = principal.visibility.enterprise_filter("e", access)
    cur = await conn.execute(
        sql.SQL(
            "SELECT e.id, e.credit_code, e.name, e.time_zone FROM enterprise e"
            " WHERE e.credit_code = %(_credit)s AND {}"
        ).format(fragment),
        {**params, "_credit": credit_code.strip().upper()},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return EnterpriseRef(int(row[0]), str(row[1]), str(row[2]), ZoneInfo(str(row[3])))


async def readable_enterprise(conn: Conn, principal: Principal, credit_code: str) -> EnterpriseRef:
    found = await find_enterprise(conn, principal, credit_code, Access.SUMMARY)
    if found is None:
        raise not_found("enterprise", credit_code)
    return found


async def writable_enterprise(conn: Conn, principal: Principal, credit_code: str) -> EnterpriseRef:
    found = await find_enterprise(conn, principal, credit_code, Access.WRITE)
    if found is not None:
        return found
    if await find_enterprise(conn, principal, credit_code, Access.SUMMARY) is None:
        raise not_found("enterprise", credit_code)
    raise ProblemError(
        403,
        "changing this enterprise's registry needs its enterprise_engineer role or admin",
        kind="forbidden",
    )


def key_of(enterprise: EnterpriseRef, code: str) -> str:
    """How the audit log names an object of an enterprise: ``<credit code>/<code>``."""
    return f"{enterprise.credit_code}/{code}"
