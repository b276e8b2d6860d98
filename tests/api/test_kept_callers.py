"""Callers kept between requests (platform_api/principals.py) and kept answers served
before routing (platform_api/cache.py, KeptAnswers), on a real database that announces
every change to users and grants (migration 0015).

What must hold: a kept answer is served without a database connection only to a
caller whose session is valid; a revoked grant, a disabled account or an ended session
takes effect as soon as the database's notification is heard, whoever made the change;
while the process does not listen, every request reads the database; machine tokens
are never kept (their use is recorded on every request).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from platform_api import create_app
from platform_api.principals import PrincipalCache
from platform_api.security import new_machine_token
from tests.api.conftest import ApiClient, make_settings
from tests.api.test_kpi import DAY, day_conn
from tests.api.world import NB1, NB2, PERSONAS
from tests.fix_db import RUN_ID, SERVER_URL, create_database, drop_database, with_database
from zhizao.access import Role
from zhizao.storage.connection import Conn
from zhizao.storage.users import create_token, remove_grant

_NET = f"/api/v1/kpi/networking?date={DAY}&group_by=enterprise"

__all__ = ["day_conn"]  # the day's facts, shared with test_kpi


@pytest.fixture
async def kept(
    api_db_url: str, api_world: tuple[str, dict[str, int]]
) -> AsyncIterator[tuple[ApiClient, PrincipalCache]]:
    settings = make_settings(api_db_url, result_cache_s=60, principal_cache_s=60)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        principals: PrincipalCache = app.state.principals
        await _until(lambda: principals.trusted, "the API never listened for access changes")
        client = ApiClient(app, settings, api_world[1])
        try:
            yield client, principals
        finally:
            await client.close()


async def _until(condition: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + 10.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        await asyncio.sleep(0.01)


def _groups(body: dict[str, Any]) -> set[str]:
    return {item["group"] for item in body["items"]}


async def _in_other_session(url: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    """A change made elsewhere (the CLI, another API process, hand-written SQL)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(statement, params)


async def test_a_kept_answer_needs_no_database_connection(
    kept: tuple[ApiClient, PrincipalCache], day_conn: Conn
) -> None:
    api, principals = kept
    analyst = api.as_("analyst_ningbo")
    first = await analyst.get(_NET)
    assert first.status_code == 200, first.text
    assert _groups(first.json()) == {NB1, NB2}
    assert principals.kept(api.ids["analyst_ningbo"]) is not None
    # Without a pool the full path answers 503; the kept answer is served before it.
    await api.app.state.pool.close()
    again = await analyst.get(_NET)
    assert again.status_code == 200, again.text
    assert again.content == first.content
    assert again.headers["cache-control"].startswith("private, max-age=")
    # ... and is counted under its route's template, as any answer is.
    metrics = api.app.state.metrics.registry
    served = metrics.get_sample_value(
        "zhizao_api_requests_total",
        {"method": "GET", "route": "/api/v1/kpi/networking", "status": "200"},
    )
    assert served == 2
    # Another caller, with other grants, is not served the analyst's answer.
    other = await api.as_("eng_nb1").get(_NET)
    assert other.status_code == 503


async def test_a_revoked_grant_takes_effect_when_the_database_announces_it(
    kept: tuple[ApiClient, PrincipalCache], day_conn: Conn, api_db_url: str
) -> None:
    api, principals = kept
    analyst = api.as_("analyst_ningbo")
    assert _groups((await analyst.get(_NET)).json()) == {NB1, NB2}
    user_id = api.ids["analyst_ningbo"]
    # The grant is taken away outside this process, and a narrower one given.
    async with await psycopg.AsyncConnection.connect(api_db_url) as conn:
        [grant] = PERSONAS["analyst_ningbo"].grants
        assert await remove_grant(conn, user_id, grant)
        await conn.execute(
            "INSERT INTO user_grant (user_id, role, scope) VALUES (%s, %s, %s)",
            (user_id, Role.ENTERPRISE_VIEWER.value, NB2),
        )
    await _until(lambda: principals.kept(user_id) is None, "the revocation was never heard")
    narrowed = await analyst.get(_NET)
    assert narrowed.status_code == 200, narrowed.text
    assert _groups(narrowed.json()) == {NB2}


