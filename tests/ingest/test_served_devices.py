"""An edge publishes only for the devices it serves (the ledger's 服务设备), when given.

A point of another device of the same enterprise is a dead letter of its own, naming the
device and the edge; an edge without a list may publish for any device of its
enterprise. Changes of the list reach a running worker: an added device on the next
miss, a removed one after the cache's time to live.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ingest.replay import replay_dead_letters
from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Publisher,
    Worker,
    register,
    scalar,
    wait_for_count,
    wait_until,
    worker_settings,
)
from zhizao.registry import Device, DeviceType, EdgeGateway
from zhizao.storage.connection import connect
from zhizao.storage.registry import upsert_devices, upsert_edges
from zhizao.wire import data_topic

OTHER = "A-100"  # a device of enterprise A that edge-a does not serve
OPEN_EDGE = "edge-open"  # an edge of enterprise A with no 服务设备 list
ROWS_OF = (
    "SELECT count(*) FROM metric_point m JOIN device d ON d.id = m.device_id WHERE d.code = %s"
)


def _message(enterprise: str, edge: str, seq: int, devices: list[str]) -> tuple[str, bytes]:
    points = [
        {"device": d, "ts": T0 + seq * 1000 + i, "kind": "metric", "name": "temp", "value": 1.0}
        for i, d in enumerate(devices)
    ]
    body = {"v": 1, "enterprise": enterprise, "edge": edge, "seq": seq, "sent_at": T0,
            "points": points}  # fmt: skip
    return data_topic(enterprise, edge), json.dumps(body).encode()


async def _rows(db_url: str, device: str) -> int:
    return int(await scalar(db_url, ROWS_OF, device))


async def _stored(db_url: str, device: str, rows: int) -> bool:
    return await _rows(db_url, device) == rows


async def _dead(db_url: str) -> list[tuple[Any, ...]]:
    conn = await connect(db_url, autocommit=True)
    async with conn:
        cur = await conn.execute(
            "SELECT edge_id, seq, point_index, reason FROM dead_letter ORDER BY seq, point_index"
        )
        return list(await cur.fetchall())


async def test_an_edge_publishes_only_for_the_devices_it_serves(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, b = await register(db_url)
    conn = await connect(db_url)
    async with conn, conn.transaction():
        await upsert_devices(conn, [Device(enterprise=a.enterprise, code=OTHER, name="空压机",
                                           device_type=DeviceType.INDUSTRIAL_ROBOT)])  # fmt: skip
        await upsert_edges(conn, [EdgeGateway(enterprise=a.enterprise, edge_id=OPEN_EDGE)])
    # A miss always asks the database (no retry interval), known edges are re-read after
    # a second: the test waits for what a ledger change does, not for a clock.
    settings = worker_settings(
        db_url, own_mosquitto.url, registry_miss_retry_s=0, registry_ttl_s=1.0
    )
    worker = Worker(settings)
    await worker.connected()
    publisher = Publisher(own_mosquitto.url, client_id="pub-served")
    try:
        served = a.devices[0]
        await asyncio.to_thread(publisher.publish_all, [
            _message(a.enterprise, a.edge, 0, [served, OTHER, "GHOST-1", b.devices[0]]),
            _message(a.enterprise, OPEN_EDGE, 0, [OTHER, served]),
        ])  # fmt: skip
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 3)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 3)
        # The served device's point is stored; each other point is a dead letter of its own.
        assert await _rows(db_url, served) == 2
        assert await _rows(db_url, OTHER) == 1  # from the edge without a list
        not_in_ledger = f"is not in the ledger of enterprise {a.enterprise}"
        assert await _dead(db_url) == [
            ("edge-a", 0, 1, f"device: '{OTHER}' is not served by edge 'edge-a' (not in its"
                             f" 服务设备 list in the ledger of enterprise {a.enterprise})"),
            ("edge-a", 0, 2, f"device: 'GHOST-1' {not_in_ledger}"),
            ("edge-a", 0, 3, f"device: '{b.devices[0]}' {not_in_ledger}"),
        ]  # fmt: skip

        # The ledger now lists OTHER for edge-a and no longer its second device.
        kept = (served, *a.devices[2:], OTHER)
        conn = await connect(db_url)
        async with conn, conn.transaction():
            await upsert_edges(
                conn, [EdgeGateway(enterprise=a.enterprise, edge_id=a.edge, device_codes=kept)]
            )
        # Added: accepted at the next message, without a restart.
        await asyncio.to_thread(
            publisher.publish_all, [_message(a.enterprise, a.edge, 1, [OTHER])]
        )
        await wait_until(
            lambda: _stored(db_url, OTHER, 2), within=60, what="the added device's point stored"
        )
        # Removed: refused once the worker re-reads the edge (its time to live).
        seq = [2]

        async def removed_device_refused() -> bool:
            await asyncio.to_thread(
                publisher.publish_all, [_message(a.enterprise, a.edge, seq[0], [a.devices[1]])]
            )
            seq[0] += 1
            await asyncio.sleep(0.3)
            reasons = [row[3] for row in await _dead(db_url)]
            return any(f"'{a.devices[1]}' is not served by edge 'edge-a'" in r for r in reasons)

        await wait_until(removed_device_refused, within=60, what="the removed device refused")

        # The point refused before the fix passes a replay now.
        report = await replay_dead_letters(db_url, reason_contains=f"'{OTHER}' is not served")
        assert (report.examined, report.replayed) == (1, 1)
        assert await _rows(db_url, OTHER) == 3
    finally:
        publisher.close()
        await worker.close()
