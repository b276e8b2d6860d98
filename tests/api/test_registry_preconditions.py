"""Lost updates: ETags on registry objects and If-Match on their PATCH.

Two people read a device, each changes it and sends a PATCH with the ETag they read:
the first is applied, the second is a 412 naming the header, and nothing of the first
is overwritten. Against real PostgreSQL, with both PATCHes waiting on the same row.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.api.conftest import ApiClient, waiting_for_locks
from tests.api.test_registry import audit_rows, with_sites
from tests.api.world import NB1, NB_MOLD

DEVICE = f"/api/v1/enterprises/{NB1}/devices/M01"

#: Every registry object with a PATCH: (its URL, a change to it).
PATCHABLE = [
    ("/api/v1/regions/330203", {"name": "海曙"}),
    (f"/api/v1/clusters/{NB_MOLD}", {"name": "宁波模具集群"}),
    (f"/api/v1/enterprises/{NB1}", {"key_enterprise": False}),
    (f"/api/v1/enterprises/{NB1}/sites/W1", {"name": "冲压车间"}),
    (f"/api/v1/enterprises/{NB1}/lines/L1", {"name": "装配一线"}),
    (DEVICE, {"name": "立式加工中心"}),
    (f"/api/v1/enterprises/{NB1}/edges/edge-nb1", {"name": "一号线网关"}),
]


@pytest.mark.parametrize(("url", "change"), PATCHABLE, ids=lambda v: str(v).rsplit("/", 1)[-1])
async def test_a_patch_with_a_stale_etag_is_412_and_changes_nothing(
    api: ApiClient, api_db_url: str, url: str, change: dict[str, Any]
) -> None:
    with_sites(api_db_url)
    admin = api.as_("admin")
    read = await admin.get(url)
    assert read.status_code == 200
    tag = read.headers["etag"]
    assert tag.startswith('"'), "a strong tag"
    assert tag.endswith('"')
    assert (await admin.get(url)).headers["etag"] == tag, "the same object, the same tag"

    first = await admin.patch(url, json=change, headers={"If-Match": tag})
    assert first.status_code == 200, first.text
    assert first.headers["etag"] != tag
    assert first.headers["etag"] == (await admin.get(url)).headers["etag"]

    stale = await admin.patch(url, json=change, headers={"If-Match": tag})
    assert stale.status_code == 412
    assert stale.headers["content-type"].startswith("application/problem+json")
    problem = stale.json()
    assert problem["status"] == 412
    assert problem["errors"][0]["field"] == "header.if-match"
    assert problem["errors"][0]["value"] == tag
    assert "changed since you read it" in problem["errors"][0]["rule"]
    assert (await admin.get(url)).json() == first.json()


async def test_if_match_is_optional_and_compared_strongly(api: ApiClient) -> None:
    eng = api.as_("eng_nb1")
    tag = (await eng.get(DEVICE)).headers["etag"]

    blind = await eng.patch(DEVICE, json={"name": "无条件修改"})
    assert blind.status_code == 200, "a PATCH without If-Match is applied, as before"
    now = blind.headers["etag"]

    for sent in (f"W/{now}", tag, '"nonsense"'):
        refused = await eng.patch(DEVICE, json={"name": "x"}, headers={"If-Match": sent})
        assert refused.status_code == 412, sent
    listed = await eng.patch(
        DEVICE, json={"name": "列出其一"}, headers={"If-Match": f"{tag}, {now}"}
    )
    assert listed.status_code == 200, "one of several tags matching is enough"
    star = await eng.patch(DEVICE, json={"name": "任意版本"}, headers={"If-Match": "*"})
    assert star.status_code == 200
    assert (await eng.get(DEVICE)).json()["name"] == "任意版本"


async def test_a_missing_object_is_404_before_its_precondition(api: ApiClient) -> None:
    answer = await api.as_("admin").patch(
        f"/api/v1/enterprises/{NB1}/devices/NOPE", json={"name": "x"}, headers={"If-Match": "*"}
    )
    assert answer.status_code == 404


async def test_of_two_concurrent_patches_with_one_etag_one_wins_and_one_is_412(
    api: ApiClient, api_db_url: str
) -> None:
    eng, admin = api.as_("eng_nb1"), api.as_("admin")
    tag = (await eng.get(DEVICE)).headers["etag"]

    # Hold the device's row, so that both PATCHes are in flight, past their reads of
    # the scope, when the first of them gets it.
    with psycopg.connect(api_db_url) as holder:
        holder.execute(
            "SELECT d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
            " WHERE e.credit_code = %s AND d.code = 'M01' FOR UPDATE",
            (NB1,),
        )
        one = asyncio.create_task(
            eng.patch(DEVICE, json={"name": "甲改"}, headers={"If-Match": tag})
        )
        two = asyncio.create_task(
            admin.patch(DEVICE, json={"decommissioned_on": "2027-06-30"}, headers={"If-Match": tag})
        )
        await waiting_for_locks(api_db_url, 2)
        holder.commit()
        answers = await asyncio.gather(one, two)

    assert sorted(a.status_code for a in answers) == [200, 412]
    won = next(a for a in answers if a.status_code == 200).json()
    now = (await eng.get(DEVICE)).json()
    assert now == won, "the object is the winner's, not a mix of both changes"
    assert (now["name"] == "甲改") != (now["decommissioned_on"] == "2027-06-30")
    updates = [r for r in audit_rows(api_db_url, "device") if r["action"] == "update"]
    assert len(updates) == 1, "only the change made is in the audit log"


async def test_a_calendar_put_with_a_stale_etag_is_412_and_changes_nothing(
    api: ApiClient,
) -> None:
    from tests.api.test_registry_devices import CALENDAR

    eng = api.as_("eng_nb1")
    calendar = f"/api/v1/enterprises/{NB1}/calendar"
    line = f"/api/v1/enterprises/{NB1}/lines/L1/calendar"
    none = await eng.get(calendar)
    tag = none.headers["etag"]
    first = await eng.put(calendar, json=CALENDAR, headers={"If-Match": tag})
    assert first.status_code == 200, first.text
    assert first.headers["etag"] == (await eng.get(calendar)).headers["etag"] != tag
    # Someone who read the calendar before that change sends theirs: refused.
    other = {**CALENDAR, "name": "两班制"}
    stale = await eng.put(calendar, json=other, headers={"If-Match": tag})
    assert stale.status_code == 412
    assert stale.json()["errors"][0]["field"] == "header.if-match"
    assert (await eng.get(calendar)).json() == first.json()
    # A line without its own calendar shows the enterprise's, and the tag of what it
    # showed is the one its PUT compares with.
    shown = await eng.get(line)
    assert shown.json()["source"] == "enterprise"
    night = {
        **CALENDAR,
        "name": "夜班",
        "shifts": [{"name": "夜班", "start": "20:00", "end": "08:00"}],
    }
    own = await eng.put(line, json=night, headers={"If-Match": shown.headers["etag"]})
    assert own.status_code == 200, own.text
    again = await eng.put(line, json=night, headers={"If-Match": shown.headers["etag"]})
    assert again.status_code == 412
    # Without If-Match a PUT is applied whatever came before (the header is optional).
    assert (await eng.put(calendar, json=other)).status_code == 200
