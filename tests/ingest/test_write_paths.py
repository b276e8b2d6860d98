"""The COPY metric paths keep write_facts' contract: idempotent, exact, millisecond times."""

from __future__ import annotations

import psycopg
import pytest

from zhizao.storage.connection import Conn
from zhizao.storage.facts import (
    COPY_METRICS_MIN_ROWS,
    FactBatch,
    MetricRow,
    encode_metrics,
    metric_ids,
    write_facts,
    write_metrics_direct,
)

T0 = 1_767_225_600_123


async def test_staged_metrics_are_idempotent_and_exact(conn: Conn) -> None:
    ids = await metric_ids(conn, ["load"])
    n = COPY_METRICS_MIN_ROWS * 4
    rows = [MetricRow(1 + i % 7, ids["load"], T0 + i, i * 0.25, i % 3) for i in range(n)]
    rows.append(rows[0])  # a duplicate inside the batch
    first = await write_facts(conn, FactBatch(metrics=rows))
    await conn.commit()
    second = await write_facts(conn, FactBatch(metrics=rows))
    await conn.commit()
    assert first.inserted == {"metric_point": n}
    assert second.new == 0
    cur = await conn.execute(
        "SELECT min((extract(epoch FROM time) * 1000)::bigint), max(value), sum(quality)"
        " FROM metric_point"
    )
    assert await cur.fetchone() == (T0, (n - 1) * 0.25, sum(i % 3 for i in range(n)))


async def test_staged_metrics_in_autocommit_mode(db_url: str) -> None:
    from zhizao.storage.connection import connect

    conn = await connect(db_url, autocommit=True)
    async with conn:
        ids = await metric_ids(conn, ["x"])
        rows = [MetricRow(1, ids["x"], T0 + i, 1.0) for i in range(COPY_METRICS_MIN_ROWS)]
        counts = await write_facts(conn, FactBatch(metrics=rows))
        assert counts.new == COPY_METRICS_MIN_ROWS
        cur = await conn.execute("SELECT count(*) FROM metric_point")
        assert await cur.fetchone() == (COPY_METRICS_MIN_ROWS,)


def _rows(metric_id: int, start: int, n: int) -> list[MetricRow]:
    return [MetricRow(1 + i % 5, metric_id, T0 + i, float(i)) for i in range(start, start + n)]


async def test_direct_copy_is_all_or_nothing_and_keeps_the_transaction(conn: Conn) -> None:
    ids = await metric_ids(conn, ["load"])
    first = encode_metrics(_rows(ids["load"], 0, 300))
    assert await write_metrics_direct(conn, first)
    # Every row again, and a block overlapping the first by one row: refused whole.
    assert not await write_metrics_direct(conn, first)
    assert not await write_metrics_direct(conn, encode_metrics(_rows(ids["load"], 299, 300)))
    # The refusals rolled back only their savepoints: the transaction goes on.
    assert await write_metrics_direct(conn, encode_metrics(_rows(ids["load"], 300, 300)))
    await conn.commit()
    cur = await conn.execute("SELECT count(*), count(DISTINCT time) FROM metric_point")
    assert await cur.fetchone() == (600, 600)


async def test_replays_fall_back_to_staging_and_count_only_new_rows(conn: Conn) -> None:
    """Whatever path a batch takes, rows and the KPI tally count each point once."""
    ids = await metric_ids(conn, ["load"])
    m = ids["load"]
    batches = [
        _rows(m, 0, 1000),  # new: straight COPY
        _rows(m, 500, 1000),  # half replayed: staged, 500 new
        _rows(m, 1500, 1000),  # new, right after a replay: staged
        _rows(m, 2500, 1000),  # new: straight COPY again
        _rows(m, 0, 3500),  # all replayed
    ]
    news = []
    for rows in batches:
        counts = await write_facts(conn, FactBatch(metrics=rows))
        await conn.commit()
        news.append(counts.new)
    assert news == [1000, 500, 1000, 1000, 0]
    cur = await conn.execute("SELECT count(*) FROM metric_point")
    assert await cur.fetchone() == (3500,)
    cur = await conn.execute("SELECT sum(points)::int FROM device_hour_tally")
    assert await cur.fetchone() == (3500,)


async def test_a_row_that_does_not_fit_is_refused_as_data(conn: Conn) -> None:
    ids = await metric_ids(conn, ["load"])
    rows = _rows(ids["load"], 0, COPY_METRICS_MIN_ROWS)
    rows[7] = MetricRow(2**31, ids["load"], T0, 1.0)  # device id beyond int4
    with pytest.raises(psycopg.DataError, match="does not fit"):
        await write_facts(conn, FactBatch(metrics=rows))
