"""A per-enterprise limit on distinct metric names, through a real worker and broker.

An edge that puts a serial number into its metric names would otherwise grow
``metric_name`` and every worker's cache without bound. Beyond the limit, points under
new names go to the dead letters with a reason naming the limit and the enterprise;
everything else of the same message is stored, and other enterprises are unaffected.
"""

from __future__ import annotations

import json

from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Factory,
    Publisher,
    Worker,
    letters,
    register,
    scalar,
    wait_for_count,
    worker_settings,
)
from zhizao.wire import data_topic

LIMIT = 3


def _message(f: Factory, seq: int, names: list[str]) -> tuple[str, bytes]:
    points = [
        {"device": f.devices[0], "ts": T0 + seq * 1000 + i, "kind": "metric", "name": name,
         "value": float(i)}
        for i, name in enumerate(names)
    ]  # fmt: skip
    points.append({"device": f.devices[1], "ts": T0 + seq * 1000, "kind": "count",
                   "name": "good", "value": 5})  # fmt: skip
    batch = {"v": 1, "enterprise": f.enterprise, "edge": f.edge, "seq": seq,
             "sent_at": T0 + seq * 1000, "points": points}  # fmt: skip
    return data_topic(f.enterprise, f.edge), json.dumps(batch).encode()


async def test_names_beyond_the_limit_are_dead_lettered_and_the_rest_is_stored(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, b = await register(db_url)
    worker = Worker(worker_settings(db_url, own_mosquitto.url, max_metric_names=LIMIT))
    await worker.connected()
    publisher = Publisher(own_mosquitto.url)
    try:
        publisher.publish_all([_message(a, 0, ["speed", "load"])])
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 2)
        # A third name fits; the fourth and fifth do not. Known names keep passing.
        publisher.publish_all([_message(a, 1, ["load", "temp", "serial-0001", "serial-0002"])])
        publisher.publish_all([_message(b, 0, ["serial-0001", "speed"])])
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 2)
        await wait_for_count(db_url, "SELECT count(*) FROM production_count", 3)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 2 + 2 + 2)
        dead = await letters(db_url)
        assert [(d.enterprise, d.seq, d.point_index) for d in dead] == [
            (a.enterprise, 1, 2),
            (a.enterprise, 1, 3),
        ]
        for letter, name in zip(dead, ["serial-0001", "serial-0002"], strict=True):
            assert letter.reason == (
                f"metric name {name!r} refused: enterprise {a.enterprise} already has 3"
                " distinct metric names, the limit (ZHIZAO_INGEST_MAX_METRIC_NAMES=3)"
            )
            assert json.loads(letter.payload)["name"] == name  # replayable once raised
        names = await scalar(db_url, "SELECT array_agg(name ORDER BY name) FROM metric_name")
        # serial-0002 never reached the table; serial-0001 did, for the other enterprise.
        assert names == ["load", "serial-0001", "speed", "temp"]
        per_enterprise = await scalar(
            db_url,
            "SELECT array_agg(e.credit_code || ':' || n.name ORDER BY e.credit_code, n.name)"
            " FROM enterprise_metric em JOIN enterprise e ON e.id = em.enterprise_id"
            " JOIN metric_name n ON n.id = em.metric_id",
        )
        assert per_enterprise == sorted(
            [f"{a.enterprise}:{n}" for n in ("load", "speed", "temp")]
            + [f"{b.enterprise}:{n}" for n in ("serial-0001", "speed")]
        )
        # The same worker, later: still refused without growing anything.
        publisher.publish_all([_message(a, 2, ["serial-0003", "speed"])])
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 3)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 7)
        assert await scalar(db_url, "SELECT count(*) FROM metric_name") == 4
        # A name the contract refuses costs its own point only and uses no room.
        publisher.publish_all([_message(b, 1, ["bad\x00name", "fresh"])])
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 4)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 8)
        last = (await letters(db_url))[-1]
        assert (last.enterprise, last.point_index) == (b.enterprise, 0)
        assert last.reason.startswith("contract: points.0.name"), last.reason
        assert await scalar(db_url, "SELECT count(*) FROM metric_name") == 5  # + fresh
    finally:
        publisher.close()
        await worker.close()
