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

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import psycopg
from psycopg import sql

from zhizao.codes import region_level, region_parent
from zhizao.errors import StorageError
from zhizao.ledger import Ledger, LedgerModel, Progress, RowError, no_progress
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


#: Rows per statement: large enough that round trips do not count, small enough that a
#: batch refused by the database is quickly retried row by row.
BATCH_ROWS = 5000

T = TypeVar("T")

Refuse = Callable[[object, str], None]
"""Called with a model the database refused and its message; the rest is stored."""


def _refuse_nothing(model: object, reason: str) -> None:
    raise StorageError(f"the database refused {model!r}: {reason}")


async def _upsert(conn: Conn, query: str | sql.Composed, params: Sequence[object]) -> bool | None:
    """Run one upsert ending in ``RETURNING (xmax = 0)``: True inserted, False updated,
    None unchanged (the WHERE of DO UPDATE filtered the row out)."""
    cur = await conn.execute(query.encode() if isinstance(query, str) else query, params)
    row = await cur.fetchone()
    return None if row is None else bool(row[0])


#: What a row's values can make the database refuse (not a lost connection, not a bug
#: in a statement). CardinalityViolation: two rows of one batch with the same key,
#: which only a ledger built in code can have; row by row they are stored in order.
_ROW_REFUSED = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.CardinalityViolation,
)


async def _in_batches(
    conn: Conn,
    items: Sequence[T],
    run: Callable[[Sequence[T]], Awaitable[None]],
    refuse: Refuse,
    progress: Callable[[int], None] | None = None,
) -> None:
    """``run`` each batch inside a savepoint. A batch the database refuses (a row
    that breaks a constraint the ledger's checks did not foresee) is undone and run
    again row by row, each in its own savepoint, so that only the refused rows are
    lost: they go to ``refuse``, every other row is stored."""
    done = 0
    for start in range(0, len(items), BATCH_ROWS):
        batch = items[start : start + BATCH_ROWS]
        try:
            async with conn.transaction():
                await run(batch)
        except _ROW_REFUSED:
            for item in batch:
                try:
                    async with conn.transaction():
                        await run([item])
                except _ROW_REFUSED as exc:
                    refuse(item, exc.diag.message_primary or str(exc))
        done += len(batch)
        if progress is not None:
            progress(done)


def _changed_flags(rows: Iterable[Sequence[object]]) -> dict[object, bool]:
    """``RETURNING key..., (xmax = 0)`` rows → key → inserted (True) or updated (False)."""
    found: dict[object, bool] = {}
    for row in rows:
        *key, inserted = row
        found[key[0] if len(key) == 1 else tuple(key)] = bool(inserted)
    return found


def _count(counts: UpsertCounts, flags: Mapping[Any, bool], keys: Iterable[object]) -> None:
    for key in keys:
        counts.add(flags.get(key))


async def upsert_regions(
    conn: Conn, regions: Iterable[Region], refuse: Refuse = _refuse_nothing
) -> UpsertCounts:
    counts = UpsertCounts()
    # Parents first (the self-reference is checked at the end of each statement, but a
    # batch boundary could fall between a city and its counties).
    ordered = sorted(regions, key=lambda r: (region_level(r.code) != "province", r.code))

    async def run(batch: Sequence[Region]) -> None:
        cur = await conn.execute(
            """
            INSERT INTO region (code, name, level, parent_code)
            SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
            ON CONFLICT (code) DO UPDATE SET name = excluded.name
            WHERE region.name IS DISTINCT FROM excluded.name
            RETURNING code, (xmax = 0)
            """,
            (
                [r.code for r in batch],
                [r.name for r in batch],
                [str(r.level) for r in batch],
                [region_parent(r.code) for r in batch],
            ),
        )
        flags = _changed_flags(await cur.fetchall())
        _count(counts, {str(k).strip(): v for k, v in flags.items()}, (r.code for r in batch))

    await _in_batches(conn, ordered, run, refuse)
    return counts


