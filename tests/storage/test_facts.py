"""Fact writes are idempotent: the same batch twice leaves the same rows."""

from __future__ import annotations

from zhizao.storage.connection import Conn
from zhizao.storage.facts import (
    STATEMENT_MAX_BYTES,
    ConnectivityRow,
    CountRow,
    EdgeStatusRow,
    EventRow,
    FactBatch,
    MetricRow,
    StateRow,
    metric_ids,
    write_facts,
)
from zhizao.wire import StateClass

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _batch(device: int, speed: int) -> FactBatch:
    return FactBatch(
        metrics=[MetricRow(device, speed, T0 + i * 1000, 1200.0 + i, 0) for i in range(100)],
        states=[
            StateRow(device, T0, StateClass.RUNNING, raw="3", reason=None),
            StateRow(device, T0 + 60_000, StateClass.UNPLANNED_STOP, raw="7", reason="E-stop"),
        ],
        counts=[CountRow(device, T0 + 30_000, 0, 5), CountRow(device, T0 + 30_000, 1, 1)],
        connectivity=[ConnectivityRow(device, T0, True, None, "session up")],
        events=[EventRow(device, T0 + 5, "alarm", "spindle overload")],
    )


async def _snapshot(conn: Conn) -> dict[str, list[tuple[object, ...]]]:
    tables = {
        "metric_point": "device_id, metric_id, time",
        "state_change": "device_id, time",
        "production_count": "device_id, counter, time",
        "device_connectivity": "device_id, time",
        "device_event": "device_id, name, time",
        "edge_status": "edge_pk, time",
    }
    out: dict[str, list[tuple[object, ...]]] = {}
    for table, order in tables.items():
        cur = await conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
        out[table] = list(await cur.fetchall())
    return out


async def test_replayed_batch_changes_nothing(conn: Conn) -> None:
    ids = await metric_ids(conn, ["spindle_speed"])
    batch = _batch(device=1, speed=ids["spindle_speed"])

    first = await write_facts(conn, batch)
    await conn.commit()
    after_first = await _snapshot(conn)
    second = await write_facts(conn, batch)
    await conn.commit()

    assert first.new == len(batch) == 106
    assert second.new == 0
    assert second.duplicates == len(batch)
    assert await _snapshot(conn) == after_first


async def test_good_and_reject_at_the_same_instant_are_both_kept(conn: Conn) -> None:
    await write_facts(conn, FactBatch(counts=[CountRow(3, T0, 0, 10)]))
    await write_facts(conn, FactBatch(counts=[CountRow(3, T0, 1, 2)]))
    cur = await conn.execute("SELECT counter, quantity FROM production_count ORDER BY counter")
    assert await cur.fetchall() == [(0, 10), (1, 2)]


async def test_times_are_stored_to_the_millisecond(conn: Conn) -> None:
    await write_facts(conn, FactBatch(metrics=[MetricRow(1, 1, T0 + 123, 1.5)]))
    cur = await conn.execute("SELECT (extract(epoch FROM time) * 1000)::bigint FROM metric_point")
    assert await cur.fetchone() == (T0 + 123,)


async def test_duplicates_inside_one_batch_are_absorbed(conn: Conn) -> None:
    rows = [MetricRow(1, 1, T0, 2.0), MetricRow(1, 1, T0, 2.0), MetricRow(1, 1, T0 + 1, 3.0)]
    counts = await write_facts(
        conn, FactBatch(metrics=rows, edge_status=[EdgeStatusRow(1, T0, True)])
    )
    assert counts.inserted == {"metric_point": 2, "edge_status": 1}
    assert counts.duplicates == 1


async def test_metric_names_are_interned_once(conn: Conn) -> None:
    first = await metric_ids(conn, ["a", "b"])
    second = await metric_ids(conn, ["b", "c", "a"])
    assert first["a"] == second["a"]
    assert first["b"] == second["b"]
    assert len({*first.values(), *second.values()}) == 3


async def test_long_texts_go_in_several_statements_and_stay_idempotent(conn: Conn) -> None:
    # 12 MiB of event texts and 2 MiB of state reasons: more than one statement each
    # (STATEMENT_MAX_BYTES), all of it stored once, all of it absorbed when replayed.
    text = "报警 spindle overload " * 150  # ~3.7 KB as UTF-8
    events = [EventRow(1 + i % 7, T0 + i, "alarm_log", f"{i} {text}") for i in range(3500)]
    states = [
        StateRow(2, T0 + i, StateClass.IDLE, raw="x" * 256, reason=f"{i} " + "r" * 250)
        for i in range(5000)
    ]
    assert sum(len(e.value.encode()) for e in events) > 3 * STATEMENT_MAX_BYTES
    batch = FactBatch(events=events, states=states)
    first = await write_facts(conn, batch)
    second = await write_facts(conn, batch)
    assert first.inserted == {"device_event": 3500, "state_change": 5000}
    assert second.new == 0
    cur = await conn.execute("SELECT count(DISTINCT value), min(length(value)) FROM device_event")
    assert await cur.fetchone() == (3500, len(text) + 2)
