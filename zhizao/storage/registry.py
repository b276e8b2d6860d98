"""The registry store: idempotent upserts of the domain model and look-ups by code.

Every upsert is ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <something differs>``,
so re-importing the same ledger changes no row (not even ``updated_at``) and the
counts returned tell a user exactly what a file changed.

Sites and lines are created on first mention by a device. A ledger gives a code
(产线编号 L3), a name (产线 三号线) or both. A name without a code finds the line
of that name (compared by :func:`zhizao.registry.name_key`) among the enterprise's
lines, or among the rows of the same file that give both, and only then gets
:func:`zhizao.registry.derived_code`: so a line keeps its code across imports,
whether or not later files carry the code column. A given name renames the line
of a given code; a code without a name leaves the name alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass, field
from typing import TypeVar

from psycopg import sql

from zhizao.codes import region_level, region_parent
from zhizao.errors import StorageError
from zhizao.ledger import Ledger, RowError
from zhizao.ledger import Table as LedgerTable
from zhizao.registry import (
    Cluster,
    Device,
    EdgeGateway,
    Enterprise,
    Region,
    derived_code,
    name_key,
)
from zhizao.storage.connection import Conn

M = TypeVar("M", Cluster, Enterprise, Device, EdgeGateway)


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


@dataclass(frozen=True)
class NewPlace:
    """A site or line an import created, with the code it got."""

    kind: str  # "site" or "line"
    enterprise: str  # credit code
    code: str
    name: str
    derived: bool  # the code was derived from the name (no code column or cell)


@dataclass
class RegistryChanges:
    regions: UpsertCounts = field(default_factory=UpsertCounts)
    clusters: UpsertCounts = field(default_factory=UpsertCounts)
    enterprises: UpsertCounts = field(default_factory=UpsertCounts)
    devices: UpsertCounts = field(default_factory=UpsertCounts)
    edges: UpsertCounts = field(default_factory=UpsertCounts)
    new_places: list[NewPlace] = field(default_factory=list)

    @property
    def stored(self) -> int:
        """Rows of the file now in the registry as the file says (new, updated or unchanged)."""
        return sum(
            c.inserted + c.updated + c.unchanged
            for c in (self.regions, self.clusters, self.enterprises, self.devices, self.edges)
        )

    @property
    def changed(self) -> int:
        return sum(
            c.inserted + c.updated
            for c in (self.regions, self.clusters, self.enterprises, self.devices, self.edges)
        )


async def _upsert(conn: Conn, query: str | sql.Composed, params: Sequence[object]) -> bool | None:
    """Run one upsert ending in ``RETURNING (xmax = 0)``: True inserted, False updated,
    None unchanged (the WHERE of DO UPDATE filtered the row out)."""
    cur = await conn.execute(query.encode() if isinstance(query, str) else query, params)
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


_ENTERPRISE_COLUMNS = (
    "name",
    "region_code",
    "industry_code",
    "above_designated_size",
    "key_enterprise",
    "time_zone",
)


def _set_clause(table: str, columns: Sequence[str]) -> sql.Composed:
    """``SET a = excluded.a, ... WHERE (t.a, ...) IS DISTINCT FROM (excluded.a, ...)``."""
    idents = [sql.Identifier(c) for c in columns]
    return sql.SQL("SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})").format(
        sets=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(i) for i in idents),
        old=sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(table), i) for i in idents),
        new=sql.SQL(", ").join(sql.SQL("excluded.{}").format(i) for i in idents),
    )


def _given(columns: Sequence[str], fields: Set[str] | None, renames: dict[str, str]) -> list[str]:
    """The columns a file spoke about (all of them when ``fields`` is None)."""
    if fields is None:
        return list(columns)
    inverse = {column: field for field, column in renames.items()}
    return [c for c in columns if inverse.get(c, c) in fields]


async def upsert_enterprises(
    conn: Conn,
    enterprises: Iterable[Enterprise],
    fields_of: Callable[[Enterprise], Set[str] | None] = lambda _: None,
) -> UpsertCounts:
    """Insert or update enterprises; an update touches only the columns in ``fields_of``."""
    counts = UpsertCounts()
    for ent in enterprises:
        columns = _given(_ENTERPRISE_COLUMNS, fields_of(ent), {})
        conflict = (
            _set_clause("enterprise", columns)
            if columns
            else sql.SQL("SET name = enterprise.name WHERE false")
        )
        query = sql.SQL(
            """
            INSERT INTO enterprise (credit_code, name, region_code, industry_code,
                                    above_designated_size, key_enterprise, time_zone)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (credit_code) DO UPDATE {conflict}
            RETURNING (xmax = 0)
            """
        ).format(conflict=conflict)
        result = await _upsert(
            conn,
            query,
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
        fields = fields_of(ent)
        if fields is None or "cluster_codes" in fields:
            links_changed = await _replace_clusters(conn, ent.credit_code, ent.cluster_codes)
            if result is None and links_changed:
                result = False
        if result is False:
            await conn.execute(
                "UPDATE enterprise SET updated_at = now() WHERE credit_code = %s",
                (ent.credit_code,),
            )
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


_PLACE_PREFIX = {"site": "S", "line": "L"}


class _Places:
    """Sites and lines of the enterprises an import touches, found or created once."""

    def __init__(self, conn: Conn, devices: Sequence[Device], ids: dict[str, int]) -> None:
        self.conn = conn
        self.new: list[NewPlace] = []
        self._ids: dict[tuple[str, int, str], int] = {}
        self._by_name: dict[tuple[str, int], dict[str, str]] = {}
        # Rows of this file that give both a code and a name teach the rows that
        # give only the name, whatever their order in the file.
        self._given: dict[tuple[str, int, str], str] = {}
        for dev in devices:
            for kind, code, name in (
                ("site", dev.site_code, dev.site_name),
                ("line", dev.line_code, dev.line_name),
            ):
                if code is not None and name is not None and dev.enterprise in ids:
                    self._given.setdefault((kind, ids[dev.enterprise], name_key(name)), code)

    async def _names(self, kind: str, enterprise_id: int) -> dict[str, str]:
        known = self._by_name.get((kind, enterprise_id))
        if known is None:
            # ``kind`` is one of two literals of this module, never input.
            cur = await self.conn.execute(
                f"SELECT code, name FROM {kind} WHERE enterprise_id = %s",  # noqa: S608
                (enterprise_id,),
            )
            known = {name_key(str(name)): str(code) for code, name in await cur.fetchall()}
            self._by_name[(kind, enterprise_id)] = known
        return known

    async def _adopt_derived(
        self, kind: str, enterprise_id: int, code: str, name: str, names: dict[str, str]
    ) -> tuple[object, ...] | None:
        """A line first imported by name alone, now given its code (产线编号 L3): the
        line takes the code and keeps its identity and its devices."""
        derived = derived_code(_PLACE_PREFIX[kind], name)
        if names.get(name_key(name)) != derived:
            return None
        cur = await self.conn.execute(
            f"UPDATE {kind} SET code = %s WHERE enterprise_id = %s AND code = %s"  # noqa: S608
            " RETURNING id, name",
            (code, enterprise_id, derived),
        )
        row = await cur.fetchone()
        self._ids.pop((kind, enterprise_id, derived), None)
        return None if row is None else tuple(row)

    async def id_of(
        self, kind: str, enterprise_id: int, credit: str, code: str | None, name: str | None
    ) -> int | None:
        names = await self._names(kind, enterprise_id)
        derived = False
        if code is None:
            if name is None:
                return None
            key = name_key(name)
            code = self._given.get((kind, enterprise_id, key)) or names.get(key)
            if code is None:
                code, derived = derived_code(_PLACE_PREFIX[kind], name), True
        cached = self._ids.get((kind, enterprise_id, code))
        if cached is not None:
            return cached
        cur = await self.conn.execute(
            f"SELECT id, name FROM {kind} WHERE enterprise_id = %s AND code = %s",  # noqa: S608
            (enterprise_id, code),
        )
        row = await cur.fetchone()
        if row is None and name is not None:
            row = await self._adopt_derived(kind, enterprise_id, code, name, names)
        if row is None:
            cur = await self.conn.execute(
                f"INSERT INTO {kind} (enterprise_id, code, name) VALUES (%s, %s, %s)"  # noqa: S608
                " RETURNING id",
                (enterprise_id, code, name or code),
            )
            row = await cur.fetchone()
            if row is None:  # RETURNING of an INSERT always yields the row
                raise StorageError(f"{kind} {code!r} was not stored")
            self.new.append(NewPlace(kind, credit, code, name or code, derived))
        elif name is not None and name_key(str(row[1])) != name_key(name):
            await self.conn.execute(
                f"UPDATE {kind} SET name = %s WHERE id = %s",  # noqa: S608
                (name, row[0]),
            )
        pk = int(row[0])
        self._ids[(kind, enterprise_id, code)] = pk
        names[name_key(name or code)] = code
        return pk


async def enterprise_ids(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT credit_code, id FROM enterprise")
    return {str(code): int(pk) for code, pk in await cur.fetchall()}


_DEVICE_COLUMNS = (
    "name",
    "device_type",
    "site_id",
    "line_id",
    "is_production_equipment",
    "is_nc",
    "key_process",
    "ideal_cycle_time_s",
    "commissioned_on",
    "decommissioned_on",
)
_DEVICE_RENAMES = {"site_code": "site_id", "line_code": "line_id"}


async def upsert_devices(
    conn: Conn,
    devices: Iterable[Device],
    fields_of: Callable[[Device], Set[str] | None] = lambda _: None,
    new_places: list[NewPlace] | None = None,
) -> UpsertCounts:
    """Insert or update devices; an update touches only the columns in ``fields_of``,
    so a file that only sets 停用日期 leaves the rest of each device as it was.
    Sites and lines created on the way are appended to ``new_places``."""
    counts = UpsertCounts()
    ids = await enterprise_ids(conn)
    devices = list(devices)
    places = _Places(conn, devices, ids)
    for dev in devices:
        enterprise_id = ids[dev.enterprise]
        site_id = await places.id_of(
            "site", enterprise_id, dev.enterprise, dev.site_code, dev.site_name
        )
        line_id = await places.id_of(
            "line", enterprise_id, dev.enterprise, dev.line_code, dev.line_name
        )
        columns = _given(_DEVICE_COLUMNS, fields_of(dev), _DEVICE_RENAMES)
        conflict = (
            _set_clause("device", columns)
            if columns
            else sql.SQL("SET name = device.name WHERE false")
        )
        query = sql.SQL(
            """
            INSERT INTO device (enterprise_id, code, name, device_type, site_id, line_id,
                is_production_equipment, is_nc, key_process, ideal_cycle_time_s,
                commissioned_on, decommissioned_on)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (enterprise_id, code) DO UPDATE {conflict}
            RETURNING (xmax = 0)
            """
        ).format(conflict=conflict)
        result = await _upsert(
            conn,
            query,
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
        if result is False:
            await conn.execute(
                "UPDATE device SET updated_at = now() WHERE enterprise_id = %s AND code = %s",
                (enterprise_id, dev.code),
            )
        counts.add(result)
    if new_places is not None:
        new_places.extend(places.new)
    return counts


async def upsert_edges(
    conn: Conn,
    edges: Iterable[EdgeGateway],
    fields_of: Callable[[EdgeGateway], Set[str] | None] = lambda _: None,
) -> UpsertCounts:
    """Insert or update gateways and the devices they serve; a file without the name
    or device columns leaves those as they were."""
    counts = UpsertCounts()
    ids = await enterprise_ids(conn)
    for edge in edges:
        given = fields_of(edge)
        columns = _given(("enterprise_id", "name"), given, {"enterprise": "enterprise_id"})
        query = sql.SQL(
            """
            INSERT INTO edge_gateway (edge_id, enterprise_id, name) VALUES (%s, %s, %s)
            ON CONFLICT (edge_id) DO UPDATE {conflict}
            RETURNING (xmax = 0)
            """
        ).format(conflict=_set_clause("edge_gateway", columns))
        result = await _upsert(conn, query, (edge.edge_id, ids[edge.enterprise], edge.name))
        if given is not None and "device_codes" not in given:
            counts.add(result)
            continue
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


async def known_codes(conn: Conn) -> tuple[set[str], set[str], set[str]]:
    """Credit codes, cluster codes and region codes the registry already holds."""
    cur = await conn.execute("SELECT credit_code FROM enterprise")
    enterprises = {str(r[0]) for r in await cur.fetchall()}
    cur = await conn.execute("SELECT code FROM cluster")
    clusters = {str(r[0]) for r in await cur.fetchall()}
    cur = await conn.execute("SELECT code FROM region")
    regions = {str(r[0]) for r in await cur.fetchall()}
    return enterprises, clusters, regions


async def cluster_names(conn: Conn) -> dict[str, str]:
    """Cluster code → name, so that a ledger may name a cluster instead of coding it."""
    cur = await conn.execute("SELECT code, name FROM cluster")
    return {str(code): str(name) for code, name in await cur.fetchall()}


Problem = tuple[str, object, str] | None  # (field, value, reason) or None when fine


def _keep(ledger: Ledger, models: Iterable[M], problem: Callable[[M], Problem]) -> list[M]:
    """The models without a problem; each problem becomes a RowError at the model's row."""
    kept: list[M] = []
    for model in models:
        found = problem(model)
        if found is None:
            kept.append(model)
            continue
        column, value, reason = found
        origin = ledger.origin(model)
        ledger.errors.append(
            RowError(
                ledger.source,
                origin.sheet if origin else "",
                origin.row if origin else 0,
                origin.headers.get(column, column) if origin else column,
                value,
                reason,
            )
        )
    return kept