async def test_a_disabled_account_or_an_ended_session_is_refused_despite_a_kept_answer(
    kept: tuple[ApiClient, PrincipalCache], day_conn: Conn, api_db_url: str
) -> None:
    api, principals = kept
    engineer, viewer = api.as_("eng_nb1"), api.as_("viewer_nb1")
    for client in (engineer, viewer):
        assert (await client.get(_NET)).status_code == 200
        assert (await client.get(_NET)).status_code == 200  # the kept answer
    await _in_other_session(
        api_db_url, "UPDATE app_user SET disabled = true WHERE id = %s", (api.ids["eng_nb1"],)
    )
    await _in_other_session(
        api_db_url,
        "UPDATE app_user SET sessions_valid_from = now() + interval '1 minute' WHERE id = %s",
        (api.ids["viewer_nb1"],),
    )
    await _until(lambda: principals.kept(api.ids["eng_nb1"]) is None, "never heard")
    disabled = await engineer.get(_NET)
    assert disabled.status_code == 401
    assert "disabled" in disabled.json()["detail"]
    ended = await viewer.get(_NET)
    assert ended.status_code == 401
    assert "session has ended" in ended.json()["detail"]


async def test_a_tampered_token_is_refused_though_its_grants_have_a_kept_answer(
    kept: tuple[ApiClient, PrincipalCache], day_conn: Conn
) -> None:
    api, _ = kept
    analyst = api.as_("analyst_ningbo")
    assert (await analyst.get(_NET)).status_code == 200
    token = analyst.headers["authorization"].removeprefix("Bearer ")
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    refused = await api.anonymous().get(_NET, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401


async def test_while_the_process_does_not_listen_every_request_reads_the_database(
    kept: tuple[ApiClient, PrincipalCache], day_conn: Conn, api_db_url: str
) -> None:
    api, principals = kept
    engineer = api.as_("eng_nb1")
    assert (await engineer.get(_NET)).status_code == 200
    assert principals.kept(api.ids["eng_nb1"]) is not None
    # The listening session ends (a failover, an administrator's pg_terminate_backend).
    await _in_other_session(
        api_db_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'zhizao-api-listen'",
    )
    await _until(lambda: not principals.trusted, "the lost listener went unnoticed")
    assert principals.kept(api.ids["eng_nb1"]) is None
    # A change made while nobody listens is announced to nobody ...
    await _in_other_session(
        api_db_url, "UPDATE app_user SET disabled = true WHERE id = %s", (api.ids["eng_nb1"],)
    )
    assert (await engineer.get(_NET)).status_code == 401  # read from the database
    await _until(lambda: principals.trusted, "the API never listened again")
    # ... and once listening again, nothing kept from before is believed.
    assert (await engineer.get(_NET)).status_code == 401


async def test_machine_tokens_are_authenticated_and_recorded_on_every_request(
    kept: tuple[ApiClient, PrincipalCache], day_conn: Conn, api_db_url: str
) -> None:
    api, _ = kept
    token, prefix, digest = new_machine_token()
    async with await psycopg.AsyncConnection.connect(api_db_url) as conn:
        await create_token(
            conn, api.ids["analyst_ningbo"], name="wall screen", prefix=prefix,
            secret_sha256=digest, grants=PERSONAS["analyst_ningbo"].grants,
            expires_at=datetime.now(UTC) + timedelta(days=30),
        )  # fmt: skip
    screen = api.anonymous()
    screen.headers["Authorization"] = f"Bearer {token}"
    uses = []
    for _ in range(2):
        answer = await screen.get(_NET)  # the second one is a kept answer
        assert answer.status_code == 200, answer.text
        async with await psycopg.AsyncConnection.connect(api_db_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT last_used_at FROM api_token WHERE prefix = %s",
                                     (prefix,))  # fmt: skip
            uses.append((await cur.fetchone() or [None])[0])
            # Use is written at most once a minute: as if the minute had passed.
            await conn.execute("UPDATE api_token SET last_used_at = last_used_at"
                               " - interval '2 minutes' WHERE prefix = %s", (prefix,))  # fmt: skip
    assert uses[0] is not None
    assert uses[1] > uses[0] - timedelta(minutes=2)
    await _in_other_session(
        api_db_url, "UPDATE api_token SET revoked_at = now() WHERE prefix = %s", (prefix,)
    )
    assert (await screen.get(_NET)).status_code == 401  # no notification needed


def test_a_cache_of_zero_seconds_keeps_nobody() -> None:
    principals = PrincipalCache(0)
    principals.trusted = True
    assert not principals.enabled
    assert principals.kept(1) is None


async def test_a_database_down_at_start_is_listened_to_once_it_is_up(template_db: str) -> None:
    """The API may start before its database: the listener keeps trying, and users are
    kept only once it listens."""
    name = f"zhizao_t_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    principals = PrincipalCache(60)
    task = asyncio.create_task(
        principals.listen(with_database(SERVER_URL, name), retry_initial_s=0.05, retry_max_s=0.2)
    )
    try:
        await asyncio.sleep(0.5)  # several failed attempts
        assert not task.done()
        assert not principals.trusted
        create_database(name, template=template_db)
        await _until(lambda: principals.trusted, "never listened once the database was up")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        drop_database(name)
