"""Provincial KPIs and reports over federated data (issue #14 item 8, docs/federation.md).

One world for the module, two real API servers on two databases on loopback:

* the **cluster** instance ``CL-ZJ``: the API tests' province with its day of facts
  (tests/api/test_kpi.py), NB1 and NB2 in Ningbo, WZ in Wenzhou;
* the **province**: the same users and regions, WZ in its own registry (no data of
  its own), NB1 and NB2 not: it knows them only from CL-ZJ's reports.

The cluster pushes 2026-02-27 .. 2026-03-02 with the real CLI. Then the province's
networking rate, NC rate, OEE, series and networking report of Ningbo equal the
cluster's own answers for the same scope and period (compared with the cluster's API,
not with numbers written here), and say that they come from CL-ZJ and as of when; WZ
is counted once, from the province's own data; an analyst of Lucheng sees none of the
federated enterprises; a newer revision changes the province's figure. The last test
changes the world (a ledger change on the cluster, pushed again).
"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from openpyxl import load_workbook

from platform_api.security import issue_access_token
from tests.api.conftest import make_settings
from tests.api.test_federation import Province, _zhizao
from tests.api.test_kpi import _seed_day
from tests.api.world import NB1, NB2, NB_MOLD, WZ
from tests.fix_db import RUN_ID, create_database, drop_database
from zhizao.federation import init_identity, register_peer
from zhizao.storage.connection import connect

INSTANCE = "CL-ZJ"
FIRST, LAST = date(2026, 3, 1), date(2026, 3, 2)
DAYS = f"period=custom&start={FIRST}&end={LAST}"
NINGBO = "330200"


@dataclass
class World:
    cluster: Province
    province: Province
    ids: dict[str, int]
    key: Path
    secret_key: str

    def token(self, username: str) -> dict[str, str]:
        token, _ = issue_access_token(self.secret_key, self.ids[username], 30)
        return {"Authorization": f"Bearer {token}"}

    def get(self, place: Province, path: str, user: str = "admin") -> Any:
        answer = httpx.get(f"{place.base}{path}", headers=self.token(user), timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        return answer.json() if "json" in answer.headers["content-type"] else answer.content

    def both(self, path: str, user: str = "admin") -> tuple[Any, Any]:
        return self.get(self.cluster, path, user), self.get(self.province, path, user)

    def push(self) -> subprocess.CompletedProcess[str]:
        return _zhizao("federation", "push", "--url", self.province.base, "--until", str(LAST),
                       "--days", "4", "--key-file", str(self.key), "--db-url",
                       self.cluster.db_url)  # fmt: skip


async def _seed_cluster(url: str) -> None:
    conn = await connect(url)
    async with conn:
        await _seed_day(conn)


async def _register(url: str, public_key: bytes) -> None:
    conn = await connect(url)
    async with conn:
        await register_peer(conn, INSTANCE, public_key, regions=["330000"])


@pytest.fixture(scope="module")
def world(api_world: tuple[str, dict[str, int]], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("fedkpi")
    tag = uuid.uuid4().hex[:6]
    names = (f"zhizao_fc_{RUN_ID}_{tag}", f"zhizao_fp_{RUN_ID}_{tag}")
    cluster_url = create_database(names[0], template=api_world[0])
    province_url = create_database(names[1], template=api_world[0])
    places = (Province(cluster_url, tmp / "cluster.log"),
              Province(province_url, tmp / "province.log"))  # fmt: skip
    # The two servers start side by side while the databases are made ready (the
    # federation commands themselves are tested in test_federation).
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(p.start) for p in places]
        try:
            asyncio.run(_seed_cluster(cluster_url))
            with psycopg.connect(province_url) as conn:  # its registry lacks NB1 and NB2
                conn.execute("DELETE FROM enterprise WHERE credit_code = ANY(%s)", ([NB1, NB2],))
            identity = init_identity(tmp / "identity.json", INSTANCE)
            asyncio.run(_register(province_url, identity.public_key))
            for future in started:
                future.result()
            here = World(*places, api_world[1], tmp / "identity.json",
                         make_settings(province_url).signing_key())  # fmt: skip
            pushed = here.push()
            assert pushed.returncode == 0, pushed.stderr
            yield here
        finally:
            for future in [pool.submit(p.stop) for p in places]:
                future.result()
            for name in names:
                drop_database(name)


def _figures(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures of an answer, without what says where they come from."""
    return [{k: v for k, v in item.items() if k not in ("sources", "flags")}
            for item in body["items"]]  # fmt: skip