async def _registered_clusters(
    conn: Conn, ledger: Ledger, enterprises: list[Enterprise]
) -> list[Enterprise]:
    """The enterprises with only memberships of clusters the registry holds.

    The parser resolves clusters when it is given the registry's; a ledger parsed
    without them may name a cluster nobody registered. That costs the enterprise
    the membership, with a warning, never its row.
    """
    registered = set(await cluster_names(conn))
    kept: list[Enterprise] = []
    for ent in enterprises:
        unknown = [code for code in ent.cluster_codes if code not in registered]
        if not unknown:
            kept.append(ent)
            continue
        origin = ledger.origin(ent)
        for code in unknown:
            ledger.warnings.append(
                RowError(
                    ledger.source,
                    origin.sheet if origin else "",
                    origin.row if origin else 0,
                    origin.headers.get("cluster_codes", "cluster_codes") if origin else "",
                    code,
                    "cluster is not in the registry; the enterprise is stored without this "
                    "membership. Register the cluster and import again",
                )
            )
        trimmed = ent.model_copy(
            update={"cluster_codes": tuple(c for c in ent.cluster_codes if c in registered)}
        )
        if origin is not None:
            ledger.origins[trimmed] = origin
        kept.append(trimmed)
    return kept


async def store_ledger(
    conn: Conn, ledger: Ledger, *, writable: Set[str] | None = None
) -> RegistryChanges:
    """Upsert everything valid in a parsed ledger, in the caller's transaction.

    Rows the database cannot take (a region not in the registry, a device of an
    enterprise that was itself rejected, an edge serving devices nobody registered)
    are added to ``ledger.errors`` with their sheet, row and column; the rest is stored.

    ``writable`` is set for an import on behalf of enterprise engineers (parsed with
    ``only_enterprises``): an edge id already registered to an enterprise outside it
    is that row's error, so an import cannot take another enterprise's gateway. The
    error does not say whose the gateway is.
    """
    _, _, regions = await known_codes(conn)
    regions |= {r.code for r in ledger.regions}

    def region_problem(model: Cluster | Enterprise) -> Problem:
        if model.region_code in regions:
            return None
        return ("region_code", model.region_code, "region is not in the registry")

    changes = RegistryChanges()
    changes.regions = await upsert_regions(conn, ledger.regions)
    changes.clusters = await upsert_clusters(conn, _keep(ledger, ledger.clusters, region_problem))
    enterprises = _keep(ledger, ledger.enterprises, region_problem)
    changes.enterprises = await upsert_enterprises(
        conn, await _registered_clusters(conn, ledger, enterprises), ledger.fields_of
    )
    stored = set(await enterprise_ids(conn))

    def owner_problem(model: Device | EdgeGateway) -> Problem:
        if model.enterprise in stored:
            return None
        return ("enterprise", model.enterprise, "enterprise was not stored (see its row)")

    changes.devices = await upsert_devices(
        conn, _keep(ledger, ledger.devices, owner_problem), ledger.fields_of, changes.new_places
    )
    cur = await conn.execute(
        "SELECT e.credit_code, d.code FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
    )
    registered: dict[str, set[str]] = {}
    for credit, code in await cur.fetchall():
        registered.setdefault(str(credit), set()).add(str(code))

    taken: set[str] = set()
    if writable is not None and ledger.edges:
        cur = await conn.execute(
            "SELECT g.edge_id FROM edge_gateway g JOIN enterprise e ON e.id = g.enterprise_id"
            " WHERE g.edge_id = ANY(%s) AND NOT e.credit_code = ANY(%s)",
            ([edge.edge_id for edge in ledger.edges], sorted(writable)),
        )
        taken = {str(r[0]) for r in await cur.fetchall()}

    def edge_problem(edge: EdgeGateway) -> Problem:
        if (owner := owner_problem(edge)) is not None:
            return owner
        if edge.edge_id in taken:
            return ("edge_id", edge.edge_id, "edge id is registered to another enterprise")
        unknown = sorted(set(edge.device_codes) - registered.get(edge.enterprise, set()))
        if unknown:
            return ("device_codes", "、".join(unknown), "devices not in the enterprise's ledger")
        return None

    changes.edges = await upsert_edges(
        conn, _keep(ledger, ledger.edges, edge_problem), ledger.fields_of
    )
    return changes