async def upsert_clusters(
    conn: Conn, clusters: Iterable[Cluster], refuse: Refuse = _refuse_nothing
) -> UpsertCounts:
    counts = UpsertCounts()

    async def run(batch: Sequence[Cluster]) -> None:
        cur = await conn.execute(
            """
            INSERT INTO cluster (code, name, region_code, industry_code)
            SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
            ON CONFLICT (code) DO UPDATE SET name = excluded.name,
                region_code = excluded.region_code, industry_code = excluded.industry_code
            WHERE (cluster.name, cluster.region_code, cluster.industry_code)
                IS DISTINCT FROM (excluded.name, excluded.region_code, excluded.industry_code)
            RETURNING code, (xmax = 0)
            """,
            (
                [c.code for c in batch],
                [c.name for c in batch],
                [c.region_code for c in batch],
                [c.industry_code for c in batch],
            ),
        )
        _count(counts, _changed_flags(await cur.fetchall()), (c.code for c in batch))

    await _in_batches(conn, list(clusters), run, refuse)
    return counts


_ENTERPRISE_COLUMNS = (
    "name",
    "region_code",
    "industry_code",
    "above_designated_size",
    "key_enterprise",
    "time_zone",
)


def _set_clause(table: str, columns: Sequence[str], *, touch: bool = False) -> sql.Composed:
    """``SET a = excluded.a, ... WHERE (t.a, ...) IS DISTINCT FROM (excluded.a, ...)``;
    ``touch`` also sets ``updated_at`` (only on rows that change, by the WHERE). No
    columns: an existing row is left alone."""
    if not columns:
        return sql.SQL("SET name = {}.name WHERE false").format(sql.Identifier(table))
    idents = [sql.Identifier(c) for c in columns]
    sets: list[sql.Composable] = [sql.SQL("{0} = excluded.{0}").format(i) for i in idents]
    if touch:
        sets.append(sql.SQL("updated_at = now()"))
    return sql.SQL("SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})").format(
        sets=sql.SQL(", ").join(sets),
        old=sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(table), i) for i in idents),
        new=sql.SQL(", ").join(sql.SQL("excluded.{}").format(i) for i in idents),
    )


def _given(columns: Sequence[str], fields: Set[str] | None, renames: dict[str, str]) -> list[str]:
    """The columns a file spoke about (all of them when ``fields`` is None)."""
    if fields is None:
        return list(columns)
    inverse = {column: field for field, column in renames.items()}
    return [c for c in columns if inverse.get(c, c) in fields]


def _grouped(
    models: Iterable[T], fields_of: Callable[[T], Set[str] | None]
) -> list[tuple[Set[str] | None, list[T]]]:
    """Models by the set of fields their file gave (one group per sheet, in order)."""
    groups: dict[frozenset[str] | None, list[T]] = {}
    for model in models:
        fields = fields_of(model)
        groups.setdefault(None if fields is None else frozenset(fields), []).append(model)
    return list(groups.items())


