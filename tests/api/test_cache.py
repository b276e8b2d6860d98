"""The result cache of KPI and series answers (platform_api/cache.py), on a real
database: kept per grants, for its time only, emptied by writes, one computation per
key, errors never kept, answers byte for byte those of the uncached route."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.responses import Response
from pydantic import BaseModel

from platform_api import create_app
from platform_api.cache import ResultCache
from tests.api.conftest import ApiClient, make_settings
from tests.api.test_kpi import DAY, day_conn
from tests.api.world import NB1, NB2, WZ
from zhizao.storage.connection import Conn

_NET = f"/api/v1/kpi/networking?date={DAY}&group_by=enterprise"
_OEE = f"/api/v1/kpi/oee?level=line&code=L1&enterprise={NB1}&date={DAY}"
TTL = 5.0

__all__ = ["day_conn"]  # the day's facts, shared with test_kpi


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def cached(
    api_db_url: str, api_world: tuple[str, dict[str, int]]
) -> AsyncIterator[tuple[ApiClient, ResultCache, Clock]]:
    settings = make_settings(api_db_url, result_cache_s=TTL)
    app = create_app(settings)
    cache: ResultCache = app.state.result_cache
    clock = Clock()
    cache.clock = clock
    async with app.router.lifespan_context(app):
        client = ApiClient(app, settings, api_world[1])
        try:
            yield client, cache, clock
        finally:
            await client.close()


#: A local source's as_of is the moment its figures were read (zhizao/provenance.py).
_LOCAL_AS_OF = re.compile(rb'("instance":"local","label":"[^"]*","as_of":)"[^"]+"')


def _read_at_stripped(value: Any) -> Any:
    """``value`` with every local source's as_of (its read time) left out."""
    if isinstance(value, list):
        return [_read_at_stripped(v) for v in value]
    if isinstance(value, dict):
        local = value.get("instance") == "local"
        return {k: _read_at_stripped(v) for k, v in value.items() if not (local and k == "as_of")}
    return value


def _rate(body: dict[str, Any], group: str) -> tuple[Any, ...]:
    [item] = [i for i in body["items"] if i["group"] == group and i["method"] == "ratio_of_sums"]
    return item["rate"], item["numerator"], item["denominator"]


async def _retire_nb2(conn: Conn) -> None:
    await conn.execute(
        "UPDATE device SET commissioned_on = '2026-04-01' WHERE code IN ('P01', 'P02')"
    )
    await conn.commit()


async def test_an_answer_is_reused_for_its_time_then_computed_again(
    cached: tuple[ApiClient, ResultCache, Clock], day_conn: Conn
) -> None:
    api, cache, clock = cached
    analyst = api.as_("analyst_ningbo")
    first = await analyst.get(_NET)
    assert first.status_code == 200, first.text
    assert (first.headers["age"], first.headers["cache-control"]) == ("0", "private, max-age=5")
    assert _rate(first.json(), NB2) == (0.5, 1, 2)
    await _retire_nb2(day_conn)  # as the rollup service or the CLI would, elsewhere
    clock.now += 3
    again = await analyst.get(_NET)
    assert again.content == first.content  # the kept answer, 3 s old
    assert (again.headers["age"], again.headers["cache-control"]) == ("3", "private, max-age=2")
    clock.now += 2.5
    fresh = await analyst.get(_NET)
    assert _rate(fresh.json(), NB2) == (None, 0, 0)
    assert fresh.headers["age"] == "0"
    assert (cache.hits, cache.misses) == (1, 2)


async def test_answers_are_shared_only_between_callers_with_the_same_grants(
    cached: tuple[ApiClient, ResultCache, Clock], day_conn: Conn
) -> None:
    api, cache, _ = cached
    everyone = (await api.as_("admin").get(_NET)).json()
    assert {i["group"] for i in everyone["items"]} == {NB1, NB2, WZ}
    ningbo = (await api.as_("analyst_ningbo").get(_NET)).json()
    assert {i["group"] for i in ningbo["items"]} == {NB1, NB2}
    engineer = (await api.as_("eng_nb1").get(_NET)).json()
    viewer = (await api.as_("viewer_nb1").get(_NET)).json()
    assert {i["group"] for i in engineer["items"]} == {NB1}
    assert engineer["restricted"]
    assert not everyone["restricted"]
    # Four grants, four computations; the engineer's and the viewer's grants differ
    # (role), so even their equal figures are computed apart.
    assert _read_at_stripped(viewer["items"]) == _read_at_stripped(engineer["items"])
    assert (cache.hits, cache.misses) == (0, 4)
    await api.as_("eng_nb1").get(_NET)
    assert (cache.hits, cache.misses) == (1, 4)


