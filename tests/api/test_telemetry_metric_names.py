"""A metric whose name holds '/' (``spindle/temp``, as OPC UA browse paths and MQTT
topics give them) is addressable: its series route takes the name percent-encoded
(``spindle%2Ftemp``) or as it is, through the app in-process and through a real
uvicorn server, whose path handling is the one production has.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn

from tests.api.conftest import ApiClient
from tests.api.world import NB1, WZ
from zhizao.storage.connection import connect
from zhizao.storage.facts import FactBatch, MetricRow, metric_ids, write_facts

SH = ZoneInfo("Asia/Shanghai")
SLASHED = "spindle/temp"
RANGE = "start=2026-03-02T08:00:00%2B08:00&end=2026-03-02T09:00:00%2B08:00&bucket=PT1H"


def _ms(hh: int, mm: int) -> int:
    return int(datetime(2026, 3, 2, hh, mm, tzinfo=SH).timestamp() * 1000)


@pytest.fixture
async def points(api_db_url: str) -> None:
    """M01 of NB1: two points of ``spindle/temp``, one of ``spindle`` and one of ``temp``,
    so that an answer mixing the names would show."""
    conn = await connect(api_db_url)
    async with conn:
        ids = await metric_ids(conn, [SLASHED, "spindle", "temp"])
        cur = await conn.execute(
            "SELECT d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
            " WHERE e.credit_code = %s AND d.code = 'M01'",
            (NB1,),
        )
        row = await cur.fetchone()
        assert row is not None
        m01 = int(row[0])
        await write_facts(
            conn,
            FactBatch(
                metrics=[
                    MetricRow(m01, ids[SLASHED], _ms(8, 10), 40.0),
                    MetricRow(m01, ids[SLASHED], _ms(8, 20), 50.0),
                    MetricRow(m01, ids["spindle"], _ms(8, 10), 900.0),
                    MetricRow(m01, ids["temp"], _ms(8, 10), -900.0),
                ]
            ),
        )
        await conn.commit()


def _series(metric_segment: str) -> str:
    return f"/api/v1/enterprises/{NB1}/devices/M01/metrics/{metric_segment}/series?{RANGE}"


def _check(answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["metric"] == SLASHED
    assert [(b["min"], b["max"], b["count"]) for b in body["buckets"]] == [(40.0, 50.0, 2)]


async def test_a_metric_with_a_slash_is_read_percent_encoded_or_as_is(
    api: ApiClient, points: None
) -> None:
    client = api.as_("eng_nb1")
    encoded = quote(SLASHED, safe="")
    assert encoded == "spindle%2Ftemp"
    _check(await client.get(_series(encoded)))
    _check(await client.get(_series(SLASHED)))
    # The names on either side of the '/' are metrics of their own, still reachable.
    spindle = (await client.get(_series("spindle"))).json()
    assert [b["max"] for b in spindle["buckets"]] == [900.0]
    # Request metrics name the route's template, not the converter nor the name.
    text = (await api.anonymous().get("/metrics")).text
    template = "/api/v1/enterprises/{credit_code}/devices/{code}/metrics/{metric}/series"
    assert f'route="{template}",status="200"}} 3.0' in text
    assert "spindle" not in text


async def test_the_names_around_a_slash_are_checked_as_before(api: ApiClient) -> None:
    client = api.as_("eng_nb1")
    empty = await client.get(_series(""))
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["field"] == "path.metric"
    too_long = await client.get(_series(quote("a/" * 70, safe="")))
    assert too_long.status_code == 422
    # Outside the scope, the same 404 whatever the metric's name.
    outside = f"/api/v1/enterprises/{WZ}/devices/S01/metrics/spindle%2Ftemp/series?{RANGE}"
    assert (await client.get(outside)).status_code == 404


@pytest.fixture
async def server(api: ApiClient) -> AsyncIterator[str]:
    """The test's app behind a real uvicorn server on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        api.app, host="127.0.0.1", port=port, lifespan="off", ws="none", http="h11",
        log_level="warning",
    )  # fmt: skip
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    for _ in range(500):
        if running.started:
            break
        await asyncio.sleep(0.01)
    assert running.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        await task


async def test_a_real_server_routes_the_encoded_slash_to_the_metric(
    api: ApiClient, points: None, server: str
) -> None:
    headers = dict(api.as_("eng_nb1").headers)
    async with httpx.AsyncClient(base_url=server, headers=headers) as client:
        url = _series("spindle%2Ftemp")
        answer = await client.get(url)
        # What went over the wire is the encoded form, not a '/' httpx put back.
        assert answer.request.url.raw_path.startswith(
            f"/api/v1/enterprises/{NB1}/devices/M01/metrics/spindle%2Ftemp/series".encode()
        )
        _check(answer)
        _check(await client.get(_series(SLASHED)))
