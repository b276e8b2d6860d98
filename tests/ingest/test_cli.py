"""``zhizao ingest dead-letters list|replay`` against a real database."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from tests.ingest.support import T0, Factory, register
from zhizao.cli.ingest import app
from zhizao.registry import Device, DeviceType, EdgeGateway
from zhizao.storage.connection import connect
from zhizao.storage.deadletters import DeadLetterRow, write_dead_letters
from zhizao.storage.registry import upsert_devices, upsert_edges
from zhizao.wire import data_topic


async def _setup(db_url: str) -> Factory:
    a, _ = await register(db_url)
    point = {"device": "LATE-1", "ts": T0, "kind": "metric", "name": "t", "value": 1.0}
    conn = await connect(db_url)
    async with conn, conn.transaction():
        await write_dead_letters(
            conn,
            [
                DeadLetterRow(
                    data_topic(a.enterprise, a.edge),
                    f"device: 'LATE-1' is not in the ledger of enterprise {a.enterprise}",
                    json.dumps(point).encode(),
                    T0,
                    a.enterprise,
                    a.edge,
                    7,
                    0,
                )
            ],
        )
    return a


async def _add_device(db_url: str, factory: Factory) -> None:
    """The ledger's fix: the device, served by the edge that sent it (服务设备)."""
    conn = await connect(db_url)
    async with conn, conn.transaction():
        await upsert_devices(conn, [Device(enterprise=factory.enterprise, code="LATE-1",
                                           name="late", device_type=DeviceType.PRESS)])
        await upsert_edges(conn, [EdgeGateway(enterprise=factory.enterprise, edge_id=factory.edge,
                                              device_codes=(*factory.devices, "LATE-1"))])


def test_list_and_replay(db_url: str) -> None:
    factory = asyncio.run(_setup(db_url))
    runner = CliRunner()
    listed = runner.invoke(app, ["dead-letters", "list", "--db-url", db_url])
    assert listed.exit_code == 0, listed.output
    assert "LATE-1" in listed.output
    still = runner.invoke(app, ["dead-letters", "replay", "--db-url", db_url])
    assert still.exit_code == 0, still.output
    text = " ".join(still.output.split())  # rich wraps lines at the terminal width
    assert "replayed 0" in text
    assert "still failing 1" in text
    asyncio.run(_add_device(db_url, factory))
    done = runner.invoke(app, ["dead-letters", "replay", "--db-url", db_url])
    assert done.exit_code == 0, done.output
    assert "replayed 1 (1 new rows" in " ".join(done.output.split())
    empty = runner.invoke(app, ["dead-letters", "list", "--db-url", db_url])
    assert "LATE-1" not in empty.output


async def _letters_for_replay(db_url: str) -> tuple[Factory, list[int]]:
    """Three dead points of device LATE-1; the database will refuse the first one's value."""
    a, _ = await register(db_url)
    conn = await connect(db_url)
    async with conn, conn.transaction():
        for ts, value in ((T0, 5e9), (T0 + 1, 1.0), (T0 + 2, 2.0)):
            point = {"device": "LATE-1", "ts": ts, "kind": "metric", "name": "t", "value": value}
            await write_dead_letters(
                conn,
                [
                    DeadLetterRow(
                        data_topic(a.enterprise, a.edge),
                        f"device: 'LATE-1' is not in the ledger of enterprise {a.enterprise}",
                        json.dumps(point).encode(),
                        T0,
                        a.enterprise,
                        a.edge,
                        7,
                        0,
                    )
                ],
            )
        await conn.execute("ALTER TABLE metric_point ADD CONSTRAINT site_plausible"
                           " CHECK (value < 1e9)")
        cur = await conn.execute("SELECT id FROM dead_letter ORDER BY id")
        ids = [int(r[0]) for r in await cur.fetchall()]
    return a, ids


async def _drop_constraint(db_url: str) -> None:
    conn = await connect(db_url, autocommit=True)
    async with conn:
        await conn.execute("ALTER TABLE metric_point DROP CONSTRAINT site_plausible")


def test_replay_goes_on_past_a_letter_it_cannot_write(db_url: str) -> None:
    factory, (refused, *fine) = asyncio.run(_letters_for_replay(db_url))
    asyncio.run(_add_device(db_url, factory))
    runner = CliRunner()
    first = runner.invoke(app, ["dead-letters", "replay", "--db-url", db_url])
    text = " ".join(first.output.split())
    assert first.exit_code == 1, first.output
    assert "replayed 2 (2 new rows" in text
    assert "could not replay 1" in text
    assert f"{refused}: database: " in text
    assert "site_plausible" in text
    # The refused letter stays pending; once the database takes it, replay succeeds.
    again = runner.invoke(app, ["dead-letters", "replay", "--db-url", db_url])
    assert again.exit_code == 1, again.output
    assert "examined 1" in " ".join(again.output.split())
    asyncio.run(_drop_constraint(db_url))
    done = runner.invoke(app, ["dead-letters", "replay", "--db-url", db_url])
    assert done.exit_code == 0, done.output
    assert "replayed 1 (1 new rows" in " ".join(done.output.split())
    assert fine  # the two others were replayed by the first run
