"""Two engineers of two enterprises upload, at the same moment, a ledger that names the
same new edge gateway id: one gets it, the other's row is refused in the same words
as for an id registered long ago, and neither upload takes the other's gateway.

The uploads are made to overlap for certain: the test holds a lock on the gateway
table that lets both read it (each finds the id free) and stops both at their write;
then it lets go.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from platform_api.security import hash_password
from tests.api.conftest import ApiClient, waiting_for_locks
from tests.api.test_registry import scalar
from tests.api.world import NB1, NB2, PASSWORD
from zhizao.access import Grant, Role
from zhizao.storage.connection import connect
from zhizao.storage.users import add_grant, create_user

EDGE = "edge-shared-1"


async def _engineer(api: ApiClient, db_url: str, username: str, credit_code: str) -> None:
    conn = await connect(db_url)
    async with conn, conn.transaction():
        user = await create_user(conn, username, hash_password(PASSWORD))
        await add_grant(conn, user.id, Grant(Role.ENTERPRISE_ENGINEER, credit_code))
        await conn.execute(
            "UPDATE app_user SET sessions_valid_from = '2000-01-01Z' WHERE id = %s", (user.id,)
        )
    api.ids = {**api.ids, username: user.id}  # a copy: the session's ids stay as seeded


def _edge_csv(credit_code: str, device: str) -> bytes:
    return f"网关编号,统一社会信用代码,服务设备\n{EDGE},{credit_code},{device}\n".encode()


async def test_two_concurrent_uploads_of_one_new_edge_id_give_it_to_one(
    api: ApiClient, api_db_url: str
) -> None:
    await _engineer(api, api_db_url, "eng_nb2", NB2)
    uploads = {
        NB1: (api.as_("eng_nb1"), _edge_csv(NB1, "M01")),
        NB2: (api.as_("eng_nb2"), _edge_csv(NB2, "P01")),
    }
    with psycopg.connect(api_db_url) as holder:
        holder.execute("LOCK TABLE edge_gateway IN SHARE MODE")
        tasks = {
            ent: asyncio.create_task(
                client.post("/api/v1/ledger/import", files={"file": ("网关.csv", data, "text/csv")})
            )
            for ent, (client, data) in uploads.items()
        }
        await waiting_for_locks(api_db_url, 2)
        holder.commit()
        answers = {ent: await task for ent, task in tasks.items()}

    reports: dict[str, dict[str, Any]] = {}
    for ent, answer in answers.items():
        assert answer.status_code == 200, answer.text
        reports[ent] = answer.json()
    owner = scalar(
        api_db_url,
        "SELECT e.credit_code FROM edge_gateway g JOIN enterprise e ON e.id = g.enterprise_id"
        " WHERE g.edge_id = %s",
        EDGE,
    )
    loser = NB2 if owner == NB1 else NB1
    assert reports[owner]["errors"] == []
    assert reports[owner]["summary"]["stored"] == 1
    assert [(e["column"], e["value"], e["reason"]) for e in reports[loser]["errors"]] == [
        ("网关编号", EDGE, "edge id is registered to another enterprise")
    ]
    assert (reports[loser]["summary"]["stored"], reports[loser]["summary"]["rejected"]) == (0, 1)
    served = scalar(
        api_db_url,
        "SELECT array_agg(d.code ORDER BY d.code) FROM edge_device ed"
        " JOIN edge_gateway g ON g.id = ed.edge_pk JOIN device d ON d.id = ed.device_id"
        " WHERE g.edge_id = %s",
        EDGE,
    )
    assert served == (["M01"] if owner == NB1 else ["P01"]), "the loser's devices are not added"


async def test_an_upload_leaves_another_enterprise_s_edge_alone_after_the_check(
    api: ApiClient, api_db_url: str
) -> None:
    """The guard in the write itself: an id registered (and committed) by another
    enterprise while the upload waits to write is refused, not taken over."""
    with psycopg.connect(api_db_url) as holder:
        holder.execute("LOCK TABLE edge_gateway IN SHARE MODE")
        upload = asyncio.create_task(
            api.as_("eng_nb1").post(
                "/api/v1/ledger/import",
                files={"file": ("网关.csv", _edge_csv(NB1, "M01"), "text/csv")},
            )
        )
        await waiting_for_locks(api_db_url, 1)
        # Under SHARE the holder itself may still write: it registers the id for NB2.
        holder.execute(
            "INSERT INTO edge_gateway (edge_id, enterprise_id)"
            " SELECT %s, id FROM enterprise WHERE credit_code = %s",
            (EDGE, NB2),
        )
        holder.commit()
        answer = await upload
    assert answer.status_code == 200
    assert [e["reason"] for e in answer.json()["errors"]] == [
        "edge id is registered to another enterprise"
    ]
    assert (
        scalar(
            api_db_url,
            "SELECT e.credit_code FROM edge_gateway g JOIN enterprise e ON e.id = g.enterprise_id"
            " WHERE g.edge_id = %s",
            EDGE,
        )
        == NB2
    )