async def upsert_enterprises(
    conn: Conn,
    enterprises: Iterable[Enterprise],
    fields_of: Callable[[Enterprise], Set[str] | None] = lambda _: None,
    refuse: Refuse = _refuse_nothing,
) -> UpsertCounts:
    """Insert or update enterprises; an update touches only the columns in ``fields_of``."""
    counts = UpsertCounts()
    for fields, group in _grouped(enterprises, fields_of):
        columns = _given(_ENTERPRISE_COLUMNS, fields, {})
        query = sql.SQL(
            """
            INSERT INTO enterprise (credit_code, name, region_code, industry_code,
                                    above_designated_size, key_enterprise, time_zone)
            SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                                 %s::boolean[], %s::boolean[], %s::text[])
            ON CONFLICT (credit_code) DO UPDATE {conflict}
            RETURNING credit_code, (xmax = 0)
            """
        ).format(conflict=_set_clause("enterprise", columns, touch=True))
        links = fields is None or "cluster_codes" in fields

        async def run(
            batch: Sequence[Enterprise], query: sql.Composed = query, links: bool = links
        ) -> None:
            cur = await conn.execute(
                query,
                (
                    [e.credit_code for e in batch],
                    [e.name for e in batch],
                    [e.region_code for e in batch],
                    [e.industry_code for e in batch],
                    [e.above_designated_size for e in batch],
                    [e.key_enterprise for e in batch],
                    [e.time_zone for e in batch],
                ),
            )
            flags = {str(k).strip(): v for k, v in _changed_flags(await cur.fetchall()).items()}
            if links:
                relinked = await _replace_clusters(conn, batch)
                touched = [c for c in relinked if c not in flags]
                if touched:
                    # Only the memberships changed: the enterprise was updated too.
                    await conn.execute(
                        "UPDATE enterprise SET updated_at = now() WHERE credit_code = ANY(%s)",
                        (touched,),
                    )
                    flags.update(dict.fromkeys(touched, False))
            _count(counts, flags, (e.credit_code for e in batch))

        await _in_batches(conn, group, run, refuse)
    return counts


async def _replace_clusters(conn: Conn, enterprises: Sequence[Enterprise]) -> set[str]:
    """Make the memberships of ``enterprises`` those they list; the credit codes whose
    memberships changed."""
    pairs = [(e.credit_code, code) for e in enterprises for code in e.cluster_codes]
    cur = await conn.execute(
        """
        WITH ents AS (
            SELECT id, credit_code FROM enterprise WHERE credit_code = ANY(%(credits)s)
        ), wanted AS (
            SELECT e.id AS enterprise_id, c.id AS cluster_id
            FROM unnest(%(pair_credits)s::text[], %(pair_codes)s::text[]) AS w(credit, code)
            JOIN ents e ON e.credit_code = w.credit
            JOIN cluster c ON c.code = w.code
        ), removed AS (
            DELETE FROM enterprise_cluster ec
            USING ents e
            WHERE ec.enterprise_id = e.id
              AND (ec.enterprise_id, ec.cluster_id) NOT IN (SELECT * FROM wanted)
            RETURNING ec.enterprise_id
        ), added AS (
            INSERT INTO enterprise_cluster (enterprise_id, cluster_id)
            SELECT enterprise_id, cluster_id FROM wanted
            ON CONFLICT DO NOTHING
            RETURNING enterprise_id
        )
        SELECT e.credit_code FROM ents e
        WHERE e.id IN (SELECT enterprise_id FROM removed UNION SELECT enterprise_id FROM added)
        """,
        {
            "credits": [e.credit_code for e in enterprises],
            "pair_credits": [credit for credit, _ in pairs],
            "pair_codes": [code for _, code in pairs],
        },
    )
    return {str(row[0]).strip() for row in await cur.fetchall()}


_PLACE_PREFIX = {"site": "S", "line": "L"}


@dataclass(eq=False)
class _Place:
    """A site or line as the import sees it: stored (``id``) or to be inserted."""

    kind: str
    enterprise_id: int
    code: str
    name: str
    id: int | None = None
    recoded: bool = False  # stored under a derived code, now given its real code
    renamed: bool = False