def _federated(sources: list[dict[str, Any]], enterprises: int) -> None:
    [source] = sources
    assert source["instance"] == INSTANCE
    assert source["enterprises"] == enterprises
    assert source["newest_day"] == str(LAST)
    as_of = datetime.fromisoformat(source["as_of"])
    assert as_of.utcoffset() is not None
    assert source["as_of"].endswith("+08:00")  # the zone the figures are read in


@pytest.mark.parametrize("group_by", ["city", "county", "cluster", "industry", "enterprise"])
def test_networking_and_nc_equal_the_cluster_s_own(world: World, group_by: str) -> None:
    for scope in ("all", "above_designated_size", "key_enterprise"):
        query = f"group_by={group_by}&scope={scope}&region={NINGBO}"
        mine, province = world.both(f"/api/v1/kpi/networking?{DAYS}&{query}")
        assert _figures(province) == _figures(mine), scope
        for key_process in ("false", "true"):
            mine, province = world.both(
                f"/api/v1/kpi/nc?date={LAST}&key_process={key_process}&{query}"
            )
            assert _figures(province) == _figures(mine), (scope, key_process)
    mine, province = world.both(f"/api/v1/kpi/networking?{DAYS}&group_by={group_by}"
                                f"&region={NINGBO}")  # fmt: skip
    assert province["items"], "Ningbo's figures are the cluster's reports"
    for item in province["items"]:
        _federated(item["sources"], item["enterprises"])
        assert item["sources"][0]["days"] == 2
    assert all(item["sources"][0]["instance"] == "local" for item in mine["items"])


def test_oee_and_series_equal_the_cluster_s_own(world: World) -> None:
    for level, code in (("region", NINGBO), ("enterprise", NB1), ("cluster", NB_MOLD),
                        ("line", "L1")):  # fmt: skip
        extra = f"&enterprise={NB2}" if level == "line" else ""
        mine, province = world.both(f"/api/v1/kpi/oee?level={level}&code={code}{extra}&{DAYS}")
        assert province["result"] == mine["result"], level
        assert province["devices"] == []  # devices never leave the cluster, and it says so
        assert mine["devices"]
        assert {f["enterprise"] for f in province["federated"]} == (
            {d["enterprise"] for d in mine["devices"]} if level != "line" else {NB2}
        )
        assert all("设备" in f["note"] for f in province["federated"])
        _federated(province["sources"], len(province["federated"]))
    assert mine["result"]["good"] == 900  # P01's day on NB2's line L1: a real figure
    series = f"every=day&period=custom&start=2026-02-27&end={LAST}"
    mine, province = world.both(f"/api/v1/kpi/oee/series?level=region&code={NINGBO}&{series}")
    assert [p["result"] for p in province["points"]] == [p["result"] for p in mine["points"]]
    mine, province = world.both(f"/api/v1/kpi/networking/series?region={NINGBO}&{series}"
                                "&group_by=county")  # fmt: skip
    assert [_figures(p) for p in province["points"]] == [_figures(p) for p in mine["points"]]
    assert len(province["points"]) == 4
    # A device of a federated enterprise does not exist on the province.
    answer = httpx.get(f"{world.province.base}/api/v1/kpi/oee?level=device&code=M01"
                       f"&enterprise={NB1}&{DAYS}", headers=world.token("admin"))  # fmt: skip
    assert answer.status_code == 404


