"""Login, sessions and machine tokens: expiry, revocation, tampering, disabled
accounts, the rate limit across processes, and the audit rows they leave."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import psycopg

from platform_api import create_app
from platform_api.security import issue_access_token
from tests.api.conftest import SECRET, ApiClient, make_settings
from tests.api.matrix import Case
from tests.api.world import PASSWORD, WZ

CASES = [
    Case(
        "POST",
        "/api/v1/auth/token",
        "public",
        form=lambda persona, ent: {"username": persona, "password": PASSWORD},
    ),
    Case("GET", "/api/v1/auth/me", "self"),
]


def _audit(db_url: str, action: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT actor, client_addr, status, detail FROM audit_log WHERE action = %s"
            " ORDER BY id",
            (action,),
        ).fetchall()


async def test_login_gives_a_token_that_works_and_is_audited(
    api: ApiClient, api_db_url: str
) -> None:
    client = api.anonymous()
    answer = await client.post(
        "/api/v1/auth/token", data={"username": "eng_nb1", "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer"  # noqa: S105 - the OAuth2 token type
    assert body["expires_at"].endswith("+08:00")  # read in Asia/Shanghai
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["grants"][0]["role_label"] == "企业工程师"
    assert _audit(api_db_url, "login") == [("eng_nb1", "10.1.2.3", 200, None)]


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    api: ApiClient, api_db_url: str
) -> None:
    client = api.anonymous()
    wrong = await client.post("/api/v1/auth/token", data={"username": "eng_nb1", "password": "x"})
    unknown = await client.post("/api/v1/auth/token", data={"username": "ghost", "password": "x"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json()["detail"] == unknown.json()["detail"]
    rows = _audit(api_db_url, "login_failed")
    assert [(r[0], r[3]) for r in rows] == [
        ("eng_nb1", {"reason": "wrong password"}),
        ("ghost", {"reason": "unknown user"}),
    ]


async def test_failed_logins_are_limited_per_account_across_processes(
    api: ApiClient, api_db_url: str
) -> None:
    # A second application on the same database stands for a second API process.
    other_settings = make_settings(api_db_url)
    other = create_app(other_settings)
    import httpx

    async with other.router.lifespan_context(other):
        second = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other, client=("10.9.9.9", 1)),
            base_url="http://api.test",
        )
        first = api.anonymous()
        for i in range(5):
            client = first if i % 2 == 0 else second
            bad = await client.post(
                "/api/v1/auth/token", data={"username": "viewer_nb1", "password": f"guess{i}"}
            )
            assert bad.status_code == 401
        # The right password is refused now, from either process, without being checked.
        for client in (first, second):
            refused = await client.post(
                "/api/v1/auth/token", data={"username": "viewer_nb1", "password": PASSWORD}
            )
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 900
        # Another account from the same addresses is not locked out.
        ok = await first.post(
            "/api/v1/auth/token", data={"username": "admin", "password": PASSWORD}
        )
        assert ok.status_code == 200
        await second.aclose()
    assert len(_audit(api_db_url, "login_refused")) == 2


async def test_failed_logins_are_limited_per_address(api: ApiClient) -> None:
    client = api.anonymous()
    for i in range(20):
        await client.post("/api/v1/auth/token", data={"username": f"u{i}", "password": "x"})
    refused = await client.post(
        "/api/v1/auth/token", data={"username": "admin", "password": PASSWORD}
    )
    assert refused.status_code == 429


async def test_expired_and_tampered_tokens_are_refused(api: ApiClient) -> None:
    client = api.anonymous()
    old, _ = issue_access_token(
        SECRET, api.ids["admin"], 15, now=datetime.now(UTC) - timedelta(minutes=16)
    )
    expired = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {old}"})
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]
    assert expired.headers["www-authenticate"] == "Bearer"

    good, _ = issue_access_token(SECRET, api.ids["viewer_nb1"], 15)
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = str(api.ids["admin"])  # become admin without the key
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    tampered = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {header}.{forged}.{signature}"}
    )
    assert tampered.status_code == 401
    other_key, _ = issue_access_token(
        "another-secret-of-sufficient-length-000", api.ids["admin"], 5
    )
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {other_key}"})
    ).status_code == 401
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=")
    none_alg = f"{none_header}.{payload}."
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {none_alg}"})
    ).status_code == 401
    assert (await client.get("/api/v1/auth/me")).status_code == 401


async def test_disabling_an_account_ends_its_sessions_at_once(api: ApiClient) -> None:
    viewer = api.as_("viewer_nb1")
    assert (await viewer.get("/api/v1/auth/me")).status_code == 200
    admin = api.as_("admin")
    done = await admin.patch("/api/v1/users/viewer_nb1", json={"disabled": True})
    assert done.status_code == 200, done.text
    assert (await viewer.get("/api/v1/auth/me")).status_code == 401
    login = await api.anonymous().post(
        "/api/v1/auth/token", data={"username": "viewer_nb1", "password": PASSWORD}
    )
    assert login.status_code == 401


async def test_a_password_change_ends_older_sessions(api: ApiClient) -> None:
    client = api.anonymous()
    login = await client.post(
        "/api/v1/auth/token", data={"username": "eng_nb1", "password": PASSWORD}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    short = await client.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"old_password": PASSWORD, "new_password": "short"},
    )
    assert short.status_code == 422
    assert short.json()["errors"][0]["field"] == "body.new_password"
    assert short.json()["errors"][0]["value"] == "***"  # a password is never echoed
    changed = await client.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"old_password": PASSWORD, "new_password": "a-new-password-2"},
    )
    assert changed.status_code == 204
    # Tokens are issued with one-second resolution; the old one was issued before the change
    # or in the same second, and sessions_valid_from is compared at that resolution.
    import asyncio

    await asyncio.sleep(1.1)
    relog = await client.post(
        "/api/v1/auth/token", data={"username": "eng_nb1", "password": "a-new-password-2"}
    )
    assert relog.status_code == 200
    new_headers = {"Authorization": f"Bearer {relog.json()['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=new_headers)).status_code == 200


async def test_machine_tokens_are_shown_once_scoped_revocable_and_record_their_use(
    api: ApiClient, api_db_url: str
) -> None:
    admin = api.as_("admin")
    made = await admin.post("/api/v1/tokens", json={"name": "report bot", "days": 7})
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    assert secret.startswith("zt_")
    listed = await admin.get("/api/v1/tokens")
    assert secret not in listed.text  # shown once
    with psycopg.connect(api_db_url) as conn:
        stored = conn.execute("SELECT secret_sha256 FROM api_token").fetchone()
    assert stored is not None
    assert secret.encode() not in bytes(stored[0])

    bot = api.anonymous()
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await bot.get("/api/v1/users", headers=headers)).status_code == 200
    used = (await admin.get("/api/v1/tokens")).json()[0]
    assert used["last_used_from"] == "10.1.2.3"
    assert used["last_used_at"] is not None

    # An engineer's token limited to a grant it does not hold is refused ...
    eng = api.as_("eng_nb1")
    wrong = await eng.post(
        "/api/v1/tokens",
        json={"name": "x", "grants": [{"role": "enterprise_engineer", "scope": WZ}]},
    )
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["field"] == "body.grants.0"
    # ... and a token cannot make tokens.
    assert (
        await bot.post("/api/v1/tokens", headers=headers, json={"name": "child"})
    ).status_code == 403

    revoked = await admin.delete(f"/api/v1/tokens/{made.json()['id']}")
    assert revoked.status_code == 204
    assert (await bot.get("/api/v1/users", headers=headers)).status_code == 401
    actions = [r[0] for r in _audit_actions(api_db_url)]
    assert actions[-2:] == ["token_create", "token_revoke"]


def _audit_actions(db_url: str) -> list[tuple[str]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT action FROM audit_log ORDER BY id").fetchall()


async def test_a_token_narrows_when_its_user_loses_a_grant(api: ApiClient) -> None:
    eng = api.as_("eng_nb1")
    made = await eng.post("/api/v1/tokens", json={"name": "edge installer", "days": 1})
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    bot = api.anonymous()
    me = await bot.get("/api/v1/auth/me", headers=headers)
    assert [g["role"] for g in me.json()["grants"]] == ["enterprise_engineer"]
    admin = api.as_("admin")
    gone = await admin.request(
        "DELETE",
        "/api/v1/users/eng_nb1/grants",
        params={"role": "enterprise_engineer", "scope": me.json()["grants"][0]["scope"]},
    )
    assert gone.status_code == 200, gone.text
    me = await bot.get("/api/v1/auth/me", headers=headers)
    assert me.json()["grants"] == []


async def test_an_expired_machine_token_is_refused(api: ApiClient, api_db_url: str) -> None:
    made = await api.as_("admin").post("/api/v1/tokens", json={"name": "old", "days": 1})
    with psycopg.connect(api_db_url) as conn:
        conn.execute("UPDATE api_token SET expires_at = now() - interval '1 second'")
    answer = await api.anonymous().get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {made.json()['token']}"}
    )
    assert answer.status_code == 401