class _Places:
    """Sites and lines of the enterprises an import touches, found or created once.

    The places of those enterprises are read in one query per kind; every device's
    place is then resolved in memory, in file order, with the same rules a row at a
    time would follow (by code, else by name among the enterprise's places and the
    rows of the file that give both, else a derived code), and the new, renamed and
    re-coded places are written in a few statements by :meth:`flush`.
    """

    def __init__(self, devices: Sequence[Device], ids: dict[str, int]) -> None:
        self.new: list[NewPlace] = []
        self._by_code: dict[tuple[str, int], dict[str, _Place]] = {}
        self._by_name: dict[tuple[str, int], dict[str, str]] = {}
        self._resolved: dict[tuple[str, int, str], _Place] = {}
        self._inserts: list[_Place] = []
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

    async def load(self, conn: Conn, enterprise_ids: Iterable[int]) -> None:
        wanted = sorted(set(enterprise_ids))
        for kind in ("site", "line"):
            for enterprise_id in wanted:
                self._by_code[(kind, enterprise_id)] = {}
                self._by_name[(kind, enterprise_id)] = {}
            # ``kind`` is one of two literals of this module, never input.
            cur = await conn.execute(
                f"SELECT enterprise_id, id, code, name FROM {kind}"  # noqa: S608
                " WHERE enterprise_id = ANY(%s) ORDER BY id",
                (wanted,),
            )
            for enterprise_id, pk, code, name in await cur.fetchall():
                place = _Place(kind, int(enterprise_id), str(code), str(name), int(pk))
                self._by_code[(kind, place.enterprise_id)][place.code] = place
                self._by_name[(kind, place.enterprise_id)][name_key(place.name)] = place.code

    def resolve(
        self, kind: str, enterprise_id: int, credit: str, code: str | None, name: str | None
    ) -> _Place | None:
        names = self._by_name[(kind, enterprise_id)]
        places = self._by_code[(kind, enterprise_id)]
        derived = False
        if code is None:
            if name is None:
                return None
            key = name_key(name)
            code = self._given.get((kind, enterprise_id, key)) or names.get(key)
            if code is None:
                code, derived = derived_code(_PLACE_PREFIX[kind], name), True
        resolved = self._resolved.get((kind, enterprise_id, code))
        if resolved is not None:
            return resolved
        place = places.get(code)
        if place is None and name is not None:
            place = self._adopt_derived(kind, enterprise_id, code, name)
        if place is None:
            place = _Place(kind, enterprise_id, code, name or code)
            places[code] = place
            self._inserts.append(place)
            self.new.append(NewPlace(kind, credit, code, name or code, derived))
        elif name is not None and name_key(place.name) != name_key(name):
            place.name = name
            place.renamed = place.id is not None
        self._resolved[(kind, enterprise_id, code)] = place
        names[name_key(name or code)] = code
        return place

    def _adopt_derived(self, kind: str, enterprise_id: int, code: str, name: str) -> _Place | None:
        """A line first imported by name alone, now given its code (产线编号 L3): the
        line takes the code and keeps its identity and its devices."""
        derived = derived_code(_PLACE_PREFIX[kind], name)
        if self._by_name[(kind, enterprise_id)].get(name_key(name)) != derived:
            return None
        places = self._by_code[(kind, enterprise_id)]
        place = places.pop(derived, None)
        if place is None:
            return None
        place.code = code
        place.recoded = place.id is not None
        places[code] = place
        self._resolved.pop((kind, enterprise_id, derived), None)
        return place

    async def flush(self, conn: Conn) -> None:
        """Write what :meth:`resolve` decided: codes adopted, places created, renamed."""
        everything = [place for places in self._by_code.values() for place in places.values()]
        for kind in ("site", "line"):
            recoded = [p for p in everything if p.kind == kind and p.recoded]
            if recoded:
                await conn.cursor().executemany(
                    f"UPDATE {kind} SET code = %s WHERE id = %s",  # noqa: S608
                    [(p.code, p.id) for p in recoded],
                )
            inserts = [p for p in self._inserts if p.kind == kind]
            for start in range(0, len(inserts), BATCH_ROWS):
                batch = inserts[start : start + BATCH_ROWS]
                cur = await conn.execute(
                    f"INSERT INTO {kind} (enterprise_id, code, name)"  # noqa: S608
                    " SELECT * FROM unnest(%s::int[], %s::text[], %s::text[])"
                    " RETURNING enterprise_id, code, id",
                    (
                        [p.enterprise_id for p in batch],
                        [p.code for p in batch],
                        [p.name for p in batch],
                    ),
                )
                ids = {(int(e), str(c)): int(pk) for e, c, pk in await cur.fetchall()}
                for place in batch:
                    place.id = ids[(place.enterprise_id, place.code)]
            renamed = [p for p in everything if p.kind == kind and p.renamed]
            if renamed:
                await conn.cursor().executemany(
                    f"UPDATE {kind} SET name = %s WHERE id = %s",  # noqa: S608
                    [(p.name, p.id) for p in renamed],
                )
        self._inserts.clear()
        for place in everything:
            place.recoded = place.renamed = False