def _rows(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "sources"} for row in body[key]]


def test_the_networking_report_equals_the_cluster_s_own(world: World) -> None:
    path = f"/api/v1/reports/networking?period={FIRST}..{LAST}&region={NINGBO}&format=json"
    mine, province = world.both(path)
    for key in ("networking", "nc", "enterprises", "behind"):
        assert _rows(province, key) == _rows(mine, key), key
    assert province["covered_days"] == mine["covered_days"] == 1
    assert province["networking"]
    for row in province["networking"]:
        _federated(row["sources"], row["enterprises"])
    # The devices not networked are the cluster's to list; the province says whose.
    assert [d["device"] for d in mine["not_networked"]] == ["P02"]
    assert province["not_networked"] == []
    assert {f["enterprise"] for f in province["federated"]} == {NB1, NB2}
    [cover_source] = province["sources"]
    assert cover_source["instance"] == INSTANCE
    # The workbook's cover and columns, and the CSV, say it too.
    book = load_workbook(io.BytesIO(world.get(world.province, path.replace("json", "xlsx"))))
    cover = [[c.value for c in row] for row in book["封面 Cover"].iter_rows()]
    [source_row] = [row for row in cover if row[0] == "数据来源"]
    assert source_row[1] == INSTANCE
    assert "2026-03-02" in source_row[2]
    assert any(row[0] == "未联网设备" and "2 家联邦上报企业" in row[2] for row in cover)
    city = book["按地市"]
    header = [c.value for c in city[1]]
    column = header.index("数据来源")
    assert all(INSTANCE in str(row[column].value) for row in city.iter_rows(min_row=3))
    text = world.get(world.province, path.replace("format=json", "format=csv&table=county"))
    table = list(csv.reader(io.StringIO(text.decode("utf-8-sig"))))
    assert table[0][-1].startswith("数据来源")
    assert all(INSTANCE in row[-1] for row in table[1:])


def test_the_command_line_says_the_sources(world: World) -> None:
    db = world.province.db_url
    with ThreadPoolExecutor(2) as pool:  # two interpreters' start-up at once
        kpi = pool.submit(
            _zhizao,
            "kpi",
            "networking",
            "--from",
            str(FIRST),
            "--to",
            str(LAST),
            "--group-by",
            "county",
            "--db-url",
            db,
            env={"COLUMNS": "240"},
        )
        csv_out = pool.submit(
            _zhizao,
            "report",
            "networking",
            "--period",
            f"{FIRST}..{LAST}",
            "--format",
            "csv",
            "--table",
            "enterprises",
            "--db-url",
            db,
        )
        done, report = kpi.result(), csv_out.result()
    assert done.returncode == 0, done.stderr
    assert INSTANCE in done.stdout
    assert "330203" in done.stdout  # Haishu, known only from the reports
    assert report.returncode == 0, report.stderr
    rows = {r[0]: r for r in csv.reader(io.StringIO(report.stdout.removeprefix("\ufeff")))}
    assert INSTANCE in rows[NB1][-1]
    assert rows[WZ][-1].startswith("local")


