"""Registry upserts: idempotent, partial updates, references the database checks."""

from __future__ import annotations

import hashlib
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


# ------------------------------------------------------------------ lines and sites by name


def _named(code: str, **places: str) -> Device:
    return Device(enterprise=ENT, code=code, name=code, device_type="press", **places)


def _file(*devices: Device) -> Ledger:
    ledger = Ledger(devices=list(devices), source="names")
    for row, dev in enumerate(devices, start=2):
        given = {"enterprise", "code", "name", "device_type", "line_code", "site_code"}
        ledger.origins[dev] = RowRef("设备台账", row, frozenset(given))
    return ledger


async def _places(conn: Conn) -> list[tuple[object, ...]]:
    cur = await conn.execute(
        "SELECT d.code, s.code, s.name, l.code, l.name FROM device d"
        " LEFT JOIN site s ON s.id = d.site_id LEFT JOIN line l ON l.id = d.line_id"
        " ORDER BY d.code"
    )
    return list(await cur.fetchall())


def _derived(prefix: str, name: str) -> str:
    # The rule of docs/registry-import.md, computed here on its own.
    return f"{prefix}-{hashlib.sha256(name.encode()).hexdigest()[:8].upper()}"


async def test_lines_named_without_code_get_one_stable_code(conn: Conn) -> None:
    await _seed_regions(conn)
    await store_ledger(conn, _ledger())
    ledger = _file(
        # The named-only row comes first; the row giving the code teaches it anyway.
        _named("P-1", line_name="三号线", site_name="冲压车间"),
        _named("P-2", line_code="L3", line_name="三号线", site_name="冲压车间"),
        _named("P-3", line_name="装配二线"),
    )

    changes = await store_ledger(conn, ledger)

    assert await _places(conn) == [
        ("AC-01", None, None, None, None),
        ("CNC-A01", None, None, "L1", "L1"),
        ("P-1", _derived("S", "冲压车间"), "冲压车间", "L3", "三号线"),
        ("P-2", _derived("S", "冲压车间"), "冲压车间", "L3", "三号线"),
        ("P-3", None, None, _derived("L", "装配二线"), "装配二线"),
        ("RB-01", None, None, "L1", "L1"),
    ]
    assert [(p.kind, p.code, p.name, p.derived) for p in changes.new_places] == [
        ("site", _derived("S", "冲压车间"), "冲压车间", True),
        ("line", "L3", "三号线", False),
        ("line", _derived("L", "装配二线"), "装配二线", True),
    ]

    # Storing the same file again finds every line and site by its name.
    cur = await conn.execute(
        "SELECT id, code, name FROM line UNION ALL SELECT id, code, name FROM site"
    )
    before = sorted(await cur.fetchall())
    again = await store_ledger(conn, _file(*ledger.devices))
    cur = await conn.execute(
        "SELECT id, code, name FROM line UNION ALL SELECT id, code, name FROM site"
    )
    assert sorted(await cur.fetchall()) == before
    assert again.new_places == []
    assert again.changed == 0


async def test_a_name_renames_the_line_of_a_code_and_a_code_adopts_a_named_line(
    conn: Conn,
) -> None:
    await _seed_regions(conn)
    await store_ledger(conn, _ledger())  # line L1, named L1 (only the code was given)
    await store_ledger(conn, _file(_named("P-1", line_name="装配二线")))
    cur = await conn.execute("SELECT id FROM line WHERE name = '装配二线'")
    (named_id,) = await cur.fetchone() or (None,)

    later = _file(
        _named("CNC-A01", line_code="L1", line_name="一号线"),
        _named("P-1", line_code="ZP2", line_name="装配二线"),
    )
    await store_ledger(conn, later)

    cur = await conn.execute("SELECT id, code, name FROM line ORDER BY code")
    lines = await cur.fetchall()
    assert [(code, name) for _, code, name in lines] == [("L1", "一号线"), ("ZP2", "装配二线")]
    assert [pk for pk, code, _ in lines if code == "ZP2"] == [named_id]  # the same line


async def test_an_unregistered_cluster_costs_the_membership_not_the_enterprise(
    conn: Conn,
) -> None:
    await _seed_regions(conn)
    ledger = _ledger()
    ent = ledger.enterprises[0]
    stray = ent.model_copy(update={"cluster_codes": ("NB-AUTO", "NOBODY")})
    ledger.enterprises = [stray]
    ledger.origins[stray] = RowRef(
        "企业", 3, frozenset({"credit_code", "cluster_codes"}), {"cluster_codes": "所属产业集群"}
    )

    changes = await store_ledger(conn, ledger)

    assert changes.enterprises.inserted == 1
    assert ledger.errors == []
    assert [(w.sheet, w.row, w.column, w.value) for w in ledger.warnings] == [
        ("企业", 3, "所属产业集群", "NOBODY")
    ]
    assert ledger.warnings[0].reason.startswith("cluster is not in the registry")
    cur = await conn.execute(
        "SELECT c.code FROM enterprise_cluster ec JOIN cluster c ON c.id = ec.cluster_id"
    )
    assert await cur.fetchall() == [("NB-AUTO",)]