@dataclass(frozen=True)
class ImportSummary:
    """The four numbers of an import, each counting one thing."""

    stored: int  # rows now in the registry as the file says
    rejected: int  # rows with at least one error: not stored
    problems: int  # errors, several per row possible
    warnings: int  # rows kept, something to look at

    def __str__(self) -> str:
        return (
            f"存储 {self.stored} 行 rows stored · 拒绝 {self.rejected} 行 rows rejected · "
            f"{self.problems} 个错误 problems · {self.warnings} 条警告 warnings"
        )


def summarise(ledger: Ledger, changes: RegistryChanges) -> ImportSummary:
    return ImportSummary(
        stored=changes.stored,
        rejected=sum(ledger.rejected_rows.values()),
        problems=len(ledger.errors),
        warnings=len(ledger.warnings),
    )


@dataclass(frozen=True)
class TableCounts:
    """One line of an import's per-table result: read = stored + rejected."""

    label: str
    table: LedgerTable
    read: int
    stored: int
    rejected: int
    inserted: int
    updated: int
    unchanged: int


def table_counts(ledger: Ledger, changes: RegistryChanges) -> list[TableCounts]:
    """What the CLI's result table shows and the API's import report answers."""
    rows = ledger.rows_by_table
    rejected = ledger.rejected_rows
    return [
        TableCounts(
            label,
            key,
            rows[key],
            counts.inserted + counts.updated + counts.unchanged,
            rejected[key],
            counts.inserted,
            counts.updated,
            counts.unchanged,
        )
        for label, key, counts in (
            ("行政区划 regions", LedgerTable.REGIONS, changes.regions),
            ("产业集群 clusters", LedgerTable.CLUSTERS, changes.clusters),
            ("企业 enterprises", LedgerTable.ENTERPRISES, changes.enterprises),
            ("设备 devices", LedgerTable.DEVICES, changes.devices),
            ("边缘网关 edges", LedgerTable.EDGES, changes.edges),
        )
    ]


