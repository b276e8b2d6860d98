"""An enterprise in UTC reads its times with ``+00:00``, like every other offset.

pydantic writes an offset of zero as ``Z``; the API writes every time of an answer
with its numeric offset, so a client that reads ``+08:00`` for one enterprise reads
``+00:00`` (never ``Z``) for another in UTC or in London in winter.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.api.conftest import ApiClient
from tests.api.world import NB1

_RANGE = "start=2026-01-05T00:00:00Z&end=2026-01-05T01:00:00Z"
_URLS = [
    f"/api/v1/enterprises/{NB1}",
    f"/api/v1/enterprises/{NB1}/devices/M01",
    f"/api/v1/enterprises/{NB1}/edges/edge-nb1",
    f"/api/v1/enterprises/{NB1}/devices/M01/metrics/temperature/series?{_RANGE}&bucket=PT1H",
    f"/api/v1/enterprises/{NB1}/devices/M01/states?{_RANGE}",
    f"/api/v1/enterprises/{NB1}/devices/M01/connectivity?{_RANGE}",
]
_TIME = re.compile(r'"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(Z|[+-]\d{2}:\d{2})"')


@pytest.mark.parametrize("zone", ["UTC", "Europe/London"])
async def test_times_at_offset_zero_are_written_plus_00_00(
    api: ApiClient, api_db_url: str, zone: str
) -> None:
    with psycopg.connect(api_db_url) as conn:
        conn.execute("UPDATE enterprise SET time_zone = %s WHERE credit_code = %s", (zone, NB1))
    client = api.as_("eng_nb1")
    for url in _URLS:
        answer = await client.get(url)
        assert answer.status_code == 200, (url, answer.text)
        offsets = {m.group(2) for m in _TIME.finditer(answer.text)}
        assert offsets == {"+00:00"}, (url, offsets)
    enterprise = (await client.get(_URLS[0])).json()
    assert enterprise["time_zone"] == zone
    assert enterprise["updated_at"].endswith("+00:00")
