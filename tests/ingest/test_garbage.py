"""Garbage interleaved with good traffic: good points stored, bad ones dead-lettered, precisely."""

from __future__ import annotations

import asyncio
import json
import time

from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    ENT_B,
    T0,
    Publisher,
    Worker,
    batch_payload,
    register,
    scalar,
    wait_for_count,
    worker_settings,
)
from zhizao.storage.connection import connect
from zhizao.wire import data_topic


def _batch(enterprise: str, edge: str, seq: int, points: list[dict[str, object]]) -> bytes:
    return json.dumps(
        {"v": 1, "enterprise": enterprise, "edge": edge, "seq": seq, "sent_at": T0,
         "points": points}
    ).encode()


async def test_garbage_never_blocks_good_points(db_url: str, own_mosquitto: Mosquitto) -> None:
    a, b = await register(db_url)
    worker = Worker(worker_settings(db_url, own_mosquitto.url))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    topic = data_topic(a.enterprise, a.edge)
    dev = a.devices[0]
    now = int(time.time() * 1000)

    def metric(ts: int, value: object, device: str = dev) -> dict[str, object]:
        return {"device": device, "ts": ts, "kind": "metric", "name": "temp", "value": value}

    seq = 100
    messages: list[tuple[str, bytes]] = []
    good_points = 0
    for round_ in range(5):
        base = T0 + round_ * 10_000
        good = batch_payload(a, seq, 20, t0=base)
        messages.append((topic, good))
        good_points += 20
        seq += 1
        messages += [
            (topic, b"{not json"),
            (topic, json.dumps({"v": 2, "enterprise": a.enterprise, "edge": a.edge, "seq": seq,
                                "sent_at": T0, "points": []}).encode()),
            (topic, b"[" + b"1," * (2 * 1024 * 1024 + 10) + b"1]"),
            # edge-a publishing as enterprise B, on B's topic
            (data_topic(ENT_B, a.edge), _batch(ENT_B, a.edge, seq, [metric(base, 1.0)])),
            # an edge nobody registered
            (data_topic(a.enterprise, "ghost-edge"),
             _batch(a.enterprise, "ghost-edge", seq, [metric(base, 1.0)])),
        ]
        # one message, good and bad points mixed: 4 good, 6 bad
        mixed = [
            metric(base + 1, 1.0),
            metric(base + 2, 2.0, device="GHOST-01"),  # unknown device
            metric(base + 3, 3.0, device=b.devices[0]),  # enterprise B's device
            metric(base + 4, float("nan")),
            metric(base + 5, float("inf")),
            metric(now + 2 * 86_400_000, 6.0),  # two days ahead
            metric(915_148_800_000, 7.0),  # 1999-01-01
            metric(base + 8, 8.0),
            {"device": dev, "ts": base + 9, "kind": "count", "name": "good", "value": 3},
            {"device": dev, "ts": base + 10, "kind": "state", "name": "state", "value": "RUNNING"},
        ]
        messages.append((topic, _batch(a.enterprise, a.edge, seq, mixed)))
        good_points += 4
        seq += 1
    try:
        await asyncio.to_thread(publisher.publish_all, messages)
        await wait_for_count(
            db_url, "SELECT count(*) FROM dead_letter WHERE point_index IS NOT NULL", 5 * 6
        )
        await wait_for_count(
            db_url, "SELECT count(*) FROM dead_letter WHERE point_index IS NULL", 5 * 5
        )
        stored = await scalar(
            db_url,
            "SELECT (SELECT count(*) FROM metric_point) + (SELECT count(*) FROM production_count)"
            " + (SELECT count(*) FROM state_change)",
        )
        assert stored == good_points
        assert not worker.task.done()

        conn = await connect(db_url)
        async with conn:
            cur = await conn.execute(
                "SELECT reason FROM dead_letter WHERE point_index IS NULL AND seq IS DISTINCT FROM"
                " 999 ORDER BY id LIMIT 5"
            )
            reasons = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT point_index, reason FROM dead_letter WHERE point_index IS NOT NULL"
                " ORDER BY id LIMIT 6"
            )
            point_reasons = dict(await cur.fetchall())
            cur = await conn.execute("SELECT octet_length(payload) FROM dead_letter"
                                     " WHERE reason LIKE '%%exceeds%%' LIMIT 1")
            stored_huge = (await cur.fetchone() or [0])[0]
        assert reasons[0].startswith("contract: payload is not a JSON object")
        assert "contract version 2 is not supported" in reasons[1]
        assert "byte limit" in reasons[2]
        assert "exceeds" in reasons[2]
        wrong = f"edge 'edge-a' is registered to enterprise {a.enterprise}, not {ENT_B}"
        assert wrong in reasons[3]
        assert "edge 'ghost-edge' is not registered" in reasons[4]
        assert "'GHOST-01' is not in the ledger" in point_reasons[1]
        assert f"{b.devices[0]!r} is not in the ledger of enterprise {a.enterprise}" in (
            point_reasons[2]
        )
        assert "points.3.value" in point_reasons[3]
        assert "finite" in point_reasons[3]
        assert "points.4.value" in point_reasons[4]
        assert "finite" in point_reasons[4]
        assert "ahead of ingest's clock" in point_reasons[5]
        assert "points.6.ts" in point_reasons[6]
        assert "946684800000" in point_reasons[6]
        assert 0 < stored_huge <= 64 * 1024

        # The worker is still going: a later good message is stored.
        await asyncio.to_thread(
            publisher.publish_all, [(topic, batch_payload(a, seq, 7, t0=T0 + 999_000))]
        )
        await wait_for_count(
            db_url,
            "SELECT (SELECT count(*) FROM metric_point) + (SELECT count(*) FROM production_count)"
            " + (SELECT count(*) FROM state_change)",
            good_points + 7,
        )
    finally:
        publisher.close()
        await worker.close()