async def enterprise_ids(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT credit_code, id FROM enterprise")
    return {str(code).strip(): int(pk) for code, pk in await cur.fetchall()}


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
    *,
    refuse: Refuse = _refuse_nothing,
    progress: Callable[[int], None] | None = None,
) -> UpsertCounts:
    """Insert or update devices; an update touches only the columns in ``fields_of``,
    so a file that only sets 停用日期 leaves the rest of each device as it was.
    Sites and lines created on the way are appended to ``new_places``.

    Written in batches of :data:`BATCH_ROWS` rows per statement; a device the
    database refuses goes to ``refuse`` and costs no other row."""
    counts = UpsertCounts()
    ids = await enterprise_ids(conn)
    devices = list(devices)
    places = _Places(devices, ids)
    await places.load(conn, (ids[dev.enterprise] for dev in devices))
    located = [
        (
            dev,
            places.resolve(
                "site", ids[dev.enterprise], dev.enterprise, dev.site_code, dev.site_name
            ),
            places.resolve(
                "line", ids[dev.enterprise], dev.enterprise, dev.line_code, dev.line_name
            ),
        )
        for dev in devices
    ]
    await places.flush(conn)
    done = 0
    for fields, group in _grouped(located, lambda item: fields_of(item[0])):
        columns = _given(_DEVICE_COLUMNS, fields, _DEVICE_RENAMES)
        query = sql.SQL(
            """
            INSERT INTO device (enterprise_id, code, name, device_type, site_id, line_id,
                is_production_equipment, is_nc, key_process, ideal_cycle_time_s,
                commissioned_on, decommissioned_on)
            SELECT * FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::int[],
                %s::int[], %s::boolean[], %s::boolean[], %s::boolean[],
                %s::double precision[], %s::date[], %s::date[])
            ON CONFLICT (enterprise_id, code) DO UPDATE {conflict}
            RETURNING enterprise_id, code, (xmax = 0)
            """
        ).format(conflict=_set_clause("device", columns, touch=True))

        async def run(
            batch: Sequence[tuple[Device, _Place | None, _Place | None]],
            query: sql.Composed = query,
        ) -> None:
            cur = await conn.execute(
                query,
                (
                    [ids[d.enterprise] for d, _, _ in batch],
                    [d.code for d, _, _ in batch],
                    [d.name for d, _, _ in batch],
                    [str(d.device_type) for d, _, _ in batch],
                    [None if s is None else s.id for _, s, _ in batch],
                    [None if ln is None else ln.id for _, _, ln in batch],
                    [d.is_production_equipment for d, _, _ in batch],
                    [d.is_nc for d, _, _ in batch],
                    [d.key_process for d, _, _ in batch],
                    [d.ideal_cycle_time_s for d, _, _ in batch],
                    [d.commissioned_on for d, _, _ in batch],
                    [d.decommissioned_on for d, _, _ in batch],
                ),
            )
            flags = _changed_flags(await cur.fetchall())
            _count(counts, flags, ((ids[d.enterprise], d.code) for d, _, _ in batch))

        def refuse_device(item: object, reason: str) -> None:
            refuse(cast(tuple[Device, object, object], item)[0], reason)

        def step(count: int, base: int = done) -> None:
            if progress is not None:
                progress(base + count)

        await _in_batches(conn, group, run, refuse_device, step)
        done += len(group)
    if new_places is not None:
        new_places.extend(places.new)
    return counts


