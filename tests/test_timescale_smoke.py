"""Smoke tests of the TimescaleDB WASM engine (deploy/timescale-wasm) through psycopg.

They prove the features the storage layer relies on (hypertables, compression
segmented by device, compression and retention policies, idempotent multi-row
inserts, time_bucket, continuous aggregates) and record how the engine behaves
with psycopg's defaults, its one-connection-at-a-time server, and what crashes it.
docs/timescale-wasm.md summarises the findings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.fix_timescale import (
    EXIT_ENGINE_CRASHED,
    TimescaleServer,
    running_timescale_server,
)

pytestmark = pytest.mark.timescale

T0 = datetime(2026, 1, 1, tzinfo=UTC)

Conn = psycopg.Connection[tuple[Any, ...]]


def _one(
    conn: Conn,
    query: str,
    params: Any = None,
    *,
    prepare: bool | None = None,
) -> tuple[Any, ...]:
    row = conn.execute(query, params, prepare=prepare).fetchone()
    assert row is not None, query
    return row


@pytest.fixture
def conn(timescale_url: str) -> Iterator[Conn]:
    """An autocommit connection with the timescaledb extension created."""
    with psycopg.connect(timescale_url, autocommit=True, connect_timeout=10) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        yield c


# --- TimescaleDB features ---------------------------------------------------------


def test_extension_version_and_session(conn: Conn) -> None:
    (version,) = _one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    assert version.startswith("2.23")
    user, database, schema = _one(conn, "SELECT current_user, current_database(), current_schema()")
    # Whatever the URL says, PGlite's only session is postgres in template1.
    assert (user, database, schema) == ("postgres", "template1", "public")
    assert conn.info.server_version >= 170000


def test_hypertable_compression_and_policies(conn: Conn) -> None:
    conn.execute(
        """
        CREATE TABLE smoke_metric_point (
            device_id text NOT NULL,
            metric text NOT NULL,
            time timestamptz NOT NULL,
            value double precision,
            quality smallint NOT NULL DEFAULT 0,
            UNIQUE (device_id, metric, time)
        )
        """
    )
    (created,) = _one(
        conn, "SELECT create_hypertable('smoke_metric_point', by_range('time', INTERVAL '1 day'))"
    )
    assert created is not None
    # The pre-2.13 signature works as well.
    conn.execute(
        "CREATE TABLE smoke_state_change (device_id text NOT NULL, time timestamptz NOT NULL,"
        " state text NOT NULL, PRIMARY KEY (device_id, time))"
    )
    conn.execute(
        "SELECT create_hypertable('smoke_state_change', 'time',"
        " chunk_time_interval => INTERVAL '7 days', if_not_exists => true)"
    )
    conn.execute(
        "ALTER TABLE smoke_metric_point SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'device_id',"
        " timescaledb.compress_orderby = 'metric, time DESC')"
    )
    (compression_job,) = _one(
        conn, "SELECT add_compression_policy('smoke_metric_point', INTERVAL '7 days')"
    )
    (retention_job,) = _one(
        conn, "SELECT add_retention_policy('smoke_metric_point', INTERVAL '90 days')"
    )
    assert compression_job != retention_job

    hypertables = conn.execute(
        "SELECT hypertable_schema, hypertable_name, num_dimensions, compression_enabled"
        " FROM timescaledb_information.hypertables"
        " WHERE hypertable_name LIKE 'smoke\\_%' ORDER BY hypertable_name"
    ).fetchall()
    assert hypertables == [
        ("public", "smoke_metric_point", 1, True),
        ("public", "smoke_state_change", 1, False),
    ]
    segmentby = conn.execute(
        "SELECT attname FROM timescaledb_information.compression_settings"
        " WHERE hypertable_name = 'smoke_metric_point' AND segmentby_column_index IS NOT NULL"
    ).fetchall()
    assert segmentby == [("device_id",)]
    jobs: dict[str, int] = dict(
        conn.execute(
            "SELECT proc_name, job_id FROM timescaledb_information.jobs"
            " WHERE hypertable_name = 'smoke_metric_point'"
        ).fetchall()
    )
    assert jobs == {"policy_compression": compression_job, "policy_retention": retention_job}


def test_idempotent_multirow_insert_and_time_bucket(conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE smoke_points (device_id text NOT NULL, time timestamptz NOT NULL,"
        " value double precision, UNIQUE (device_id, time))"
    )
    conn.execute("SELECT create_hypertable('smoke_points', by_range('time'))")
    rows = [
        ("d1", T0 + timedelta(minutes=10), 1.5),
        ("d1", T0 + timedelta(minutes=40), 2.5),
        ("d2", T0 + timedelta(minutes=70), 3.5),
        ("d1", T0 + timedelta(days=4), 4.0),
    ]
    insert = (
        "INSERT INTO smoke_points (device_id, time, value) VALUES "
        + ", ".join(["(%s, %s, %s)"] * len(rows))
        + " ON CONFLICT DO NOTHING"
    )
    params = [x for row in rows for x in row]
    assert conn.execute(insert, params).rowcount == 4
    assert conn.execute(insert, params).rowcount == 0  # a replayed batch changes nothing

    buckets = conn.execute(
        "SELECT time_bucket('1 hour', time) AS bucket, device_id, count(*), sum(value)"
        " FROM smoke_points GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert buckets == [
        (T0, "d1", 2, 4.0),
        (T0 + timedelta(hours=1), "d2", 1, 3.5),
        (T0 + timedelta(days=4), "d1", 1, 4.0),
    ]
    # Local-day buckets with a time zone, and date_bin for plain PostgreSQL parity.
    local_days = conn.execute(
        "SELECT time_bucket('1 day', time, 'Asia/Shanghai'), count(*)"
        " FROM smoke_points GROUP BY 1 ORDER BY 1"
    ).fetchall()
    shanghai_midnight = T0 - timedelta(hours=8)
    assert local_days == [(shanghai_midnight, 3), (shanghai_midnight + timedelta(days=4), 1)]
    binned = conn.execute(
        "SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01 00:00+00'), count(*)"
        " FROM smoke_points GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [(b, n) for b, _, n, _ in buckets] == binned


def test_compressed_chunks_continuous_aggregate_and_jobs(conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE smoke_counts (device_id text NOT NULL, time timestamptz NOT NULL,"
        " good integer NOT NULL, reject integer NOT NULL, UNIQUE (device_id, time))"
    )
    conn.execute("SELECT create_hypertable('smoke_counts', by_range('time', INTERVAL '1 day'))")
    conn.execute(
        "ALTER TABLE smoke_counts SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'device_id')"
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO smoke_counts VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(f"d{i % 3}", T0 + timedelta(minutes=15 * i), 10 + i, i % 2) for i in range(200)],
        )
    before = _one(conn, "SELECT count(*), sum(good), sum(reject) FROM smoke_counts")
    compressed = conn.execute(
        "SELECT compress_chunk(c) FROM show_chunks('smoke_counts') AS c"
    ).fetchall()
    assert len(compressed) >= 2
    assert _one(conn, "SELECT count(*), sum(good), sum(reject) FROM smoke_counts") == before
    # Inserting into a compressed chunk, with conflict handling, still works.
    assert (
        conn.execute(
            "INSERT INTO smoke_counts VALUES ('d0', %s, 1, 0) ON CONFLICT DO NOTHING", (T0,)
        ).rowcount
        == 0
    )

    conn.execute(
        "CREATE MATERIALIZED VIEW smoke_counts_hourly WITH (timescaledb.continuous) AS"
        " SELECT time_bucket('1 hour', time) AS bucket, device_id, sum(good) AS good"
        " FROM smoke_counts GROUP BY 1, 2 WITH NO DATA"
    )
    conn.execute(
        "CALL refresh_continuous_aggregate('smoke_counts_hourly', %s, %s)",
        (T0, T0 + timedelta(days=7)),
    )
    assert _one(conn, "SELECT sum(good) FROM smoke_counts_hourly") == (before[1],)
    (cagg_job,) = _one(
        conn,
        "SELECT add_continuous_aggregate_policy('smoke_counts_hourly',"
        " start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',"
        " schedule_interval => INTERVAL '1 hour')",
    )
    assert cagg_job > 0

    # There are no background workers: policies run only when asked to.
    (retention_job,) = _one(
        conn, "SELECT add_retention_policy('smoke_counts', drop_after => INTERVAL '1 day')"
    )
    time.sleep(0.2)
    assert _one(conn, "SELECT count(*) FROM smoke_counts") == (before[0],)
    conn.execute("CALL run_job(%s)", (retention_job,))
    assert _one(conn, "SELECT count(*) FROM smoke_counts") == (0,)


# --- psycopg defaults ---------------------------------------------------------------


def test_prepared_statements_after_threshold_and_across_connections(timescale_url: str) -> None:
    # psycopg prepares a query on its 6th execution (prepare_threshold=5) as "_pg3_0".
    # Every new psycopg connection reuses that name: without the server's per-client
    # session reset, the second connection failed with DuplicatePreparedStatement.
    for _ in range(2):
        with psycopg.connect(timescale_url, autocommit=True) as c:
            results = [_one(c, "SELECT %s::int + 1", (i,))[0] for i in range(8)]
            assert results == list(range(1, 9))
            names = [n for (n,) in c.execute("SELECT name FROM pg_prepared_statements")]
            assert names == ["_pg3_0"]
            assert _one(c, "SELECT %s::text", ("explicit",), prepare=True) == ("explicit",)


def test_binary_parameters_and_results(conn: Conn) -> None:
    when = T0 + timedelta(microseconds=123456)
    row = conn.execute(
        "SELECT %b::int8, %b::text, %b::float8, %b::timestamptz, %b::bytea, %b::bigint[]",
        (2**40, "智造 é", 1.25, when, b"\x00\xff", [1, 2, 3]),
        binary=True,
    ).fetchone()
    assert row == (2**40, "智造 é", 1.25, when, b"\x00\xff", [1, 2, 3])


def test_unnest_bigint_array_of_100(conn: Conn) -> None:
    ids = list(range(10**12, 10**12 + 100))
    assert _one(conn, "SELECT count(*), sum(x) FROM unnest(%s::bigint[]) AS x", (ids,)) == (
        100,
        sum(ids),
    )
    assert _one(conn, "SELECT count(*), sum(x) FROM unnest(%b::bigint[]) AS x", (ids,)) == (
        100,
        sum(ids),
    )


def test_pipeline_mode(conn: Conn) -> None:
    conn.execute("CREATE TABLE smoke_pipe (k int PRIMARY KEY, v text)")
    with conn.pipeline():
        inserts = [
            conn.execute(
                "INSERT INTO smoke_pipe VALUES (%s, %s) ON CONFLICT DO NOTHING", (i % 7, str(i))
            )
            for i in range(20)
        ]
        selected = conn.execute("SELECT count(*) FROM smoke_pipe")
    assert sum(c.rowcount for c in inserts) == 7
    assert selected.fetchone() == (7,)


def test_large_messages_and_batches(conn: Conn) -> None:
    # Messages over 64 KiB, and pipelines (executemany) whose messages straddle TCP
    # reads or 8 KiB engine blocks; each of these crashed or hung the unfixed server.
    assert _one(conn, "SELECT length(%s::text)", ("x" * 200_000,)) == (200_000,)
    ids = list(range(10**12, 10**12 + 20_000))
    assert _one(conn, "SELECT count(*) FROM unnest(%s::bigint[])", (ids,)) == (20_000,)
    conn.execute("CREATE TABLE smoke_batch (k bigint PRIMARY KEY, v text)")
    rows = [(i, "v" * (i % 97)) for i in range(5000)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO smoke_batch VALUES (%s, %s) ON CONFLICT DO NOTHING", rows)
    assert _one(conn, "SELECT count(*), sum(length(v)) FROM smoke_batch") == (
        5000,
        sum(len(v) for _, v in rows),
    )


async def test_async_connection(timescale_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(timescale_url, autocommit=True) as c:
        await c.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        await c.execute(
            "CREATE TABLE smoke_async (device_id text NOT NULL, time timestamptz NOT NULL,"
            " value double precision, UNIQUE (device_id, time))"
        )
        await c.execute("SELECT create_hypertable('smoke_async', by_range('time'))")
        async with c.cursor() as cur:
            await cur.executemany(
                "INSERT INTO smoke_async VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [("d1", T0 + timedelta(minutes=i), float(i)) for i in range(30)],
            )
            await cur.execute(
                "SELECT time_bucket('10 minutes', time), count(*) FROM smoke_async"
                " GROUP BY 1 ORDER BY 1"
            )
            assert await cur.fetchall() == [(T0 + timedelta(minutes=10 * i), 10) for i in range(3)]


# --- connections and sessions -------------------------------------------------------


def test_each_connection_starts_a_fresh_session(timescale_url: str) -> None:
    with psycopg.connect(timescale_url, autocommit=True) as c:
        c.execute("CREATE TABLE smoke_fresh (a int)")
    first = psycopg.connect(timescale_url)  # not autocommit: a transaction stays open
    first.execute("SET application_name = 'first'")
    first.execute("CREATE TEMP TABLE smoke_tmp (a int)")
    first.execute("PREPARE smoke_p AS SELECT 42")
    first.execute("INSERT INTO smoke_fresh VALUES (1)")
    first.close()  # closes without COMMIT
    with psycopg.connect(timescale_url, autocommit=True) as c:
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert _one(c, "SELECT count(*) FROM smoke_fresh") == (0,)
        assert _one(c, "SHOW application_name") == ("",)
        assert _one(c, "SHOW search_path") == ("public",)
        assert _one(c, "SELECT count(*) FROM pg_prepared_statements") == (0,)
        with pytest.raises(errors.UndefinedTable):
            c.execute("SELECT * FROM smoke_tmp")


def test_second_connection_waits_for_the_first(timescale_url: str) -> None:
    connected = threading.Event()
    failures: list[BaseException] = []

    def second() -> None:
        try:
            with psycopg.connect(timescale_url, autocommit=True, connect_timeout=30) as c:
                connected.set()
                c.execute("SELECT 1")
        except psycopg.Error as exc:  # reported by the main thread
            failures.append(exc)

    with psycopg.connect(timescale_url, autocommit=True) as first:
        thread = threading.Thread(target=second)
        thread.start()
        assert not connected.wait(1.0), "a second connection was served concurrently"
        first.execute("SELECT 1")  # the first one is not disturbed by the waiting one
    thread.join(30)
    assert not failures
    assert connected.is_set()


def test_default_sslmode_and_any_credentials(timescale_server: TimescaleServer) -> None:
    conninfo = (
        f"host={timescale_server.host} port={timescale_server.port}"
        " user=someone dbname=whatever password=anything"
    )
    with psycopg.connect(conninfo, connect_timeout=10) as c:  # sslmode=prefer
        assert _one(c, "SELECT current_user, current_database()") == ("postgres", "template1")
        assert not c.pgconn.ssl_in_use


# --- what crashes: each on a private server -----------------------------------------


def test_copy_from_stdin_kills_the_engine(tmp_path: Path) -> None:
    with running_timescale_server(tmp_path) as server:
        with psycopg.connect(server.url, autocommit=True) as c:
            c.execute("CREATE TABLE t (a int)")
            with c.cursor() as cur:
                assert cur.execute("SELECT 1").fetchone() == (1,)
                # COPY TO STDOUT is fine ...
                with cur.copy("COPY t TO STDOUT") as copy:
                    assert list(copy.rows()) == []
        with (
            psycopg.connect(server.url, autocommit=True) as c,
            pytest.raises(psycopg.OperationalError, match="server closed the connection"),
            c.cursor() as cur,
            cur.copy("COPY t FROM STDIN") as copy,
        ):
            copy.write_row((1,))  # ... COPY FROM STDIN traps the WASM engine
        assert server.wait_exit(10) == EXIT_ENGINE_CRASHED
        log = server.log_text()
        assert "TIMESCALE_WASM_FATAL" in log
        assert "RuntimeError: unreachable" in log


def test_raw_library_defects(tmp_path: Path) -> None:
    """What the unpatched pglite-socket does (server.mjs --raw); the fixes exist for these."""
    with running_timescale_server(tmp_path, "--raw") as server:
        first = psycopg.connect(server.url)
        for i in range(6):
            first.execute("SELECT %s::int", (i,))  # the 6th prepares "_pg3_0"
        first.close()  # without COMMIT: the transaction psycopg opened stays open
        with psycopg.connect(server.url, autocommit=True) as c:
            # The next client inherits the whole session ...
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            for i in range(5):
                c.execute("SELECT %s::int", (i,))
            with pytest.raises(errors.DuplicatePreparedStatement):
                c.execute("SELECT %s::int", (5,))  # ... so "_pg3_0" exists already
        with (
            psycopg.connect(server.url, autocommit=True) as c,
            pytest.raises(psycopg.OperationalError, match="server closed the connection"),
        ):
            c.execute("SELECT length(%s::text)", ("x" * 70_000,))  # split over 2 TCP reads
        assert server.wait_exit(10) == EXIT_ENGINE_CRASHED
        assert "RuntimeError: unreachable" in server.log_text()


def test_waiting_client_dropped_after_queue_timeout(tmp_path: Path) -> None:
    with running_timescale_server(tmp_path, "--queue-timeout-ms", "1000") as server:
        with psycopg.connect(server.url, autocommit=True) as first:
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="server closed the connection"):
                psycopg.connect(server.url, connect_timeout=30)
            assert 0.8 < time.monotonic() - started < 10
            assert _one(first, "SELECT 1") == (1,)
        assert server.returncode() is None
