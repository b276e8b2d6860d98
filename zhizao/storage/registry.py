"""The registry store: idempotent upserts of the domain model and look-ups by code.

Every upsert is ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <something differs>``,
so re-importing the same ledger changes no row (not even ``updated_at``) and the
counts returned tell a user exactly what a file changed. Sites and lines named by
devices are created on first mention with their code as name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from zhizao.codes import region_level, region_parent
from zhizao.errors import StorageError
from zhizao.registry import Cluster, Device, EdgeGateway, Enterprise, Region
from zhizao.storage.connection import Conn


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, inserted: bool | None) -> None:
        if inserted is None:
            self.unchanged += 1
        elif inserted:
            self.inserted += 1
        else:
            self.updated += 1


@dataclass
class RegistryChanges:
    regions: UpsertCounts = field(default_factory=UpsertCounts)
    clusters: UpsertCounts = field(default_factory=UpsertCounts)
    enterprises: UpsertCounts = field(default_factory=UpsertCounts)
    devices: UpsertCounts = field(default_factory=UpsertCounts)
    edges: UpsertCounts = field(default_factory=UpsertCounts)

    @property
    def changed(self) -> int:
        return sum(
            c.inserted + c.updated
            for c in (self.regions, self.clusters, self.enterprises, self.devices, self.edges)
        )


async def _upsert(conn: Conn, query: str, params: Sequence[object]) -> bool | None:
    """Run one upsert ending in ``RETURNING (xmax = 0)``: True inserted, False updated,
    None unchanged (the WHERE of DO UPDATE filtered the row out)."""
    cur = await conn.execute(query.encode(), params)
    row = await cur.fetchone()
    return None if row is None else bool(row[0])


async def upsert_regions(conn: Conn, regions: Iterable[Region]) -> UpsertCounts:
    counts = UpsertCounts()
    # Parents first, so the self-reference holds whatever order the caller used.
    for region in sorted(regions, key=lambda r: (region_level(r.code) != "province", r.code)):
        counts.add(
            await _upsert(
                conn,
                """
                INSERT INTO region (code, name, level, parent_code) VALUES (%s, %s, %s, %s)
                ON CONFLICT (code) DO UPDATE SET name = excluded.name
                WHERE region.name IS DISTINCT FROM excluded.name
                RETURNING (xmax = 0)
                """,
                (region.code, region.name, str(region.level), region_parent(region.code)),
            )
        )
    return counts


async def upsert_clusters(conn: Conn, clusters: Iterable[Cluster]) -> UpsertCounts:
    counts = UpsertCounts()
    for cluster in clusters:
        counts.add(
            await _upsert(
                conn,
                """
                INSERT INTO cluster (code, name, region_code, industry_code)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (code) DO UPDATE SET name = excluded.name,
                    region_code = excluded.region_code, industry_code = excluded.industry_code
                WHERE (cluster.name, cluster.region_code, cluster.industry_code)
                    IS DISTINCT FROM (excluded.name, excluded.region_code, excluded.industry_code)
                RETURNING (xmax = 0)
                """,
                (cluster.code, cluster.name, cluster.region_code, cluster.industry_code),
            )
        )
    return counts


async def upsert_enterprises(conn: Conn, enterprises: Iterable[Enterprise]) -> UpsertCounts:
    counts = UpsertCounts()
    for ent in enterprises:
        result = await _upsert(
            conn,
            """
            INSERT INTO enterprise (credit_code, name, region_code, industry_code,
                                    above_designated_size, key_enterprise, time_zone)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (credit_code) DO UPDATE SET name = excluded.name,
                region_code = excluded.region_code, industry_code = excluded.industry_code,
                above_designated_size = excluded.above_designated_size,
                key_enterprise = excluded.key_enterprise, time_zone = excluded.time_zone,
                updated_at = now()
            WHERE (enterprise.name, enterprise.region_code, enterprise.industry_code,
                   enterprise.above_designated_size, enterprise.key_enterprise,
                   enterprise.time_zone)
                IS DISTINCT FROM (excluded.name, excluded.region_code, excluded.industry_code,
                   excluded.above_designated_size, excluded.key_enterprise, excluded.time_zone)
            RETURNING (xmax = 0)
            """,
            (
                ent.credit_code,
                ent.name,
                ent.region_code,
                ent.industry_code,
                ent.above_designated_size,
                ent.key_enterprise,
                ent.time_zone,
            ),
        )
        links_changed = await _replace_clusters(conn, ent.credit_code, ent.cluster_codes)
        if result is None and links_changed:
            result = False
        counts.add(result)
    return counts


async def _replace_clusters(conn: Conn, credit_code: str, cluster_codes: Sequence[str]) -> bool:
    cur = await conn.execute(
        """
        WITH wanted AS (
            SELECT e.id AS enterprise_id, c.id AS cluster_id
            FROM enterprise e JOIN cluster c ON c.code = ANY(%(codes)s)
            WHERE e.credit_code = %(credit)s
        ), removed AS (
            DELETE FROM enterprise_cluster ec
            USING enterprise e
            WHERE ec.enterprise_id = e.id AND e.credit_code = %(credit)s
              AND ec.cluster_id NOT IN (SELECT cluster_id FROM wanted)
            RETURNING 1
        ), added AS (
            INSERT INTO enterprise_cluster (enterprise_id, cluster_id)
            SELECT enterprise_id, cluster_id FROM wanted
            ON CONFLICT DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM added)
        """,
        {"codes": list(cluster_codes), "credit": credit_code},
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def _ensure_named(conn: Conn, table: str, enterprise_id: int, code: str | None) -> int | None:
    if code is None:
        return None
    # ``table`` is one of two literals passed below, never input.
    cur = await conn.execute(
        f"INSERT INTO {table} (enterprise_id, code, name) VALUES (%s, %s, %s)"  # noqa: S608
        f" ON CONFLICT (enterprise_id, code) DO UPDATE SET code = excluded.code"
        f" RETURNING id",
        (enterprise_id, code, code),
    )
    row = await cur.fetchone()
    if row is None:  # RETURNING of an upsert always yields the row
        raise StorageError(f"{table} {code!r} was not stored")
    return int(row[0])


async def enterprise_ids(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT credit_code, id FROM enterprise")
    return {str(code): int(pk) for code, pk in await cur.fetchall()}


async def upsert_devices(conn: Conn, devices: Iterable[Device]) -> UpsertCounts:
    counts = UpsertCounts()
    ids = await enterprise_ids(conn)
    for dev in devices:
        enterprise_id = ids[dev.enterprise]
        site_id = await _ensure_named(conn, "site", enterprise_id, dev.site_code)
        line_id = await _ensure_named(conn, "line", enterprise_id, dev.line_code)
        counts.add(
            await _upsert(
                conn,
                """
                INSERT INTO device (enterprise_id, code, name, device_type, site_id, line_id,
                    is_production_equipment, is_nc, key_process, ideal_cycle_time_s,
                    commissioned_on, decommissioned_on)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (enterprise_id, code) DO UPDATE SET name = excluded.name,
                    device_type = excluded.device_type, site_id = excluded.site_id,
                    line_id = excluded.line_id,
                    is_production_equipment = excluded.is_production_equipment,
                    is_nc = excluded.is_nc, key_process = excluded.key_process,
                    ideal_cycle_time_s = excluded.ideal_cycle_time_s,
                    commissioned_on = excluded.commissioned_on,
                    decommissioned_on = excluded.decommissioned_on, updated_at = now()
                WHERE (device.name, device.device_type, device.site_id, device.line_id,
                       device.is_production_equipment, device.is_nc, device.key_process,
                       device.ideal_cycle_time_s, device.commissioned_on,
                       device.decommissioned_on)
                    IS DISTINCT FROM (excluded.name, excluded.device_type, excluded.site_id,
                       excluded.line_id, excluded.is_production_equipment, excluded.is_nc,
                       excluded.key_process, excluded.ideal_cycle_time_s,
                       excluded.commissioned_on, excluded.decommissioned_on)
                RETURNING (xmax = 0)
                """,
                (
                    enterprise_id,
                    dev.code,
                    dev.name,
                    str(dev.device_type),
                    site_id,
                    line_id,
                    dev.is_production_equipment,
                    dev.is_nc,
                    dev.key_process,
                    dev.ideal_cycle_time_s,
                    dev.commissioned_on,
                    dev.decommissioned_on,
                ),
            )
        )
    return counts


async def upsert_edges(conn: Conn, edges: Iterable[EdgeGateway]) -> UpsertCounts:
    counts = UpsertCounts()
    ids = await enterprise_ids(conn)
    for edge in edges:
        result = await _upsert(
            conn,
            """
            INSERT INTO edge_gateway (edge_id, enterprise_id, name) VALUES (%s, %s, %s)
            ON CONFLICT (edge_id) DO UPDATE SET enterprise_id = excluded.enterprise_id,
                name = excluded.name
            WHERE (edge_gateway.enterprise_id, edge_gateway.name)
                IS DISTINCT FROM (excluded.enterprise_id, excluded.name)
            RETURNING (xmax = 0)
            """,
            (edge.edge_id, ids[edge.enterprise], edge.name),
        )
        cur = await conn.execute(
            """
            WITH gw AS (SELECT id, enterprise_id FROM edge_gateway WHERE edge_id = %(edge)s),
            wanted AS (
                SELECT gw.id AS edge_pk, d.id AS device_id FROM gw
                JOIN device d ON d.enterprise_id = gw.enterprise_id AND d.code = ANY(%(codes)s)
            ), removed AS (
                DELETE FROM edge_device ed USING gw
                WHERE ed.edge_pk = gw.id
                  AND ed.device_id NOT IN (SELECT device_id FROM wanted)
                RETURNING 1
            ), added AS (
                INSERT INTO edge_device SELECT edge_pk, device_id FROM wanted
                ON CONFLICT DO NOTHING RETURNING 1
            )
            SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM added)
            """,
            {"edge": edge.edge_id, "codes": list(edge.device_codes)},
        )
        row = await cur.fetchone()
        if result is None and row and row[0]:
            result = False
        counts.add(result)
    return counts


@dataclass(frozen=True)
class DeviceRef:
    """What ingest needs to authorise and store a point of a device."""

    id: int
    enterprise_id: int
    ideal_cycle_time_s: float | None


async def device_refs(conn: Conn, credit_code: str) -> dict[str, DeviceRef]:
    """The devices of one enterprise by code."""
    cur = await conn.execute(
        """
        SELECT d.code, d.id, d.enterprise_id, d.ideal_cycle_time_s
        FROM device d JOIN enterprise e ON e.id = d.enterprise_id
        WHERE e.credit_code = %s
        """,
        (credit_code,),
    )
    return {
        str(code): DeviceRef(int(pk), int(ent), None if ict is None else float(ict))
        for code, pk, ent, ict in await cur.fetchall()
    }


async def edge_owner(conn: Conn, edge_id: str) -> tuple[int, str] | None:
    """(edge primary key, owning enterprise's credit code) of a registered edge."""
    cur = await conn.execute(
        """
        SELECT g.id, e.credit_code FROM edge_gateway g JOIN enterprise e ON e.id = g.enterprise_id
        WHERE g.edge_id = %s
        """,
        (edge_id,),
    )
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))