async def upsert_edges(
    conn: Conn,
    edges: Iterable[EdgeGateway],
    fields_of: Callable[[EdgeGateway], Set[str] | None] = lambda _: None,
    refuse: Refuse = _refuse_nothing,
    *,
    owners: Set[int] | None = None,
    taken: Callable[[EdgeGateway], None] | None = None,
) -> UpsertCounts:
    """Insert or update gateways and the devices they serve; a file without the name
    or device columns leaves those as they were. Gateways are few (one per factory
    or line), so each is one upsert and one statement for its devices, each in a
    savepoint of its own.

    ``owners`` (enterprise ids) limits the gateways this may change to theirs: an edge
    id registered to any other enterprise is left as it is and handed to ``taken``.
    The limit is part of the upsert's own statement (``DO UPDATE … WHERE`` the row's
    enterprise is an owner), so it holds against a concurrent transaction that
    registers the id between a caller's check and this write: the upsert waits for
    that transaction and then finds the id taken."""
    counts = UpsertCounts()
    ids = await enterprise_ids(conn)
    refused: dict[str, EdgeGateway] = {}

    async def run(batch: Sequence[EdgeGateway]) -> None:
        for edge in batch:
            outcome = await _upsert_edge(conn, edge, ids, fields_of(edge), owners)
            if outcome is _Taken.TAKEN:
                refused[edge.edge_id] = edge
            else:
                counts.add(outcome)

    await _in_batches(conn, list(edges), run, refuse)
    if taken is not None:
        for edge in refused.values():
            taken(edge)
    return counts


class _Taken(enum.Enum):
    """What :func:`_upsert_edge` answers for an edge id held by an enterprise not an owner."""

    TAKEN = "taken"


async def _upsert_edge(
    conn: Conn,
    edge: EdgeGateway,
    ids: Mapping[str, int],
    given: Set[str] | None,
    owners: Set[int] | None = None,
) -> bool | _Taken | None:
    columns = _given(("enterprise_id", "name"), given, {"enterprise": "enterprise_id"})
    conflict = _set_clause("edge_gateway", columns)
    params: list[object] = [edge.edge_id, ids[edge.enterprise], edge.name]
    if owners is not None:
        conflict = sql.SQL("{} AND edge_gateway.enterprise_id = ANY(%s)").format(conflict)
        params.append(sorted(owners))
    query = sql.SQL(
        """
        INSERT INTO edge_gateway (edge_id, enterprise_id, name) VALUES (%s, %s, %s)
        ON CONFLICT (edge_id) DO UPDATE {conflict}
        RETURNING (xmax = 0)
        """
    ).format(conflict=conflict)
    result = await _upsert(conn, query, params)
    if result is None and owners is not None:
        # Nothing changed, or the id is another enterprise's. DO UPDATE locks the
        # conflicting row even where its WHERE is false, so its owner read now is the
        # committed one and stays so until this transaction ends.
        cur = await conn.execute(
            "SELECT enterprise_id FROM edge_gateway WHERE edge_id = %s", (edge.edge_id,)
        )
        row = await cur.fetchone()
        if row is not None and int(row[0]) not in owners:
            return _Taken.TAKEN
    if given is not None and "device_codes" not in given:
        return result
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
    return result


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


async def served_device_codes(conn: Conn, edge_pk: int) -> frozenset[str]:
    """Codes of the devices an edge serves (服务设备); empty when it has no list."""
    cur = await conn.execute(
        """
        SELECT d.code FROM edge_device ed JOIN device d ON d.id = ed.device_id
        WHERE ed.edge_pk = %s
        """,
        (edge_pk,),
    )
    return frozenset(str(row[0]) for row in await cur.fetchall())


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
        else:
            _row_error(ledger, model, found)
    return kept


def _row_error(ledger: Ledger, model: LedgerModel, found: tuple[str, object, str]) -> None:
    """A problem of ``model`` as a RowError at its row and column."""
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


