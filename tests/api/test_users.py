"""Users, grants and the audit log through the API (admins), and the kernel's
visibility function those grants feed."""

from __future__ import annotations

import psycopg
import pytest

from tests.api.conftest import ApiClient
from tests.api.matrix import Case
from tests.api.world import NB1, NB2, NB_MOLD, WZ
from zhizao.access import Access, Grant, Role, parse_grant, visibility
from zhizao.errors import InvalidValue
from zhizao.storage.connection import connect

_NEW_PASSWORD = "long-password-123"  # noqa: S105 - a test account's password

CASES = [
    Case("GET", "/api/v1/users", "admin"),
    Case(
        "POST",
        "/api/v1/users",
        "admin",
        ok=201,
        body=lambda p, e: {"username": f"new_{p}", "password": _NEW_PASSWORD},
    ),
    Case("GET", "/api/v1/users/{username}", "admin", url=lambda e: "/api/v1/users/eng_nb1"),
    Case(
        "PATCH",
        "/api/v1/users/{username}",
        "admin",
        url=lambda e: "/api/v1/users/eng_nb1",
        body=lambda p, e: {"full_name": "李工"},
    ),
    Case(
        "POST",
        "/api/v1/users/{username}/grants",
        "admin",
        ok=201,
        url=lambda e: "/api/v1/users/nobody/grants",
        body=lambda p, e: {"role": "enterprise_viewer", "scope": NB1},
    ),
    Case(
        "DELETE",
        "/api/v1/users/{username}/grants",
        "admin",
        url=lambda e: f"/api/v1/users/viewer_nb1/grants?role=enterprise_viewer&scope={NB1}",
    ),
    Case("GET", "/api/v1/tokens", "self"),
    Case("POST", "/api/v1/tokens", "self", ok=201, body=lambda p, e: {"name": "bot"}),
    Case(
        "DELETE",
        "/api/v1/tokens/{token_id}",
        "self",
        ok=404,
        url=lambda e: "/api/v1/tokens/999",
        note="nobody's token: the same 404 for everyone; own tokens are tested in test_auth",
    ),
    Case(
        "POST",
        "/api/v1/auth/password",
        "self",
        ok=422,
        body=lambda p, e: {"old_password": "not-it", "new_password": "whatever-long-1"},
        note="a wrong old password: 422 for everyone; the change is tested in test_auth",
    ),
    Case("GET", "/api/v1/audit", "admin"),
]


async def test_user_changes_are_audited_with_before_and_after(
    api: ApiClient, api_db_url: str
) -> None:
    admin = api.as_("admin")
    made = await admin.post(
        "/api/v1/users",
        json={
            "username": "li.gong",
            "password": _NEW_PASSWORD,
            "full_name": "李工",
            "grants": [{"role": "cluster_operator", "scope": NB_MOLD}],
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["grants"][0]["role_label"] == "产业集群运营"
    again = await admin.post(
        "/api/v1/users", json={"username": "li.gong", "password": _NEW_PASSWORD}
    )
    assert again.status_code == 409
    await admin.post(
        "/api/v1/users/li.gong/grants", json={"role": "regional_analyst", "scope": "330200"}
    )
    log = (await admin.get("/api/v1/audit", params={"actor": "admin"})).json()
    assert log["total"] == 2
    grant, create = log["items"]
    assert create["action"] == "create"
    assert create["object_key"] == "li.gong"
    assert create["after"]["grants"] == [f"cluster_operator:{NB_MOLD}"]
    assert grant["before"]["grants"] == [f"cluster_operator:{NB_MOLD}"]
    assert sorted(grant["after"]["grants"]) == [
        f"cluster_operator:{NB_MOLD}",
        "regional_analyst:330200",
    ]
    assert grant["client_addr"] == "10.1.2.3"
    assert grant["at"].endswith("+08:00")
    assert "password" not in str(log)
    # The application cannot rewrite history, even as the table's owner.
    with psycopg.connect(api_db_url, autocommit=True) as conn:
        for statement in (
            "UPDATE audit_log SET actor = 'someone else'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)


async def test_the_last_admin_cannot_lock_everyone_out(api: ApiClient) -> None:
    admin = api.as_("admin")
    refused = await admin.patch("/api/v1/users/admin", json={"disabled": True})
    assert refused.status_code == 409
    revoke = await admin.request("DELETE", "/api/v1/users/admin/grants", params={"role": "admin"})
    assert revoke.status_code == 409


async def test_a_grant_with_the_wrong_kind_of_scope_names_the_field(api: ApiClient) -> None:
    answer = await api.as_("admin").post(
        "/api/v1/users/nobody/grants", json={"role": "regional_analyst", "scope": "NB-MOLD"}
    )
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["errors"][0]["field"] == "body.scope"
    assert problem["errors"][0]["value"] == "NB-MOLD"
    assert answer.headers["content-type"] == "application/problem+json"


def test_grants_parse_and_refuse_scopes_of_the_wrong_kind() -> None:
    assert parse_grant("admin") == Grant(Role.ADMIN)
    assert parse_grant(f"enterprise_viewer:{NB1}") == Grant(Role.ENTERPRISE_VIEWER, NB1)
    for text in (
        "admin:330000",
        "enterprise_engineer",
        "regional_analyst:NB-MOLD",
        "enterprise_viewer:330200",
        "root",
    ):
        with pytest.raises(InvalidValue):
            parse_grant(text)


async def _visible(db_url: str, *grants: Grant, access: Access = Access.SUMMARY) -> set[str]:
    fragment, params = visibility(grants).enterprise_filter("e", access)
    conn = await connect(db_url)
    async with conn:
        from psycopg import sql

        cur = await conn.execute(
            sql.SQL("SELECT credit_code FROM enterprise e WHERE {}").format(fragment), params
        )
        return {str(r[0]) for r in await cur.fetchall()}


async def test_the_one_filter_follows_every_kind_of_grant(api_db_url: str) -> None:
    assert await _visible(api_db_url, Grant(Role.ADMIN)) == {NB1, NB2, WZ}
    assert await _visible(api_db_url, Grant(Role.CLUSTER_OPERATOR, NB_MOLD)) == {NB1}
    assert await _visible(api_db_url, Grant(Role.REGIONAL_ANALYST, "330200")) == {NB1, NB2}
    assert await _visible(api_db_url, Grant(Role.REGIONAL_ANALYST, "330302")) == {WZ}
    assert await _visible(api_db_url, Grant(Role.REGIONAL_ANALYST, "330000")) == {NB1, NB2, WZ}
    assert await _visible(api_db_url) == set()
    both = (Grant(Role.ENTERPRISE_VIEWER, WZ), Grant(Role.CLUSTER_OPERATOR, NB_MOLD))
    assert await _visible(api_db_url, *both) == {NB1, WZ}
    # Raw telemetry only through enterprise roles; writes only through the engineer's.
    assert await _visible(api_db_url, *both, access=Access.RAW) == {WZ}
    assert await _visible(api_db_url, *both, access=Access.WRITE) == set()
    assert await _visible(
        api_db_url, Grant(Role.ENTERPRISE_ENGINEER, NB2), access=Access.WRITE
    ) == {NB2}
    assert (
        await _visible(api_db_url, Grant(Role.REGIONAL_ANALYST, "330000"), access=Access.RAW)
        == set()
    )