async def test_a_write_through_the_api_empties_the_cache(
    cached: tuple[ApiClient, ResultCache, Clock], day_conn: Conn
) -> None:
    api, cache, _ = cached
    engineer = api.as_("eng_nb1")
    before = (await engineer.get(_NET)).json()
    assert _rate(before, NB1) == (1.0, 2, 2)
    changed = await engineer.patch(
        f"/api/v1/enterprises/{NB1}/devices/M02", json={"commissioned_on": "2026-04-01"}
    )
    assert changed.status_code == 200, changed.text
    assert len(cache) == 0
    after = (await engineer.get(_NET)).json()
    assert _rate(after, NB1) == (1.0, 1, 1)
    # A refused write empties it too (harmless), and the refusal is not an answer.
    refused = await engineer.patch(
        f"/api/v1/enterprises/{NB2}/devices/P01", json={"commissioned_on": "2026-04-01"}
    )
    assert refused.status_code == 404


async def test_errors_are_never_kept(
    cached: tuple[ApiClient, ResultCache, Clock], day_conn: Conn
) -> None:
    api, cache, _ = cached
    url = f"/api/v1/kpi/oee?level=line&code=L9&enterprise={NB1}&date={DAY}"
    missing = await api.as_("eng_nb1").get(url)
    assert missing.status_code == 404, missing.text
    await day_conn.execute(
        "INSERT INTO line (enterprise_id, code, name)"
        " SELECT id, 'L9', '九号线' FROM enterprise WHERE credit_code = %s",
        (NB1,),
    )
    await day_conn.commit()
    found = await api.as_("eng_nb1").get(url)
    assert found.status_code == 200, found.text
    assert len(cache) == 1


