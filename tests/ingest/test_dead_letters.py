"""Dead letters are replayed once the registry is fixed."""

from __future__ import annotations

import asyncio
import json

from ingest.replay import replay_dead_letters
from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Publisher,
    Worker,
    register,
    scalar,
    wait_for_count,
    worker_settings,
)
from zhizao.registry import Device, DeviceType, EdgeGateway
from zhizao.storage.connection import connect
from zhizao.storage.registry import upsert_devices, upsert_edges
from zhizao.wire import data_topic


async def test_replay_after_the_ledger_is_fixed(db_url: str, own_mosquitto: Mosquitto) -> None:
    a, _ = await register(db_url)
    worker = Worker(worker_settings(db_url, own_mosquitto.url))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    points = [
        {"device": a.devices[0], "ts": T0, "kind": "metric", "name": "temp", "value": 1.0},
        {"device": "NEW-01", "ts": T0 + 1, "kind": "metric", "name": "temp", "value": 2.0},
        {"device": "NEW-01", "ts": T0 + 2, "kind": "count", "name": "good", "value": 4},
    ]
    unregistered_edge = {"v": 1, "enterprise": a.enterprise, "edge": "edge-new", "seq": 0,
                         "sent_at": T0, "points": [points[0] | {"ts": T0 + 5}]}
    try:
        await asyncio.to_thread(
            publisher.publish_all,
            [
                (data_topic(a.enterprise, a.edge), json.dumps(
                    {"v": 1, "enterprise": a.enterprise, "edge": a.edge, "seq": 0,
                     "sent_at": T0, "points": points}).encode()),
                (data_topic(a.enterprise, "edge-new"), json.dumps(unregistered_edge).encode()),
            ],
        )
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 3)
        assert await scalar(db_url, "SELECT count(*) FROM metric_point") == 1

        # Nothing changed in the registry yet: replay leaves them pending.
        report = await replay_dead_letters(db_url)
        assert (report.examined, report.replayed, len(report.still_failing)) == (3, 0, 3)

        conn = await connect(db_url)
        async with conn, conn.transaction():
            new_device = Device(enterprise=a.enterprise, code="NEW-01", name="new",
                                device_type=DeviceType.INDUSTRIAL_ROBOT)
            await upsert_devices(conn, [new_device])
            # The fix is the ledger's: the device, and edge-a serving it (服务设备).
            await upsert_edges(conn, [
                EdgeGateway(enterprise=a.enterprise, edge_id="edge-new"),
                EdgeGateway(enterprise=a.enterprise, edge_id=a.edge,
                            device_codes=(*a.devices, "NEW-01")),
            ])  # fmt: skip
        report = await replay_dead_letters(db_url)
        assert (report.examined, report.replayed, report.rows_new) == (3, 3, 3)
        assert await scalar(db_url, "SELECT count(*) FROM metric_point") == 3
        assert await scalar(db_url, "SELECT sum(quantity) FROM production_count") == 4
        assert await scalar(
            db_url, "SELECT count(*) FROM dead_letter WHERE replayed_at IS NULL"
        ) == 0
        # Replaying again finds nothing pending and changes nothing.
        report = await replay_dead_letters(db_url)
        assert report.examined == 0
    finally:
        publisher.close()
        await worker.close()