def test_an_enterprise_local_and_federated_is_counted_once(world: World) -> None:
    # WZ is in the province's registry and in CL-ZJ's reports: the local data wins.
    [reported] = world.province.rows(
        "SELECT networked FROM federated_day WHERE enterprise = %s AND day = %s", WZ, LAST
    )
    assert reported[0] == 2  # CL-ZJ saw both of its devices
    local = world.get(world.province, f"/api/v1/kpi/networking?{DAYS}&group_by=enterprise")
    by = {(i["group"], i["method"]): i for i in local["items"]}
    wz = by[WZ, "ratio_of_sums"]
    assert (wz["numerator"], wz["denominator"], wz["enterprises"]) == (0, 4, 1)
    assert [s["instance"] for s in wz["sources"]] == ["local"]
    province = world.get(world.province, f"/api/v1/kpi/networking?{DAYS}&group_by=province")
    whole = next(i for i in province["items"] if i["method"] == "ratio_of_sums")
    assert whole["enterprises"] == 3
    assert {s["instance"]: s["enterprises"] for s in whole["sources"]} == {"local": 1, INSTANCE: 2}
    cluster = world.get(world.cluster, f"/api/v1/kpi/networking?{DAYS}&group_by=province")
    mine = next(i for i in cluster["items"] if i["method"] == "ratio_of_sums")
    ningbo = by[NB1, "ratio_of_sums"]["numerator"] + by[NB2, "ratio_of_sums"]["numerator"]
    assert whole["numerator"] == ningbo  # WZ's reported 2 networked devices are not added
    assert mine["numerator"] == ningbo + 2
    # OEE too: Wenzhou's is the province's own (no data), not its own plus CL-ZJ's.
    oee = f"/api/v1/kpi/oee?level=city&code=330300&{DAYS}"
    mine_oee, province_oee = world.both(oee)
    assert mine_oee["result"]["good"] == 1200
    assert province_oee["result"]["good"] == 0
    assert province_oee["federated"] == []
    assert [s["instance"] for s in province_oee["sources"]] == ["local"]


def test_an_analyst_of_another_city_sees_no_federated_enterprise(world: World) -> None:
    seen = world.get(world.province, f"/api/v1/kpi/networking?{DAYS}&group_by=enterprise",
                     "analyst_lucheng")  # fmt: skip
    assert {i["group"] for i in seen["items"]} == {WZ}
    report = world.get(world.province, f"/api/v1/reports/networking?period={FIRST}..{LAST}"
                       "&format=json", "analyst_lucheng")  # fmt: skip
    assert [e["credit_code"] for e in report["enterprises"]] == [WZ]
    assert report["federated"] == []
    assert all(s["instance"] == "local" for s in report["sources"])
    for path in (f"/api/v1/kpi/oee?level=enterprise&code={NB1}&{DAYS}",
                 f"/api/v1/kpi/oee?level=cluster&code={NB_MOLD}&{DAYS}",
                 f"/api/v1/kpi/networking?{DAYS}&region={NINGBO}"):  # fmt: skip
        answer = httpx.get(f"{world.province.base}{path}", headers=world.token("analyst_lucheng"))
        assert answer.status_code == 404, path
    # Ningbo's analyst and NB-MOLD's operator reach them, through the same filter.
    ningbo = world.get(world.province, f"/api/v1/kpi/networking?{DAYS}&group_by=enterprise",
                       "analyst_ningbo")  # fmt: skip
    assert {i["group"] for i in ningbo["items"]} == {NB1, NB2}
    mold = world.get(world.province, f"/api/v1/kpi/oee?level=cluster&code={NB_MOLD}&{DAYS}",
                     "op_nb_mold")  # fmt: skip
    assert [f["enterprise"] for f in mold["federated"]] == [NB1]


def test_a_newer_revision_changes_the_province_s_figure(world: World) -> None:
    path = f"/api/v1/kpi/networking?date={LAST}&group_by=enterprise&region={NINGBO}"
    before = world.get(world.province, path)
    was = next(i for i in before["items"] if i["group"] == NB1 and i["method"] == "ratio_of_sums")
    with psycopg.connect(world.cluster.db_url) as conn:  # M02 leaves service on the 2nd
        conn.execute("UPDATE device SET decommissioned_on = %s WHERE code = 'M02'", (LAST,))
    pushed = world.push()
    assert pushed.returncode == 0, pushed.stderr
    assert "新修订 1 new revisions" in pushed.stderr
    mine, province = world.both(path)
    assert _figures(province) == _figures(mine)
    now = next(i for i in province["items"] if i["group"] == NB1 and i["method"] == "ratio_of_sums")
    assert now["denominator"] == was["denominator"] - 1
    assert now["sources"][0]["as_of"] > was["sources"][0]["as_of"]