async def test_concurrent_identical_requests_run_the_query_once(
    cached: tuple[ApiClient, ResultCache, Clock], day_conn: Conn
) -> None:
    api, cache, _ = cached
    analyst = api.as_("analyst_zj")
    answers = await asyncio.gather(*(analyst.get(_OEE) for _ in range(12)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert (cache.misses, cache.hits) == (1, 11)
    metrics = (await api.anonymous().get("/metrics")).text
    assert 'zhizao_api_result_cache_answers_total{outcome="hit"} 11.0' in metrics
    assert 'zhizao_api_result_cache_answers_total{outcome="miss"} 1.0' in metrics


@pytest.mark.parametrize(
    "url",
    [
        _OEE,
        _NET,
        f"/api/v1/kpi/oee/shifts?level=device&code=M01&enterprise={NB1}&date={DAY}",
        f"/api/v1/enterprises/{NB1}/devices/M01/states"
        f"?start={DAY}T00:00:00%2B08:00&end={DAY}T23:59:59%2B08:00",
    ],
)
async def test_a_kept_answer_is_the_uncached_route_s_byte_for_byte(
    url: str, api: ApiClient, cached: tuple[ApiClient, ResultCache, Clock], day_conn: Conn
) -> None:
    with_cache, _, _ = cached
    plain = await api.as_("admin").get(url)
    first = await with_cache.as_("admin").get(url)
    kept = await with_cache.as_("admin").get(url)
    assert plain.status_code == first.status_code == kept.status_code == 200, plain.text
    assert first.content == kept.content
    # The uncached answer was read a moment earlier: only its local as_of differs.
    assert _LOCAL_AS_OF.sub(b"", plain.content) == _LOCAL_AS_OF.sub(b"", kept.content)
    assert plain.headers["content-type"] == kept.headers["content-type"]
    assert plain.headers.get("cache-control") is None


# --- the cache alone (no database: its own bookkeeping) --------------------------------


class Answer(BaseModel):
    n: int
    text: str = ""


async def test_the_least_recently_used_answers_go_first_by_count_and_by_size() -> None:
    clock = Clock()
    cache = ResultCache(60, max_entries=3, max_bytes=4000, clock=clock)

    async def answer(n: int, size: int = 0) -> Answer:
        return Answer(n=n, text="x" * size)

    for n in range(3):
        await cache.answer(n, functools.partial(answer, n))
    await cache.answer(0, lambda: answer(99))  # a hit: 0 is now the most recent
    await cache.answer(3, lambda: answer(3))  # pushes out 1, the least recently used
    assert len(cache) == 3
    hits = cache.hits
    await cache.answer(1, lambda: answer(1))
    assert cache.hits == hits  # 1 was computed again
    await cache.answer("big", lambda: answer(7, 990))  # a quarter of the bytes at most
    await cache.answer("big2", lambda: answer(8, 990))
    assert len(cache) <= 3
    assert cache._bytes <= 4000
    huge = await cache.answer("huge", lambda: answer(9, 2000))
    assert b'"n":9' in huge.body
    assert "huge" not in cache._entries  # over a quarter: never kept


async def test_a_waiter_computes_itself_when_the_first_request_is_cancelled() -> None:
    cache = ResultCache(60)
    started = asyncio.Event()
    calls: list[str] = []

    async def slow() -> Answer:
        calls.append("slow")
        started.set()
        await asyncio.sleep(60)
        return Answer(n=1)

    async def quick() -> Answer:
        calls.append("quick")
        return Answer(n=2)

    first = asyncio.create_task(cache.answer("k", slow))
    await started.wait()
    second = asyncio.create_task(cache.answer("k", quick))
    await asyncio.sleep(0)
    first.cancel()
    answer = await second
    assert b'"n":2' in answer.body
    assert calls == ["slow", "quick"]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_computation_fails_its_waiters_and_is_not_kept() -> None:
    cache = ResultCache(60)
    gate = asyncio.Event()

    async def failing() -> Answer:
        await gate.wait()
        raise ValueError("the database said no")

    async def fine() -> Answer:
        return Answer(n=3)

    first = asyncio.create_task(cache.answer("k", failing))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.answer("k", fine))
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(ValueError, match="said no"):
        await first
    # The waiter computed its own answer rather than inherit the failure.
    assert b'"n":3' in (await second).body
    assert len(cache) == 1


async def test_an_answer_computed_across_a_write_is_not_kept() -> None:
    cache = ResultCache(60)
    gate = asyncio.Event()

    async def during_write() -> Answer:
        await gate.wait()
        return Answer(n=4)

    task = asyncio.create_task(cache.answer("k", during_write))
    await asyncio.sleep(0)
    cache.clear()  # a write committed while the answer was computed
    gate.set()
    await task
    assert len(cache) == 0


def test_a_cache_of_zero_seconds_is_off() -> None:
    assert not ResultCache(0).enabled


async def test_an_expired_answer_serves_while_one_request_computes_it_afresh() -> None:
    clock = Clock()
    cache = ResultCache(5, clock=clock)
    gate = asyncio.Event()

    async def answer(n: int, wait: bool = False) -> Answer:
        if wait:
            await gate.wait()
        return Answer(n=n)

    await cache.answer("k", functools.partial(answer, 1))
    clock.now += 6  # expired, within the grace of another 5 s
    refresher = asyncio.create_task(cache.answer("k", functools.partial(answer, 2, True)))
    await asyncio.sleep(0)
    # Meanwhile others get the expired answer at once, marked as such, never queueing.
    stale = await asyncio.wait_for(cache.answer("k", functools.partial(answer, 3)), 1)
    assert isinstance(stale, Response)
    assert b'"n":1' in stale.body
    assert (stale.headers["age"], stale.headers["cache-control"]) == ("6", "private, max-age=0")
    gate.set()
    fresh = await refresher
    assert isinstance(fresh, Response)
    assert b'"n":2' in fresh.body
    assert b'"n":2' in (await cache.answer("k", functools.partial(answer, 4))).body
    assert (cache.hits, cache.stale, cache.misses) == (1, 1, 2)
    # Past the grace, nobody is served the old answer: a request waits for the new one.
    clock.now += 11
    gate.clear()
    first = asyncio.create_task(cache.answer("k", functools.partial(answer, 5, True)))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.answer("k", functools.partial(answer, 6)))
    await asyncio.sleep(0)
    assert not second.done()
    gate.set()
    assert b'"n":5' in (await first).body
    assert b'"n":5' in (await second).body
