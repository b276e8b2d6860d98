"""A small registry for KPI tests: one enterprise in Ningbo with a line, devices and an edge."""

from __future__ import annotations

from datetime import UTC, date, datetime

from zhizao.codes import make_credit_code
from zhizao.ledger import Ledger
from zhizao.regions import zhejiang_regions
from zhizao.registry import Cluster, Device, EdgeGateway, Enterprise
from zhizao.storage.connection import Conn
from zhizao.storage.facts import FactBatch, write_facts
from zhizao.storage.registry import store_ledger, upsert_regions

ENT = make_credit_code("91330206MA2AGQ1E3")  # 宁波 北仑, 规上 and 重点
ENT2 = make_credit_code("91330110MA27XK5L2")  # 杭州 余杭, neither
T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday; 08:00 in Shanghai


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def at(hours: float) -> int:
    """Epoch ms of T0 plus some hours."""
    return ms(T0) + round(hours * 3_600_000)


def ledger(
    *,
    commissioned: date | None = None,
    decommissioned: date | None = None,
) -> Ledger:
    cluster = Cluster(
        code="NB-AUTO", name="宁波汽车零部件产业集群", region_code="330200", industry_code="C36"
    )
    ents = [
        Enterprise(
            credit_code=ENT,
            name="宁波示范汽配有限公司",
            region_code="330206",
            industry_code="C3670",
            cluster_codes=("NB-AUTO",),
            above_designated_size=True,
            key_enterprise=True,
        ),
        Enterprise(
            credit_code=ENT2,
            name="杭州示范纺织有限公司",
            region_code="330110",
            industry_code="C1711",
        ),
    ]
    devices = [
        Device(
            enterprise=ENT,
            code="CNC-1",
            name="加工中心 1",
            device_type="cnc_machine_tool",
            line_code="L1",
            is_nc=True,
            key_process=True,
            ideal_cycle_time_s=1.0,
            commissioned_on=commissioned,
            decommissioned_on=decommissioned,
        ),
        Device(
            enterprise=ENT,
            code="CNC-2",
            name="加工中心 2",
            device_type="cnc_machine_tool",
            line_code="L1",
            is_nc=True,
            ideal_cycle_time_s=2.0,
        ),
        Device(
            enterprise=ENT,
            code="PRESS-1",
            name="冲压机",
            device_type="press",
            line_code="L2",
            key_process=True,
            ideal_cycle_time_s=10.0,
        ),
        Device(
            enterprise=ENT,
            code="AC-1",
            name="空压机",
            device_type="air_compressor",
            is_production_equipment=False,
        ),
        Device(enterprise=ENT2, code="LOOM-1", name="织机 1", device_type="loom", is_nc=True),
        Device(enterprise=ENT2, code="LOOM-2", name="织机 2", device_type="loom"),
    ]
    edges = [
        EdgeGateway(
            enterprise=ENT, edge_id="nb-edge-01", device_codes=("CNC-1", "CNC-2", "PRESS-1", "AC-1")
        ),
        EdgeGateway(enterprise=ENT2, edge_id="hz-edge-01", device_codes=("LOOM-1", "LOOM-2")),
    ]
    return Ledger(
        clusters=[cluster], enterprises=ents, devices=devices, edges=edges, source="kpi-test"
    )


async def seed(conn: Conn, **kwargs: date | None) -> dict[str, int]:
    """Store the ledger; device ids by code (and edge pks as ``edge:<id>``)."""
    await upsert_regions(conn, zhejiang_regions())
    await store_ledger(conn, ledger(**kwargs))
    cur = await conn.execute("SELECT code, id FROM device")
    ids = {str(c): int(i) for c, i in await cur.fetchall()}
    cur = await conn.execute("SELECT edge_id, id FROM edge_gateway")
    ids.update({f"edge:{e}": int(i) for e, i in await cur.fetchall()})
    await conn.commit()
    return ids


async def write(conn: Conn, batch: FactBatch) -> None:
    await write_facts(conn, batch)
    await conn.commit()
