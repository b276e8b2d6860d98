"""Lists: sorting by whitelisted keys, and one page with the total its filters match.

A list route names the keys a client may sort by, each mapped to the SQL expression
it stands for; ``sort=-updated_at,code`` sorts by the first descending, then by the
second. Anything else is a 422 naming the keys allowed, so no text of the request
ever becomes SQL. The route's unique key always ends the order, so pages are stable.

The total and the page come from one WHERE clause, the one holding the caller's scope
fragment (:meth:`zhizao.access.Visibility.enterprise_filter`): a total can count only
rows the caller could page through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import Query
from psycopg import sql
from psycopg.rows import dict_row

from platform_api.problems import field_error
from zhizao.storage.connection import Conn

SortParam = Annotated[
    str | None,
    Query(
        max_length=200,
        description="comma-separated keys, '-' before a key for descending (e.g. -updated_at,code)",
    ),
]


def order_by(
    text: str | None,
    allowed: Mapping[str, sql.Composable],
    *,
    default: str,
    unique: Sequence[sql.Composable],
) -> sql.Composable:
    """The ORDER BY list for ``text`` (or ``default``), ended by the ``unique`` key."""
    parts: list[sql.Composable] = []
    used: set[str] = set()
    for item in (text or default).split(","):
        key = item.strip()
        descending = key.startswith("-")
        name = key.removeprefix("-").strip()
        if name not in allowed or name in used:
            rule = (
                f"sort key {name!r} is given twice"
                if name in used
                else f"unknown sort key {name!r}; allowed: {', '.join(allowed)}"
                " (prefix '-' for descending)"
            )
            raise field_error("query.sort", text, rule)
        used.add(name)
        parts.append(
            sql.SQL("{} {}").format(allowed[name], sql.SQL("DESC" if descending else "ASC"))
        )
    parts.extend(unique)
    return sql.SQL(", ").join(parts)


async def fetch_page(
    conn: Conn,
    *,
    select: sql.Composable,
    source: sql.Composable,
    where: Sequence[sql.Composable],
    params: Mapping[str, Any],
    order: sql.Composable,
    limit: int,
    offset: int,
) -> tuple[int, list[dict[str, Any]]]:
    """(total, rows of the page) of ``SELECT select FROM source WHERE where...``."""
    condition = sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL("SELECT count(*) AS total FROM {} WHERE {}").format(source, condition),
            params,
        )
        counted = await cur.fetchone()
        await cur.execute(
            sql.SQL(
                "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT %(_page_limit)s"
                " OFFSET %(_page_offset)s"
            ).format(select, source, condition, order),
            {**params, "_page_limit": limit, "_page_offset": offset},
        )
        rows = await cur.fetchall()
    return (int(counted["total"]) if counted else 0), rows


async def fetch_rows(
    conn: Conn,
    *,
    select: sql.Composable,
    source: sql.Composable,
    where: Sequence[sql.Composable],
    params: Mapping[str, Any],
    order: sql.Composable | None = None,
) -> list[dict[str, Any]]:
    """Every row of ``SELECT select FROM source WHERE where...`` (small results)."""
    condition = sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE")
    query = sql.SQL("SELECT {} FROM {} WHERE {}").format(select, source, condition)
    if order is not None:
        query = sql.SQL("{} ORDER BY {}").format(query, order)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
