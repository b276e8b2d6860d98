"""/health, /ready and /metrics, in-process and from a real server (zhizao api run)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from tests.api.conftest import SECRET, ApiClient
from tests.api.matrix import Case

CASES = [
    Case("GET", "/health", "public"),
    Case("GET", "/ready", "public"),
    Case("GET", "/metrics", "public"),
]


async def test_ready_says_whether_the_database_is_migrated(api: ApiClient, api_db_url: str) -> None:
    client = api.anonymous()
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    # A database one migration behind is not ready, and says what to do.
    with psycopg.connect(api_db_url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM schema_migration WHERE version = (SELECT max(version)"
            " FROM schema_migration)"
        )
    behind = await client.get("/ready")
    assert behind.status_code == 503
    assert "zhizao db upgrade" in behind.json()["database"]
    assert (await client.get("/health")).status_code == 200


async def test_metrics_count_requests_by_route_template(api: ApiClient) -> None:
    admin = api.as_("admin")
    for name in ("eng_nb1", "viewer_nb1", "no-such-user"):
        await admin.get(f"/api/v1/users/{name}")
    text = (await api.anonymous().get("/metrics")).text
    line = 'zhizao_api_requests_total{method="GET",route="/api/v1/users/{username}",status="200"}'
    assert f"{line} 2.0" in text
    assert 'route="/api/v1/users/{username}",status="404"} 1.0' in text
    assert "zhizao_api_request_seconds_bucket" in text
    assert "no-such-user" not in text  # raw paths never become label values


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_zhizao_api_run_serves_with_two_workers(api_db_url: str, tmp_path: Path) -> None:
    port = _free_port()
    out = (tmp_path / "api.log").open("wb")
    env = {**os.environ, "ZHIZAO_API_JWT_SECRET": SECRET, "ZHIZAO_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zhizao.cli",
            "api",
            "run",
            "--port",
            str(port),
            "--workers",
            "2",
            "--db-url",
            api_db_url,
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "api.log").read_text()
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.3)
        assert ready.status_code == 200, ready.text
        login = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/token",
            data={"username": "admin", "password": "correct-horse-battery"},
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        me = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert me.json()["username"] == "admin"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        out.close()


def test_the_api_refuses_to_start_without_a_secret(api_db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_API_JWT_SECRET"}
    out = subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "api", "run", "--db-url", api_db_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "ZHIZAO_API_JWT_SECRET is not set" in out.stderr
    env["ZHIZAO_API_JWT_SECRET"] = "zhizao-demo-not-a-secret-but-long-enough"  # noqa: S105
    out = subprocess.run(
        [sys.executable, "-m", "zhizao.cli", "api", "run", "--db-url", api_db_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "demo's secret" in out.stderr
