"""Every route × every persona × an object inside and one outside the scope.

The cases come from the ``CASES`` lists of the area test modules (see matrix.py).
Read-only routes are tried by every persona on one database; a route that changes
something gets a fresh database per persona, so one persona's change cannot decide
another's answer.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import httpx
import pytest

import tests.api
from platform_api import create_app
from tests.api.conftest import ApiClient, make_settings
from tests.api.matrix import Case, expected
from tests.api.world import NB1, NB2, PERSONAS, SEES, WZ

_ENTERPRISES = {NB1, NB2, WZ}


def _cases() -> list[Case]:
    found: list[Case] = []
    for info in pkgutil.iter_modules(tests.api.__path__):
        if info.name.startswith("test_") and info.name != "test_matrix":
            module = importlib.import_module(f"tests.api.{info.name}")
            found.extend(getattr(module, "CASES", []))
    return found


CASES = _cases()
_READS = [c for c in CASES if c.method == "GET"]
_WRITES = [c for c in CASES if c.method != "GET"]


def test_every_route_of_the_app_has_a_case() -> None:
    app = create_app(make_settings("postgresql://unused"))
    routes = {
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    }
    declared = [c.key for c in CASES]
    assert len(declared) == len(set(declared)), "a route has two cases"
    assert routes - set(declared) == set(), "routes without a case in the matrix"
    assert set(declared) - routes == set(), "cases for routes the app does not have"


async def _call(client: httpx.AsyncClient, case: Case, persona: str, ent: str) -> httpx.Response:
    kwargs: dict[str, Any] = {}
    if case.body is not None:
        kwargs["json"] = case.body(persona, ent)
    if case.form is not None:
        kwargs["data"] = case.form(persona, ent)
    if case.files is not None:
        kwargs["files"] = case.files(persona, ent)
    return await client.request(case.method, case.target(ent), **kwargs)


def _leaks(response: httpx.Response, persona: str, ent: str) -> set[str]:
    """Credit codes of enterprises outside the persona's scope named in the answer,
    other than the one the persona asked about."""
    outside = _ENTERPRISES - SEES[persona] - {ent}
    return {code for code in outside if code in response.text}


async def _check(api: ApiClient, case: Case, persona: str) -> None:
    client = api.as_(persona)
    for ent in case.objects:
        response = await _call(client, case, persona, ent)
        want = expected(case, persona, ent)
        assert response.status_code in {want, *case.extra_ok}, (
            f"{case.method} {case.target(ent)} as {persona}: {response.status_code}"
            f" (expected {want}): {response.text[:300]}"
        )
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
        if case.kind != "admin" or persona != "admin":
            assert not _leaks(response, persona, ent), (
                f"{case.method} {case.target(ent)} as {persona} names enterprises outside"
                f" its scope: {_leaks(response, persona, ent)}"
            )
        if case.kind == "list" and response.status_code == 200 and case.item_enterprise:
            body = response.json()
            items = body["items"] if isinstance(body, dict) else body
            owners = {case.item_enterprise(item) for item in items} - {None}
            assert owners <= SEES[persona], (case.template, persona, owners)


@pytest.mark.parametrize("case", _READS, ids=lambda c: f"{c.method} {c.template}")
async def test_read_routes(api: ApiClient, api_db_url: str, case: Case) -> None:
    if case.prepare is not None:
        case.prepare(api_db_url)
    if case.kind != "public":
        for ent in case.objects:
            anonymous = await _call(api.anonymous(), case, "nobody", ent)
            assert anonymous.status_code == 401, (case.template, anonymous.text[:200])
    for persona in PERSONAS:
        await _check(api, case, persona)


@pytest.mark.parametrize(
    ("case", "persona"),
    [(c, p) for c in _WRITES for p in PERSONAS],
    ids=lambda v: v if isinstance(v, str) else f"{v.method} {v.template}",
)
async def test_write_routes(api: ApiClient, api_db_url: str, case: Case, persona: str) -> None:
    if case.prepare is not None:
        case.prepare(api_db_url)
    if case.kind != "public" and persona == "nobody":
        anonymous = await _call(api.anonymous(), case, "nobody", case.enterprises[0])
        assert anonymous.status_code == 401, (case.template, anonymous.text[:200])
    await _check(api, case, persona)