def _refuser(ledger: Ledger) -> Refuse:
    """Refused models become row errors at their row, as any other problem of the file."""

    def refuse(model: object, reason: str) -> None:
        origin = ledger.origin(cast(LedgerModel, model))
        key = getattr(model, "code", None) or getattr(model, "credit_code", None)
        ledger.errors.append(
            RowError(
                ledger.source,
                origin.sheet if origin else "",
                origin.row if origin else 0,
                "",
                key or getattr(model, "edge_id", None),
                f"the database refused this row ({reason}); the other rows are stored",
            )
        )

    return refuse


async def store_ledger(
    conn: Conn,
    ledger: Ledger,
    progress: Progress = no_progress,
    *,
    writable: Set[str] | None = None,
) -> RegistryChanges:
    """Upsert everything valid in a parsed ledger, in the caller's transaction.

    Rows the database cannot take (a region not in the registry, a device of an
    enterprise that was itself rejected, an edge serving devices nobody registered,
    a value a constraint refuses) are added to ``ledger.errors`` with their sheet,
    row and column; the rest is stored, in batches (:data:`BATCH_ROWS`).

    ``writable`` is set for an import on behalf of enterprise engineers (parsed with
    ``only_enterprises``): an edge id already registered to an enterprise outside it
    is that row's error, so an import cannot take another enterprise's gateway. The
    error does not say whose the gateway is.
    """
    refuse = _refuser(ledger)
    _, _, regions = await known_codes(conn)
    regions |= {r.code for r in ledger.regions}

    def region_problem(model: Cluster | Enterprise) -> Problem:
        if model.region_code in regions:
            return None
        return ("region_code", model.region_code, "region is not in the registry")

    changes = RegistryChanges()
    changes.regions = await upsert_regions(conn, ledger.regions, refuse)
    changes.clusters = await upsert_clusters(
        conn, _keep(ledger, ledger.clusters, region_problem), refuse
    )
    enterprises = _keep(ledger, ledger.enterprises, region_problem)
    changes.enterprises = await upsert_enterprises(
        conn, await _registered_clusters(conn, ledger, enterprises), ledger.fields_of, refuse
    )
    ids = await enterprise_ids(conn)
    stored = set(ids)

    def owner_problem(model: Device | EdgeGateway) -> Problem:
        if model.enterprise in stored:
            return None
        return ("enterprise", model.enterprise, "enterprise was not stored (see its row)")

    devices = _keep(ledger, ledger.devices, owner_problem)
    progress("devices", 0, len(devices))
    changes.devices = await upsert_devices(
        conn,
        devices,
        ledger.fields_of,
        changes.new_places,
        refuse=refuse,
        progress=lambda done: progress("devices", done, len(devices)),
    )
    cur = await conn.execute(
        "SELECT e.credit_code, d.code FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
    )
    registered: dict[str, set[str]] = {}
    for credit, code in await cur.fetchall():
        registered.setdefault(str(credit).strip(), set()).add(str(code))

    # The ids already another enterprise's are refused here, before any write; one
    # that a concurrent import or request registers after this check is refused by
    # upsert_edges(owners=...) in the upsert itself, with the same words.
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
            return _taken_problem(edge)
        unknown = sorted(set(edge.device_codes) - registered.get(edge.enterprise, set()))
        if unknown:
            return ("device_codes", "、".join(unknown), "devices not in the enterprise's ledger")
        return None

    owners = None if writable is None else {ids[c] for c in writable if c in ids}
    changes.edges = await upsert_edges(
        conn,
        _keep(ledger, ledger.edges, edge_problem),
        ledger.fields_of,
        refuse,
        owners=owners,
        taken=lambda edge: _row_error(ledger, edge, _taken_problem(edge)),
    )
    return changes


def _taken_problem(edge: EdgeGateway) -> tuple[str, object, str]:
    return ("edge_id", edge.edge_id, "edge id is registered to another enterprise")


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