@dataclass(frozen=True)
class EnterpriseSummary:
    credit_code: str
    name: str
    region: str
    clusters: str
    above_designated_size: bool
    key_enterprise: bool
    devices: int
    production_devices: int
    nc_devices: int
    served_devices: int
    edges: int


async def enterprise_summaries(conn: Conn) -> list[EnterpriseSummary]:
    """One line per enterprise: its ledger as of today (devices in service)."""
    cur = await conn.execute(
        """
        SELECT e.credit_code, e.name, coalesce(r.name, e.region_code),
               coalesce((SELECT string_agg(c.name, '、' ORDER BY c.code)
                         FROM enterprise_cluster ec JOIN cluster c ON c.id = ec.cluster_id
                         WHERE ec.enterprise_id = e.id), ''),
               e.above_designated_size, e.key_enterprise,
               count(d.id),
               count(d.id) FILTER (WHERE d.is_production_equipment),
               count(d.id) FILTER (WHERE d.is_production_equipment AND d.is_nc),
               count(d.id) FILTER (WHERE EXISTS (
                   SELECT 1 FROM edge_device ed WHERE ed.device_id = d.id)),
               (SELECT count(*) FROM edge_gateway g WHERE g.enterprise_id = e.id)
        FROM enterprise e
        LEFT JOIN region r ON r.code = e.region_code
        LEFT JOIN device d ON d.enterprise_id = e.id
            AND (d.commissioned_on IS NULL OR d.commissioned_on <= current_date)
            AND (d.decommissioned_on IS NULL OR d.decommissioned_on > current_date)
        GROUP BY e.id, r.name
        ORDER BY e.region_code, e.credit_code
        """
    )
    return [EnterpriseSummary(*row) for row in await cur.fetchall()]
