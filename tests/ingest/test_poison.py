"""Poison messages (issue 10): nothing one message holds stalls ingest or costs the others.

Each test sends, through a real Mosquitto to a real worker and PostgreSQL, messages the
database could not store as they are (a NUL in a name, a sequence number beyond bigint,
a number beyond double precision, JSON nested 100,000 deep, a value a constraint of the
site refuses, ...) between good ones, and checks what an operator would see: the good
points are stored, each poison is a dead letter with a precise reason and the
enterprise and edge of its topic, ``/healthz`` stays healthy, and a restarted worker
does not meet the poison again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from typer.testing import CliRunner

from tests.fix_mqtt import Mosquitto
from tests.ingest.support import (
    T0,
    Factory,
    Publisher,
    Worker,
    data_messages,
    get_health,
    letters,
    register,
    scalar,
    wait_for_count,
    worker_settings,
)
from zhizao.cli.ingest import app
from zhizao.storage.connection import connect
from zhizao.wire import data_topic, status_topic

BIGINT_MAX = 2**63 - 1


@contextlib.asynccontextmanager
async def running(
    db_url: str, broker: Mosquitto, **overrides: Any
) -> AsyncIterator[tuple[Worker, Publisher]]:
    worker = Worker(worker_settings(db_url, broker.url, health_port=0, **overrides))
    await worker.connected()
    publisher = Publisher(broker.url, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    try:
        yield worker, publisher
    finally:
        publisher.close()
        await worker.close()


def batch(f: Factory, seq: int, points: list[dict[str, Any]], **envelope: Any) -> bytes:
    document = {"v": 1, "enterprise": f.enterprise, "edge": f.edge, "seq": seq, "sent_at": T0,
                "points": points} | envelope
    return json.dumps(document, ensure_ascii=False).encode()


def metric(device: str, ts: int, name: str = "temp", value: Any = 1.0) -> dict[str, Any]:
    return {"device": device, "ts": ts, "kind": "metric", "name": name, "value": value}


def status(f: Factory, **fields: Any) -> bytes:
    document = {"v": 1, "enterprise": f.enterprise, "edge": f.edge, "status": "online",
                "ts": T0} | fields
    return json.dumps(document, ensure_ascii=False).encode()


async def healthy(worker: Worker) -> bool:
    code, body = await get_health(worker.metrics.health_port or 0)
    return code == 200 and bool(body["database_ok"]) and not worker.task.done()


async def test_a_nul_in_a_point_name_costs_that_point_and_stalls_nothing(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, _ = await register(db_url)
    dev = a.devices[0]
    poison = batch(a, 0, [metric(dev, T0), metric(dev, T0 + 1, "temp\x00x"), metric(dev, T0 + 2)])
    topic = data_topic(a.enterprise, a.edge)
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(
            publisher.publish_all, [(topic, poison), *data_messages(a, [1, 2], 5)]
        )
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 2 + 10, within=60)
        [letter] = await letters(db_url)
        assert letter.point_index == 1
        assert letter.reason.startswith("contract: points.1.name:"), letter.reason
        assert "control character" in letter.reason
        assert (letter.enterprise, letter.edge, letter.seq) == (a.enterprise, a.edge, 0)
        assert await healthy(worker)
    # The same session again: the poison was acknowledged, so it does not come back.
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(publisher.publish_all, data_messages(a, [3], 5))
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 17, within=60)
        assert len(await letters(db_url)) == 1
        assert worker.metrics.messages_received_count == 1
        assert await healthy(worker)


async def test_sequence_numbers_beyond_bigint_are_dead_letters(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, _ = await register(db_url)
    dev = a.devices[0]
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(
            publisher.publish_all,
            [
                (data_topic(a.enterprise, a.edge), batch(a, 2**63, [metric(dev, T0)])),
                (data_topic(a.enterprise, a.edge), batch(a, BIGINT_MAX, [metric(dev, T0 + 1)])),
                (status_topic(a.enterprise, a.edge), status(a, last_seq=2**64)),
                *data_messages(a, [1], 3),
            ],
        )
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 1 + 3, within=60)
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 2, within=60)
        data, birth = await letters(db_url)
        assert data.reason.startswith("contract: seq: Input should be less than or equal to"
                                      f" {BIGINT_MAX}"), data.reason
        assert birth.reason.startswith("contract: last_seq: Input should be less than"), (
            birth.reason
        )
        for letter in (data, birth):
            assert (letter.enterprise, letter.edge, letter.point_index) == (
                a.enterprise, a.edge, None
            )
        # The largest number storage holds is an ordinary one.
        assert await scalar(db_url, "SELECT high_seq FROM edge_sequence") == BIGINT_MAX
        assert await healthy(worker)


async def test_control_characters_in_any_text_are_refused_by_the_contract(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, _ = await register(db_url)
    dev = a.devices[0]
    topic = data_topic(a.enterprise, a.edge)
    state = {"device": dev, "kind": "state", "name": "state", "value": "RUNNING"}
    event = {"device": dev, "kind": "event", "name": "alarm", "value": "E-12"}
    online = {"device": dev, "kind": "event", "name": "connectivity", "value": "online"}
    names = "must not contain control characters"
    texts = f"{names} other than tab, line feed, carriage return"
    # (bad point at index 1, the reason of its dead letter after "contract: points.1.")
    bad_points: list[tuple[dict[str, Any], str]] = [
        (metric(dev, 0, "temp\x00"), f"name: {names}"),
        (metric(dev, 0, "temp\x1b[31m"), f"name: {names}"),
        (state | {"raw": "Exec\x00uting"}, f"raw: {texts}"),
        (state | {"reason": "stop\x00"}, f"reason: {texts}"),
        (event | {"name": "alarm\x00"}, f"name: {names}"),
        (event | {"value": "E-12\x00"}, f"value: {texts}"),
        (event | {"value": "E-12\x07"}, f"value: {texts}"),
        (online | {"reason": "lost\x00"}, f"reason: {texts}"),
        # The offending key is named, escaped so that the reason itself can be stored.
        (event | {"note\x00": 1}, "note\\x00: Extra inputs are not permitted"),
    ]
    messages = []
    for seq, (bad, _) in enumerate(bad_points):
        good = metric(dev, T0 + seq * 10)
        messages.append((topic, batch(a, seq, [good, bad | {"ts": T0 + seq * 10 + 1}])))
    status_topic_a = status_topic(a.enterprise, a.edge)
    messages += [
        (status_topic_a, status(a, reason="boot\x00")),
        (status_topic_a, status(a, software="zhizao\x00")),
        (topic, batch(a, 50, [metric(dev, T0 + 500)], enterprise=a.enterprise[:17] + "\x00")),
    ]
    # Text may hold tabs and line breaks, and names anything but control characters.
    sql_name = "temp'); DROP TABLE metric_point; --"
    fine = [
        metric(dev, T0 + 600, sql_name, 2.5),
        state | {"ts": T0 + 601, "reason": "line 1\nline 2\tcol", "raw": "Ausführung 执行"},
    ]
    messages.append((topic, batch(a, 60, fine)))
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(publisher.publish_all, messages)
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", len(bad_points) + 3,
                             within=60)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", len(bad_points) + 1)
        found = await letters(db_url)
        points = sorted((x for x in found if x.point_index is not None), key=lambda x: x.seq or 0)
        assert [(x.seq, x.point_index) for x in points] == [(s, 1) for s in range(len(bad_points))]
        for letter, (_, reason) in zip(points, bad_points, strict=True):
            assert letter.reason == f"contract: points.1.{reason}"
        whole = [x for x in found if x.point_index is None]
        assert sorted(x.reason.split(":")[1].strip() for x in whole) == [
            "enterprise", "reason", "software"
        ]
        assert all((x.enterprise, x.edge) == (a.enterprise, a.edge) for x in found)
        assert await scalar(
            db_url, "SELECT count(*) FROM metric_point p JOIN metric_name n ON n.id = p.metric_id"
            " WHERE n.name = %s", sql_name
        ) == 1
        assert await scalar(db_url, "SELECT reason FROM state_change") == "line 1\nline 2\tcol"
        assert await healthy(worker)


async def test_lone_surrogates_cost_only_their_point(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, _ = await register(db_url)
    dev = a.devices[0]
    topic = data_topic(a.enterprise, a.edge)
    good = json.dumps(metric(dev, T0))

    def raw_batch(seq: int, bad: str) -> bytes:
        # JSON text, since json.dumps would not write a lone surrogate.
        return (
            f'{{"v":1,"enterprise":"{a.enterprise}","edge":"{a.edge}","seq":{seq},'
            f'"sent_at":{T0},"points":[{good.replace(str(T0), str(T0 + seq * 10))},{bad}]}}'
        ).encode()

    point = f'"device":"{dev}","ts":{T0 + 5}'
    messages = [
        (topic, raw_batch(0, f'{{{point},"kind":"metric","name":"t\\ud800","value":1}}')),
        (topic, raw_batch(1, f'{{{point},"kind":"metric","name":"t","value":1,"\\udc00x":1}}')),
        (topic, raw_batch(2, f'{{{point},"kind":"state","name":"state","value":"IDLE",'
                             f'"raw":"\\udfff"}}')),
        (status_topic(a.enterprise, a.edge),
         status(a).replace(b'"online"', b'"online","reason":"\\ud800"')),
    ]
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(publisher.publish_all, messages)
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 4, within=60)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 3)
        found = await letters(db_url)
        assert [(x.seq, x.point_index) for x in found if x.point_index is not None] == [
            (0, 1), (1, 1), (2, 1)
        ]
        reasons = [x.reason for x in found]
        assert reasons[0].startswith("contract: points.1.name:"), reasons[0]
        assert reasons[1].startswith("contract: points.1: Input should be a valid string"), (
            reasons[1]
        )
        assert reasons[2].startswith("contract: points.1.raw:"), reasons[2]
        # A status is read in one pass, whose JSON reader names no field for it.
        assert reasons[3].startswith("contract: payload: Invalid JSON"), reasons[3]
        # A point's dead letter is JSON that replay can read back.
        assert json.loads(found[0].payload)["name"] == "t\ud800"
        assert await healthy(worker)


async def test_numbers_beyond_what_storage_holds_cost_only_their_point(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, _ = await register(db_url)
    dev = a.devices[0]
    count = {"device": dev, "kind": "count", "name": "good"}
    points = [
        metric(dev, T0, value=10**400),
        metric(dev, T0 + 1, value=-(10**309)),
        metric(dev, T0 + 2, value=10**308),  # within double precision: stored
        count | {"ts": T0 + 3, "value": 10**400},
        count | {"ts": T0 + 4, "value": 2**31},
        count | {"ts": T0 + 5, "value": 2**31 - 1},
    ]
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(
            publisher.publish_all, [(data_topic(a.enterprise, a.edge), batch(a, 0, points))]
        )
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 4, within=60)
        assert await scalar(db_url, "SELECT value FROM metric_point") == 1e308
        assert await scalar(db_url, "SELECT quantity FROM production_count") == 2**31 - 1
        found = await letters(db_url)
        assert [x.point_index for x in found] == [0, 1, 3, 4]
        assert "double precision" in found[0].reason
        assert found[0].reason.startswith("contract: points.0.value:")
        assert found[2].reason.startswith("value: count increment"), found[2].reason
        assert await healthy(worker)


async def test_deep_nesting_is_refused_by_the_contract(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    a, _ = await register(db_url)
    topic = data_topic(a.enterprise, a.edge)
    deep = b"[" * 100_000 + b"]" * 100_000
    in_a_point = batch(a, 0, [metric(a.devices[0], T0, value="X")]).replace(b'"X"', deep)
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(
            publisher.publish_all,
            [
                (topic, deep),
                (topic, in_a_point),
                (status_topic(a.enterprise, a.edge), status(a, reason="X").replace(b'"X"', deep)),
                *data_messages(a, [1], 4),
            ],
        )
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 3, within=60)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 4)
        for letter in await letters(db_url):
            assert letter.reason.startswith("contract:"), letter.reason
            assert "nest" in letter.reason, letter.reason
            assert (letter.enterprise, letter.edge) == (a.enterprise, a.edge)
        assert await healthy(worker)


async def _execute(db_url: str, *statements: str) -> None:
    conn = await connect(db_url, autocommit=True)
    async with conn:
        for statement in statements:
            await conn.execute(statement.encode())


async def test_a_value_the_database_refuses_costs_only_that_point(
    db_url: str, own_mosquitto: Mosquitto
) -> None:
    """A site's own rule in the database (here a CHECK constraint and a trigger that
    raises) refuses some values: those points are dead letters with the database's
    reason, the other points of their messages are stored."""
    a, _ = await register(db_url)
    await _execute(
        db_url,
        "ALTER TABLE metric_point ADD CONSTRAINT site_plausible CHECK (value < 1e9)",
        "ALTER TABLE edge_status ADD CONSTRAINT site_reason CHECK (reason <> 'refuse me')",
        """CREATE FUNCTION site_rule() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF NEW.value = 'poison' THEN RAISE EXCEPTION 'site rule: no poison events'; END IF;
               RETURN NEW;
           END $$""",
        "CREATE TRIGGER site_rule BEFORE INSERT ON device_event FOR EACH ROW"
        " EXECUTE FUNCTION site_rule()",
    )
    dev = a.devices
    topic = data_topic(a.enterprise, a.edge)
    # 300 metric points take the COPY path; two of them are refused.
    large = [metric(dev[i % 4], T0 + i // 4, value=5e9 if i in (7, 250) else float(i))
             for i in range(300)]
    small = [
        metric(dev[0], T0 + 1000, value=1.0),
        metric(dev[0], T0 + 1001, value=2e9),
        {"device": dev[0], "ts": T0 + 1002, "kind": "event", "name": "alarm", "value": "poison"},
        {"device": dev[0], "ts": T0 + 1003, "kind": "event", "name": "alarm", "value": "E-1"},
    ]
    async with running(db_url, own_mosquitto) as (worker, publisher):
        await asyncio.to_thread(
            publisher.publish_all,
            [
                (topic, batch(a, 0, large)),
                (topic, batch(a, 1, small)),
                (status_topic(a.enterprise, a.edge), status(a, reason="refuse me")),
                *data_messages(a, [2], 4),
            ],
        )
        await wait_for_count(db_url, "SELECT count(*) FROM dead_letter", 5, within=60)
        await wait_for_count(db_url, "SELECT count(*) FROM metric_point", 298 + 1 + 4)
        assert await scalar(db_url, "SELECT count(*) FROM device_event") == 1
        found = await letters(db_url)
        by_point = {(x.seq, x.point_index): x for x in found if x.point_index is not None}
        assert sorted(by_point) == [(0, 7), (0, 250), (1, 1), (1, 2)]
        for key in ((0, 7), (0, 250), (1, 1)):
            assert by_point[key].reason.startswith("database: "), by_point[key].reason
            assert "site_plausible" in by_point[key].reason
        assert by_point[1, 2].reason.startswith("database: site rule: no poison events")
        assert json.loads(by_point[0, 250].payload)["value"] == 5e9
        [whole] = [x for x in found if x.point_index is None]
        assert whole.reason.startswith("database: "), whole.reason
        assert "site_reason" in whole.reason
        assert all((x.enterprise, x.edge) == (a.enterprise, a.edge) for x in found)
        assert await healthy(worker)
    # An operator finds them by enterprise.
    listed = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["dead-letters", "list", "--db-url", db_url, "--enterprise", a.enterprise],
    )
    assert listed.exit_code == 0, listed.output
    assert " ".join(listed.output.split()).count("database:") == 5

