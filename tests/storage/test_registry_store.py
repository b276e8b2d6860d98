"""Registry upserts: idempotent, partial updates, references the database checks."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from zhizao.codes import make_credit_code
from zhizao.ledger import Ledger, RowRef
from zhizao.regions import zhejiang_regions
from zhizao.registry import Cluster, Device, EdgeGateway, Enterprise
from zhizao.storage.connection import Conn
from zhizao.storage.registry import (
    device_refs,
    edge_owner,
    enterprise_summaries,
    store_ledger,
    upsert_regions,
)

ENT = make_credit_code("91330206MA2AGQ1E3")
OTHER = make_credit_code("91331003MA2DH5X7K")


def _ledger() -> Ledger:
    cluster = Cluster(
        code="NB-AUTO", name="宁波汽车零部件产业集群", region_code="330200", industry_code="C36"
    )
    ent = Enterprise(
        credit_code=ENT,
        name="宁波示范汽配有限公司",
        region_code="330206",
        industry_code="C3670",
        cluster_codes=("NB-AUTO",),
        above_designated_size=True,
        key_enterprise=True,
    )
    devices = [
        Device(
            enterprise=ENT,
            code="CNC-A01",
            name="立式加工中心 1",
            device_type="cnc_machine_tool",
            line_code="L1",
            is_nc=True,
            key_process=True,
            ideal_cycle_time_s=42.0,
            commissioned_on=date(2021, 3, 1),
        ),
        Device(
            enterprise=ENT,
            code="RB-01",
            name="焊接机器人 1",
            device_type="industrial_robot",
            line_code="L1",
            is_nc=True,
        ),
        Device(
            enterprise=ENT,
            code="AC-01",
            name="空压机",
            device_type="air_compressor",
            is_production_equipment=False,
        ),
    ]
    edge = EdgeGateway(enterprise=ENT, edge_id="nb-edge-01", device_codes=("CNC-A01", "RB-01"))
    return Ledger(
        clusters=[cluster], enterprises=[ent], devices=devices, edges=[edge], source="test"
    )


async def _seed_regions(conn: Conn) -> None:
    await upsert_regions(conn, zhejiang_regions())


async def test_storing_the_same_ledger_twice_changes_nothing(conn: Conn) -> None:
    await _seed_regions(conn)
    first = await store_ledger(conn, _ledger())
    await conn.commit()
    cur = await conn.execute("SELECT code, updated_at FROM device ORDER BY code")
    before = await cur.fetchall()

    second = await store_ledger(conn, _ledger())

    assert (first.devices.inserted, first.enterprises.inserted, first.edges.inserted) == (3, 1, 1)
    assert second.changed == 0
    assert second.devices.unchanged == 3
    cur = await conn.execute("SELECT code, updated_at FROM device ORDER BY code")
    assert await cur.fetchall() == before


async def test_a_later_file_with_only_a_decommission_date_updates_only_that(conn: Conn) -> None:
    await _seed_regions(conn)
    await store_ledger(conn, _ledger())
    # The later file names the device and its 停用日期 only; the parser fills the
    # model's other fields with defaults, and RowRef.fields says what was given.
    update = Device(
        enterprise=ENT,
        code="CNC-A01",
        name="CNC-A01",
        device_type="other",
        decommissioned_on=date(2026, 6, 30),
    )
    later = Ledger(devices=[update], source="later")
    later.origins[update] = RowRef(
        "设备台账", 2, frozenset({"enterprise", "code", "decommissioned_on"})
    )

    changes = await store_ledger(conn, later)

    assert (changes.devices.updated, changes.devices.inserted) == (1, 0)
    cur = await conn.execute(
        "SELECT name, device_type, is_nc, ideal_cycle_time_s, decommissioned_on"
        " FROM device WHERE code = 'CNC-A01'"
    )
    assert await cur.fetchone() == (
        "立式加工中心 1",
        "cnc_machine_tool",
        True,
        42.0,
        date(2026, 6, 30),
    )


async def test_unknown_region_is_a_row_error_and_the_rest_is_stored(conn: Conn) -> None:
    await _seed_regions(conn)
    ledger = _ledger()
    stranger = Enterprise(
        credit_code=OTHER, name="外省企业", region_code="110105", industry_code="C34"
    )
    ledger.enterprises.append(stranger)
    ledger.origins[stranger] = RowRef("企业", 3, frozenset({"credit_code", "region_code"}))
    orphan = Device(enterprise=OTHER, code="X1", name="x", device_type="press")
    ledger.devices.append(orphan)
    ledger.origins[orphan] = RowRef("设备台账", 9, frozenset({"enterprise", "code"}))

    changes = await store_ledger(conn, ledger)

    assert changes.enterprises.inserted == 1
    assert changes.devices.inserted == 3
    assert [(e.sheet, e.row, e.column) for e in ledger.errors] == [
        ("企业", 3, "region_code"),
        ("设备台账", 9, "enterprise"),
    ]
    assert "region is not in the registry" in ledger.errors[0].reason


async def test_lookups_used_by_ingest(conn: Conn) -> None:
    await _seed_regions(conn)
    await store_ledger(conn, _ledger())
    refs = await device_refs(conn, ENT)
    assert set(refs) == {"CNC-A01", "RB-01", "AC-01"}
    assert refs["CNC-A01"].ideal_cycle_time_s == 42.0
    owner = await edge_owner(conn, "nb-edge-01")
    assert owner is not None
    assert owner[1] == ENT
    assert await edge_owner(conn, "nobody") is None


async def test_summary_counts_devices_in_service(conn: Conn) -> None:
    await _seed_regions(conn)
    ledger = _ledger()
    ledger.devices.append(
        Device(
            enterprise=ENT,
            code="OLD-1",
            name="旧车床",
            device_type="cnc_machine_tool",
            commissioned_on=date(2010, 1, 1),
            decommissioned_on=date(2020, 1, 1),
        )
    )
    await store_ledger(conn, ledger)
    [summary] = await enterprise_summaries(conn)
    assert (
        summary.devices,
        summary.production_devices,
        summary.nc_devices,
        summary.served_devices,
        summary.edges,
    ) == (3, 2, 2, 2, 1)
    assert summary.clusters == "宁波汽车零部件产业集群"


async def test_database_rejects_a_device_code_twice_in_one_enterprise(conn: Conn) -> None:
    await _seed_regions(conn)
    await store_ledger(conn, _ledger())
    with pytest.raises(psycopg.errors.UniqueViolation):
        await conn.execute(
            "INSERT INTO device (enterprise_id, code, name, device_type)"
            " SELECT enterprise_id, code, 'dup', 'press' FROM device WHERE code = 'RB-01'"
        )


async def test_database_rejects_decommission_before_commission(conn: Conn) -> None:
    await _seed_regions(conn)
    await store_ledger(conn, _ledger())
    with pytest.raises(psycopg.errors.CheckViolation, match="device_service_dates_in_order"):
        await conn.execute(
            "UPDATE device SET decommissioned_on = '2020-01-01' WHERE code = 'CNC-A01'"
        )
