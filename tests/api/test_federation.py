"""Federation on loopback: a cluster instance (the test world's database with a day of
facts) pushes signed daily reports, with the real CLI, to a provincial instance (a real
API server on a database of its own).

What is checked: the province keeps exactly the cluster's own daily figures; a replay
changes nothing; a newer revision (a ledger change) replaces the old; a report of an
unregistered key, a tampered body and an enterprise outside the registration are
refused and audited; the cluster keeps its outbox while the province is down and
delivers when it is back.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import SECRET
from tests.api.matrix import Case
from tests.api.test_kpi import DAY, day_conn
from tests.api.world import NB1, NB2, WZ
from tests.fix_db import RUN_ID, create_database, drop_database
from zhizao.federation import INSTANCE_HEADER, SIGNATURE_HEADER, canonical, init_identity
from zhizao.storage import kpi
from zhizao.storage.connection import Conn

__all__ = ["day_conn"]

CASES = [
    # Authenticated by a registered instance's signature, never by a user's token.
    Case("POST", "/api/v1/federation/reports", "public", ok=401),
    Case("GET", "/api/v1/federation/peers", "admin"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Province:
    """The provincial instance: its database and a real API server, stoppable."""

    def __init__(self, db_url: str, log: Path) -> None:
        self.db_url = db_url
        self.log = log
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "ZHIZAO_API_JWT_SECRET": SECRET}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zhizao.cli", "api", "run", "--port", str(self.port),
                 "--db-url", self.db_url],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the provincial API did not start"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url) as conn:
            return list(conn.execute(query, params).fetchall())


@pytest.fixture
def province(template_db: str, tmp_path: Path) -> Iterator[Province]:
    name = f"zhizao_prov_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name, template=template_db)
    place = Province(url, tmp_path / "province.log")
    place.start()
    try:
        yield place
    finally:
        place.stop()
        drop_database(name)


def _zhizao(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zhizao.cli", *args], capture_output=True, text=True,
        check=False, timeout=180, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _init(tmp_path: Path, instance: str) -> tuple[Path, str]:
    key = tmp_path / f"{instance}.json"
    done = _zhizao("federation", "init", instance, "--key-file", str(key))
    assert done.returncode == 0, done.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    [public] = [line.split()[-1] for line in done.stdout.splitlines() if "public key" in line]
    return key, public


def _push(api_db_url: str, key: Path, province: Province) -> subprocess.CompletedProcess[str]:
    return _zhizao("federation", "push", "--url", province.base, "--until", str(DAY), "--days",
                   "2", "--key-file", str(key), "--db-url", api_db_url)  # fmt: skip


async def test_the_province_keeps_the_cluster_s_own_daily_figures(
    api_db_url: str, day_conn: Conn, province: Province, tmp_path: Path
) -> None:
    key, public = _init(tmp_path, "CL-NINGBO")
    done = _zhizao("federation", "register", "CL-NINGBO", "--public-key", public,
                   "--region", "330200", "--db-url", province.db_url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    pushed = _push(api_db_url, key, province)
    # WZ is not Ningbo's: its reports are refused, so they stay pending (exit 1).
    assert pushed.returncode == 1, pushed.stderr
    kept = province.rows("SELECT enterprise, day, revision, body FROM federation_report"
                         " ORDER BY enterprise, day")  # fmt: skip
    days = ("2026-03-01", "2026-03-02")
    assert {(r[0], str(r[1])) for r in kept} == {(e, d) for e in (NB1, NB2) for d in days}
    # Exactly the cluster's own figures of the day (its kernel's networking and NC).
    networking = await kpi.networking_parts(day_conn, DAY, DAY)
    nc = await kpi.nc_parts(day_conn, DAY)
    oee = await kpi.oee_for_days(day_conn, kpi.OeeScope(kpi.Level.ENTERPRISE, NB1), DAY, DAY)
    for enterprise, day, revision, body in kept:
        if str(day) != str(DAY):
            continue
        assert revision == 1
        assert body["devices"]["in_service"] == networking[enterprise].denominator
        assert body["devices"]["networked"] == networking[enterprise].numerator
        assert body["devices"]["nc"] == nc[enterprise].numerator
        if enterprise == NB1:
            assert body["oee"]["good"] == oee.result.components.good == 1200
            assert body["oee"]["running_s"] == oee.result.components.running_s
            assert set(body["lines"]) == {"L1"}
        assert "M01" not in json.dumps(body)  # no device leaves the cluster
    refused = province.rows("SELECT status, detail->>'reason' FROM audit_log"
                            " WHERE action = 'federation.refused'")  # fmt: skip
    assert refused
    assert {r[0] for r in refused} == {403}
    assert all("outside instance 'CL-NINGBO'" in r[1] for r in refused)
    stored = province.rows("SELECT count(*) FROM audit_log WHERE action = 'federation.stored'"
                           " AND actor = 'instance:CL-NINGBO'")  # fmt: skip
    assert stored[0][0] == 4
    # A replay of what was sent changes nothing.
    await day_conn.execute("UPDATE federation_outbox SET sent_at = NULL")
    await day_conn.commit()
    _push(api_db_url, key, province)
    assert province.rows("SELECT enterprise, day, revision FROM federation_report ORDER BY 1, 2") \
        == [(r[0], r[1], r[2]) for r in kept]  # fmt: skip
    assert province.rows("SELECT count(*) FROM audit_log WHERE action = 'federation.unchanged'"
                         )[0][0] == 4  # fmt: skip
    # A ledger change (M02 leaves service on the 2nd): a new revision replaces the old.
    await day_conn.execute("UPDATE device SET decommissioned_on = %s WHERE code = 'M02'", (DAY,))
    await day_conn.commit()
    again = _push(api_db_url, key, province)
    assert "新修订 1 new revisions" in again.stderr
    [(revision, body)] = province.rows("SELECT revision, body FROM federation_report WHERE"
                                       " enterprise = %s AND day = %s", NB1, DAY)  # fmt: skip
    assert revision == 2
    assert body["devices"]["in_service"] == networking[NB1].denominator - 1


def test_refused_reports_and_a_province_that_is_down(
    api_db_url: str, province: Province, tmp_path: Path
) -> None:
    key, public = _init(tmp_path, "CL-ZJ")
    _zhizao("federation", "register", "CL-ZJ", "--public-key", public, "--region", "330000",
            "--db-url", province.db_url)  # fmt: skip
    # An instance whose key the province never registered.
    stranger = init_identity(tmp_path / "stranger.json", "CL-ZJ")
    body = canonical({"format": 1, "instance": "CL-ZJ", "day": str(DAY), "revision": 1})
    reports = f"{province.base}/api/v1/federation/reports"
    answer = httpx.post(reports, content=body, headers={
        INSTANCE_HEADER: "CL-ZJ", SIGNATURE_HEADER: stranger.sign(body)})  # fmt: skip
    assert answer.status_code == 401
    assert "signature does not match" in answer.json()["detail"]
    unknown = httpx.post(reports, content=body, headers={
        INSTANCE_HEADER: "CL-NOBODY", SIGNATURE_HEADER: stranger.sign(body)})  # fmt: skip
    assert unknown.status_code == 401
    assert "not registered" in unknown.json()["detail"]
    # A body too large, and signed garbage of the registered instance.
    from zhizao.federation import load_identity

    identity = load_identity(key)
    huge = b"[" * (1 << 20)
    too_large = httpx.post(reports, content=huge, headers={
        INSTANCE_HEADER: "CL-ZJ", SIGNATURE_HEADER: identity.sign(huge)})  # fmt: skip
    assert too_large.status_code == 413
    garbage = b'{"format": 1, "instance": "CL-ZJ", "day": "2026-02-30"}'
    malformed = httpx.post(reports, content=garbage, headers={
        INSTANCE_HEADER: "CL-ZJ", SIGNATURE_HEADER: identity.sign(garbage)})  # fmt: skip
    assert malformed.status_code == 422
    assert malformed.json()["detail"].startswith("body.")
    # A report whose region code breaks GB/T 2260 (a county without its city).
    nowhere = canonical({
        "format": 1, "instance": "CL-ZJ", "day": str(DAY), "revision": 1,
        "generated_at": "2026-03-03T00:00:00+00:00",
        "enterprise": {"credit_code": NB1, "name": "x", "region_code": "330099",
                       "industry_code": "C34"},
        "devices": {"in_service": 1, "networked": 1, "nc": 0, "key_process": 0,
                    "key_process_nc": 0},
        "oee": {}, "lines": {},
    })  # fmt: skip
    unknown_region = httpx.post(reports, content=nowhere, headers={
        INSTANCE_HEADER: "CL-ZJ", SIGNATURE_HEADER: identity.sign(nowhere)})  # fmt: skip
    assert unknown_region.status_code == 422, unknown_region.text
    assert "region_code" in unknown_region.json()["detail"]
    # The province is down: the cluster keeps its outbox and says so.
    province.stop()
    down = _push(api_db_url, key, province)
    assert down.returncode == 1
    assert "已送达 sent 0" in down.stderr
    with psycopg.connect(api_db_url) as conn:
        pending = conn.execute("SELECT count(*), min(attempts), max(last_error) FROM"
                               " federation_outbox WHERE sent_at IS NULL").fetchone()  # fmt: skip
        assert pending is not None
        assert pending[0] == 6  # 3 enterprises × 2 days
        assert pending[1] == 1
        assert "ConnectError" in pending[2]
        # A tampered body of a real report (the figure raised after signing).
        row = conn.execute("SELECT body FROM federation_outbox ORDER BY id LIMIT 1").fetchone()
        assert row is not None
        real = bytes(row[0])
        # Retry now rather than in 10 s.
        conn.execute("UPDATE federation_outbox SET next_attempt_at = now()")
    province.start()
    forged = real.replace(b'"networked":', b'"networked":9', 1)
    assert forged != real
    tampered = httpx.post(reports, content=forged, headers={
        INSTANCE_HEADER: "CL-ZJ", SIGNATURE_HEADER: identity.sign(real)})  # fmt: skip
    assert tampered.status_code == 401
    back = _push(api_db_url, key, province)
    assert back.returncode == 0, back.stderr
    assert "已送达 sent 6" in back.stderr
    assert len(province.rows("SELECT 1 FROM federation_report")) == 6
    refusals = province.rows(
        "SELECT detail->>'reason' FROM audit_log WHERE action = 'federation.refused' ORDER BY id"
    )
    reasons = [r[0] for r in refusals]
    assert len(reasons) == 6
    assert "not registered" in reasons[1]
    assert "at most" in reasons[2]
    assert all(WZ not in r for r in reasons)
    assert base64.b64decode(public)  # the printed key is base64 of 32 bytes
