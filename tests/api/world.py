"""A small province for the API tests: two cities, two clusters, three enterprises,
and one user per role (plus one with no grants).

    浙江省 330000
    ├── 宁波市 330200 ── 海曙区 330203
    │     ├── NB1 (宁波模具产业集群 NB-MOLD, 规上, 重点)  line  L1; devices M01 M02 M03
    │     │                                             (M02 not NC, M03 not production)
    │     └── NB2 (no cluster)                             line  L1; devices P01 P02
    └── 温州市 330300 ── 鹿城区 330302
          └── WZ  (温州鞋业产业集群 WZ-SHOE)                 line  L1; devices S01 S02

The database is seeded once per test session and copied for every test (see
conftest), so user ids, and therefore access tokens, are the same in every copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from zhizao.access import Grant, Role
from zhizao.codes import make_credit_code
from zhizao.ledger import Ledger
from zhizao.registry import Cluster, Device, DeviceType, EdgeGateway, Enterprise, Region

NB1 = make_credit_code("91330203MA2NB0001")
NB2 = make_credit_code("91330203MA2NB0002")
WZ = make_credit_code("91330302MA2WE0001")
NB_MOLD = "NB-MOLD"
WZ_SHOE = "WZ-SHOE"
PASSWORD = "correct-horse-battery"  # noqa: S105 - a test account's password


def ledger() -> Ledger:
    regions = [
        Region(code="330000", name="浙江省"),
        Region(code="330200", name="宁波市"),
        Region(code="330203", name="海曙区"),
        Region(code="330300", name="温州市"),
        Region(code="330302", name="鹿城区"),
    ]
    clusters = [
        Cluster(code=NB_MOLD, name="宁波模具产业集群", region_code="330203", industry_code="C35"),
        Cluster(code=WZ_SHOE, name="温州鞋业产业集群", region_code="330302", industry_code="C19"),
    ]
    enterprises = [
        Enterprise(
            credit_code=NB1,
            name="宁波甲模具有限公司",
            region_code="330203",
            industry_code="C35",
            cluster_codes=(NB_MOLD,),
            above_designated_size=True,
            key_enterprise=True,
        ),
        Enterprise(
            credit_code=NB2, name="宁波乙机械有限公司", region_code="330203", industry_code="C34"
        ),
        Enterprise(
            credit_code=WZ,
            name="温州丙鞋业有限公司",
            region_code="330302",
            industry_code="C19",
            cluster_codes=(WZ_SHOE,),
        ),
    ]

    def dev(ent: str, code: str, *, production: bool = True, nc: bool = True) -> Device:
        return Device(
            enterprise=ent,
            code=code,
            name=f"设备{code}",
            device_type=DeviceType.CNC_MACHINE_TOOL,
            line_code="L1",
            line_name="一号线",
            is_production_equipment=production,
            is_nc=nc,
            ideal_cycle_time_s=30.0,
        )

    devices = [
        dev(NB1, "M01"),
        dev(NB1, "M02", nc=False),
        dev(NB1, "M03", production=False),
        dev(NB2, "P01"),
        dev(NB2, "P02"),
        dev(WZ, "S01"),
        dev(WZ, "S02"),
    ]
    edges = [
        EdgeGateway(enterprise=NB1, edge_id="edge-nb1", device_codes=("M01", "M02", "M03")),
        EdgeGateway(enterprise=NB2, edge_id="edge-nb2", device_codes=("P01", "P02")),
        EdgeGateway(enterprise=WZ, edge_id="edge-wz", device_codes=("S01", "S02")),
    ]
    return Ledger(
        regions=regions, clusters=clusters, enterprises=enterprises, devices=devices, edges=edges
    )


@dataclass(frozen=True)
class Persona:
    username: str
    grants: tuple[Grant, ...]


#: One user per role, named for what the tests say of them.
PERSONAS: dict[str, Persona] = {
    p.username: p
    for p in (
        Persona("admin", (Grant(Role.ADMIN),)),
        Persona("eng_nb1", (Grant(Role.ENTERPRISE_ENGINEER, NB1),)),
        Persona("viewer_nb1", (Grant(Role.ENTERPRISE_VIEWER, NB1),)),
        Persona("op_nb_mold", (Grant(Role.CLUSTER_OPERATOR, NB_MOLD),)),
        Persona("analyst_ningbo", (Grant(Role.REGIONAL_ANALYST, "330200"),)),
        Persona("analyst_zj", (Grant(Role.REGIONAL_ANALYST, "330000"),)),
        Persona("analyst_lucheng", (Grant(Role.REGIONAL_ANALYST, "330302"),)),
        Persona("nobody", ()),
    )
}

#: Which enterprises each persona's scope holds (what the matrix expects).
SEES: dict[str, frozenset[str]] = {
    "admin": frozenset({NB1, NB2, WZ}),
    "eng_nb1": frozenset({NB1}),
    "viewer_nb1": frozenset({NB1}),
    "op_nb_mold": frozenset({NB1}),
    "analyst_ningbo": frozenset({NB1, NB2}),
    "analyst_zj": frozenset({NB1, NB2, WZ}),
    "analyst_lucheng": frozenset({WZ}),
    "nobody": frozenset(),
}
#: Enterprises whose raw telemetry each persona may read.
RAW: dict[str, frozenset[str]] = {
    "admin": frozenset({NB1, NB2, WZ}),
    "eng_nb1": frozenset({NB1}),
    "viewer_nb1": frozenset({NB1}),
}
#: Enterprises whose registry each persona may change (below the enterprise).
WRITES: dict[str, frozenset[str]] = {
    "admin": frozenset({NB1, NB2, WZ}),
    "eng_nb1": frozenset({NB1}),
}
