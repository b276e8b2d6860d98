"""An ingest worker with ZHIZAO_INGEST_ROLLUPS runs the rollup service inside (the demo's way)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Publisher,
    Worker,
    get_health,
    register,
    wait_for_count,
    worker_settings,
)
from zhizao.storage.rollups import rollup_settings
from zhizao.wire import data_topic


async def test_ingest_rolls_up_what_it_stored(db_url: str, own_mosquitto: Mosquitto) -> None:
    a, _ = await register(db_url)
    worker = Worker(
        worker_settings(db_url, own_mosquitto.url, rollups=True, health_port=0,
                        rollup=rollup_settings(interval_s=0.5))
    )  # fmt: skip
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    try:
        device = a.devices[0]
        points = [
            {"device": device, "ts": T0, "kind": "state", "name": "state", "value": "RUNNING"},
            {"device": device, "ts": T0 + 1_800_000, "kind": "state", "name": "state",
             "value": "UNPLANNED_STOP"},
            {"device": device, "ts": T0 + 60_000, "kind": "count", "name": "good", "value": 7},
        ]  # fmt: skip
        batch = {"v": 1, "enterprise": a.enterprise, "edge": a.edge, "seq": 0, "sent_at": T0,
                 "points": points}  # fmt: skip
        publisher.publish_all([(data_topic(a.enterprise, a.edge), json.dumps(batch).encode())])
        # The running half hour and the 7 good parts are rolled up (over one or two
        # hours: T0 is not hour-aligned).
        await wait_for_count(
            db_url,
            "SELECT count(*) FROM (SELECT sum(r.running_s) AS run, sum(r.good) AS good"
            " FROM rollup_device_hour r JOIN device d ON d.id = r.device_id"
            f" WHERE d.code = '{device}') s WHERE s.run = 1800 AND s.good = 7",
            1,
        )
        # Its state is part of the worker's health, its figures of the worker's metrics.
        code, health = await get_health(worker.metrics.health_port or 0)
        assert code == 200
        assert health["status"] == "ok"
        assert health["rollups"]["consecutive_failures"] == 0
        assert health["rollups"]["runs_ok"] >= 1
        url = f"http://127.0.0.1:{worker.metrics.health_port}/metrics"
        with await asyncio.to_thread(urllib.request.urlopen, url, timeout=5) as response:
            assert b"zhizao_rollup_device_hours_total" in response.read()
    finally:
        publisher.close()
        await worker.close()
