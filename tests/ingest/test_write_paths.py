"""The COPY-staged metric path keeps write_facts' contract: idempotent, millisecond times."""

from __future__ import annotations

from zhizao.storage.connection import Conn
from zhizao.storage.facts import (
    STAGED_METRICS_MIN_ROWS,
    FactBatch,
    MetricRow,
    metric_ids,
    write_facts,
)

T0 = 1_767_225_600_123


async def test_staged_metrics_are_idempotent_and_exact(conn: Conn) -> None:
    ids = await metric_ids(conn, ["load"])
    n = STAGED_METRICS_MIN_ROWS * 4
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
        rows = [MetricRow(1, ids["x"], T0 + i, 1.0) for i in range(STAGED_METRICS_MIN_ROWS)]
        counts = await write_facts(conn, FactBatch(metrics=rows))
        assert counts.new == STAGED_METRICS_MIN_ROWS
        cur = await conn.execute("SELECT count(*) FROM metric_point")
        assert await cur.fetchone() == (STAGED_METRICS_MIN_ROWS,)
