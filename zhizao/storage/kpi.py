"""KPI queries over the rollups, for the API, Grafana and the CLI.

The SQL only selects and sums components (plain PostgreSQL, no ``time_bucket``, so
TimescaleDB and PostgreSQL give identical numbers); every ratio is taken by the pure
functions of :mod:`zhizao.oee` and :mod:`zhizao.networking` from those sums.

Periods: a range of the enterprises' local days (day, week, month, custom) reads
``rollup_device_day``; an interval of instants (a shift, a custom range) reads
``rollup_device_hour`` when it is hour-aligned, and is otherwise computed from the raw
facts with the same pure code the rollup job runs (:func:`oee_from_facts`), so a shift
from 08:30 to 17:00 is still exact.

Restriction (``within``): every query takes an optional :data:`Within`, a boolean SQL
expression over the enterprise row ``e`` with its named parameters, exactly what
:meth:`zhizao.access.Visibility.enterprise_filter` gives. The figures are then
computed in the database over those enterprises only: a cluster operator's figure of
the province is its cluster's, never the province's. Without one (the CLI, the demo)
every enterprise counts, as before. :func:`enterprises_within` makes one from credit
codes, :func:`area_filter` from a region or cluster, :func:`restrict` ANDs them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import sql

from zhizao.access import Visibility
from zhizao.calendar import ShiftCalendar, calendar_for, from_ms, shift_instances, to_ms
from zhizao.codes import RegionLevel, region_level
from zhizao.errors import InvalidValue
from zhizao.intervals import HOUR_MS
from zhizao.networking import (
    DEFAULT_CURRENT_WINDOW_H,
    EnterpriseFacts,
    Evidence,
    GroupBy,
    Kind,
    RateFigure,
    RateParts,
    Scope,
    aggregate,
    evidence_reason,
    group_keys,
    natural_key,
)
from zhizao.oee import Oee, OeeComponents, compute, summed
from zhizao.provenance import LOCAL, Origin, Origins, Source
from zhizao.storage.connection import Conn
from zhizao.storage.rollups import (
    calendar_of,
    check_zone,
    device_buckets,
    device_infos,
    load_facts,
    load_stored_calendars,
)


class Level(StrEnum):
    DEVICE = "device"
    LINE = "line"
    ENTERPRISE = "enterprise"
    CLUSTER = "cluster"
    REGION = "region"


@dataclass(frozen=True, slots=True)
class OeeScope:
    """What to compute OEE for: ``code`` is a device or line code (with ``enterprise``),
    a credit code, a cluster code or a region code."""

    level: Level
    code: str
    enterprise: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceOee:
    enterprise: str
    device: str
    name: str
    components: OeeComponents

    @property
    def oee(self) -> Oee:
        return compute(self.components)


@dataclass(frozen=True, slots=True)
class EnterpriseOee:
    """The OEE components of an enterprise known from federated reports only: summed
    from its daily reports, with no device (devices never leave the cluster)."""

    enterprise: str
    name: str
    origin: Origin
    components: OeeComponents

    @property
    def oee(self) -> Oee:
        return compute(self.components)


@dataclass(frozen=True, slots=True)
class OeeReport:
    scope: OeeScope
    start: date | datetime
    end: date | datetime  # a last day (inclusive) or an instant (exclusive)
    source: str  # rollup_device_day, rollup_device_hour or facts
    result: Oee
    devices: tuple[DeviceOee, ...]
    #: Enterprises of the scope known from federated reports only (provincial
    #: instance; days only, an interval of instants has none).
    federated: tuple[EnterpriseOee, ...] = ()
    #: Where the figures come from: ``local`` and/or the reporting instances.
    sources: tuple[Source, ...] = ()


#: A restriction to some enterprises: a boolean SQL expression over the enterprise row
#: ``e`` and its named parameters (:meth:`zhizao.access.Visibility.enterprise_filter`).
Within = tuple[sql.Composable, Mapping[str, Any]]


def enterprises_within(credit_codes: Iterable[str]) -> Within:
    """A restriction to the given enterprises."""
    return sql.SQL("e.credit_code = ANY(%(_within_codes)s)"), {
        "_within_codes": sorted(set(credit_codes))
    }


def restrict(first: Within, *more: Within | None) -> Within:
    """All of the restrictions at once."""
    given = [first, *(p for p in more if p is not None)]
    params: dict[str, Any] = {}
    for _, extra in given:
        for name, value in extra.items():
            if name in params and params[name] != value:
                raise ValueError(f"two restrictions bind parameter {name!r} differently")
            params[name] = value
    return sql.SQL("({})").format(sql.SQL(" AND ").join(f for f, _ in given)), params


def _within(within: Within | None, params: dict[str, Any]) -> sql.Composable:
    """The restriction's expression (TRUE without one); its parameters go into ``params``."""
    if within is None:
        return sql.SQL("TRUE")
    fragment, extra = within
    clash = {k for k in extra if k in params and params[k] != extra[k]}
    if clash:
        raise ValueError(f"the restriction rebinds parameters {sorted(clash)}")
    params.update(extra)
    return fragment


def area_filter(region: str | None = None, cluster: str | None = None) -> Within | None:
    """A restriction to the enterprises of a region (GB/T 2260 prefix) and/or a cluster."""
    parts: list[Within] = []
    if region is not None:
        width = {RegionLevel.PROVINCE: 2, RegionLevel.CITY: 4, RegionLevel.COUNTY: 6}
        prefix = region[: width[region_level(region)]] + "%"
        parts.append((sql.SQL("e.region_code LIKE %(_area_prefix)s"), {"_area_prefix": prefix}))
    if cluster is not None:
        parts.append((
            sql.SQL(
                "e.id IN (SELECT m.enterprise_id FROM enterprise_cluster_code m"
                " WHERE m.code = %(_area_cluster)s)"
            ),
            {"_area_cluster": cluster},
        ))  # fmt: skip
    return restrict(*parts) if parts else None


_SUMS = """
    sum(r.scheduled_s), sum(r.sched_planned_stop_s), sum(r.sched_running_s),
    sum(r.overtime_running_s), sum(r.sched_idle_s), sum(r.sched_setup_s),
    sum(r.sched_unplanned_stop_s), sum(r.sched_offline_s), sum(r.micro_idle_s),
    sum(r.micro_unplanned_s), sum(r.good)::int8, sum(r.reject)::int8, sum(r.ideal_time_s),
    sum(r.ideal_good_s), sum(r.unrated_running_s)
"""


def _components(row: Sequence[Any]) -> OeeComponents:
    return OeeComponents(
        scheduled_s=float(row[0] or 0), planned_stop_s=float(row[1] or 0),
        running_s=float(row[2] or 0), overtime_running_s=float(row[3] or 0),
        idle_s=float(row[4] or 0), setup_s=float(row[5] or 0),
        unplanned_stop_s=float(row[6] or 0), offline_s=float(row[7] or 0),
        micro_idle_s=float(row[8] or 0), micro_unplanned_s=float(row[9] or 0),
        good=int(row[10] or 0), reject=int(row[11] or 0), ideal_time_s=float(row[12] or 0),
        ideal_good_s=float(row[13] or 0), unrated_running_s=float(row[14] or 0),
    )  # fmt: skip


def scope_filter(scope: OeeScope) -> tuple[sql.Composable, dict[str, Any]]:
    """A WHERE fragment over ``d`` (device) and ``e`` (enterprise) for the scope."""
    params: dict[str, Any] = {"code": scope.code, "ent": scope.enterprise}
    if scope.level in (Level.DEVICE, Level.LINE):
        if scope.enterprise is None:
            raise InvalidValue("enterprise", None, f"a {scope.level} scope needs its enterprise")
        if scope.level is Level.DEVICE:
            return sql.SQL("e.credit_code = %(ent)s AND d.code = %(code)s"), params
        return sql.SQL(
            "e.credit_code = %(ent)s AND d.line_id = (SELECT l.id FROM line l"
            " WHERE l.enterprise_id = e.id AND l.code = %(code)s)"
        ), params
    if scope.level is Level.ENTERPRISE:
        return sql.SQL("e.credit_code = %(code)s"), params
    if scope.level is Level.CLUSTER:
        return sql.SQL(
            "e.id IN (SELECT m.enterprise_id FROM enterprise_cluster_code m"
            " WHERE m.code = %(code)s)"
        ), params
    level = region_level(scope.code)
    width = {RegionLevel.PROVINCE: 2, RegionLevel.CITY: 4, RegionLevel.COUNTY: 6}[level]
    params["prefix"] = scope.code[:width] + "%"
    return sql.SQL("e.region_code LIKE %(prefix)s"), params


DEFAULT_ZONE = "Asia/Shanghai"


async def display_zone(
    conn: Conn, scope: OeeScope | None = None, *, within: Within | None = None
) -> ZoneInfo:
    """The time zone a person reading figures of ``scope`` thinks in.

    The enterprise's for a device, line or enterprise; for a cluster, a region or every
    enterprise (None), the zone they share, or Asia/Shanghai when they have several
    (of the enterprises ``within``, when given).
    """
    params: dict[str, Any] = {}
    if scope is None:
        where: sql.Composable = sql.SQL("TRUE")
    elif scope.level in (Level.DEVICE, Level.LINE, Level.ENTERPRISE):
        credit = scope.code if scope.level is Level.ENTERPRISE else scope.enterprise
        where, params = sql.SQL("e.credit_code = %(credit)s"), {"credit": credit}
    else:
        where, params = scope_filter(scope)
    restricted = _within(within, params)
    cur = await conn.execute(
        sql.SQL("SELECT DISTINCT e.time_zone FROM enterprise e WHERE {} AND {}").format(
            where, restricted
        ),
        params,
    )
    zones = {str(r[0]) for r in await cur.fetchall()}
    return ZoneInfo(zones.pop() if len(zones) == 1 else DEFAULT_ZONE)


async def _by_device(
    conn: Conn,
    scope: OeeScope,
    table: str,
    where: sql.Composable,
    params: dict[str, Any],
    *,
    within: Within | None,
) -> list[DeviceOee]:
    scope_sql, scope_params = scope_filter(scope)
    params = {**scope_params, **params}
    restricted = _within(within, params)
    query = sql.SQL(
        """
        SELECT e.credit_code, d.code, d.name, {sums}
        FROM {table} r JOIN device d ON d.id = r.device_id
        JOIN enterprise e ON e.id = d.enterprise_id
        WHERE d.is_production_equipment AND {scope} AND {within} AND {where}
        GROUP BY e.credit_code, d.code, d.name
        ORDER BY e.credit_code, d.code
        """
    ).format(
        sums=sql.SQL(_SUMS), table=sql.Identifier(table), scope=scope_sql, within=restricted,
        where=where,
    )  # fmt: skip
    cur = await conn.execute(query, params)
    return [
        DeviceOee(str(ent), str(code), str(name), _components(row[3:]))
        for row in await cur.fetchall()
        for ent, code, name in [row[:3]]
    ]


async def oee_for_days(
    conn: Conn,
    scope: OeeScope,
    first: date,
    last: date,
    *,
    within: Within | None = None,
    federated: bool = True,
) -> OeeReport:
    """OEE over the local days first..last (inclusive) of each enterprise: its devices'
    rollups, and (``federated``) the daily reports of enterprises known only from
    cluster instances, summed the same way before any ratio is taken."""
    now = datetime.now(UTC)
    devices = await _by_device(
        conn, scope, "rollup_device_day",
        sql.SQL("r.day >= %(first)s AND r.day <= %(last)s"), {"first": first, "last": last},
        within=within,
    )  # fmt: skip
    remote = (
        (await _federated_oee(conn, scope, first, last, every=None, within=within)).get(
            first, []
        )
        if federated else []
    )  # fmt: skip
    return _oee_report(scope, first, last, devices=devices, remote=remote, now=now)


def _oee_report(
    scope: OeeScope,
    first: date,
    last: date,
    *,
    devices: Sequence[DeviceOee],
    remote: Sequence[EnterpriseOee],
    now: datetime,
) -> OeeReport:
    total = summed([*(d.components for d in devices), *(f.components for f in remote)])
    origins = Origins(now, {f.enterprise: f.origin for f in remote})
    members = {d.enterprise for d in devices} | {f.enterprise for f in remote}
    # Nothing counted at all is this instance's answer (no data), not "no source".
    sources = origins.sources(sorted(members)) if members else (Source(LOCAL, now, 0),)
    return OeeReport(
        scope, first, last, "rollup_device_day", compute(total), tuple(devices), tuple(remote),
        sources,
    )  # fmt: skip


def hour_aligned(start: datetime, end: datetime) -> bool:
    """Whether [start, end) is served by the hour rollups (else by the raw facts)."""
    return to_ms(start) % HOUR_MS == 0 and to_ms(end) % HOUR_MS == 0


async def oee_for_interval(
    conn: Conn,
    scope: OeeScope,
    start: datetime,
    end: datetime,
    *,
    micro_stop_s: float = 120.0,
    within: Within | None = None,
) -> OeeReport:
    """OEE over [start, end): hour rollups when hour-aligned, else the raw facts."""
    if hour_aligned(start, end):
        devices = await _by_device(
            conn, scope, "rollup_device_hour",
            sql.SQL("r.hour >= %(start)s AND r.hour < %(end)s"), {"start": start, "end": end},
            within=within,
        )  # fmt: skip
        source = "rollup_device_hour"
    else:
        devices = await oee_from_facts(
            conn, scope, start, end, micro_stop_s=micro_stop_s, within=within
        )
        source = "facts"
    total = summed(d.components for d in devices)
    return OeeReport(scope, start, end, source, compute(total), tuple(devices))


async def oee_from_facts(
    conn: Conn,
    scope: OeeScope,
    start: datetime,
    end: datetime,
    *,
    horizon: datetime | None = None,
    micro_stop_s: float = 120.0,
    within: Within | None = None,
) -> list[DeviceOee]:
    """Components per device straight from the fact tables, bypassing the rollups.

    The same pure code as the rollup job: what the ground-truth and benchmark
    comparisons check the rollups against, and how unaligned periods are served.
    """
    scope_sql, params = scope_filter(scope)
    restricted = _within(within, params)
    cur = await conn.execute(
        sql.SQL(
            "SELECT d.id, e.credit_code, d.code, d.name FROM device d"
            " JOIN enterprise e ON e.id = d.enterprise_id"
            " WHERE d.is_production_equipment AND {} AND {} ORDER BY e.credit_code, d.code"
        ).format(scope_sql, restricted),
        params,
    )
    rows = await cur.fetchall()
    if not rows:
        return []
    ids = [int(r[0]) for r in rows]
    infos = await device_infos(conn, ids)
    calendars = await load_stored_calendars(conn)
    lo, hi = to_ms(start), to_ms(end)
    horizon_ms = hi if horizon is None else to_ms(horizon)
    facts = await load_facts(conn, dict.fromkeys(ids, (lo, hi)))
    out: list[DeviceOee] = []
    for pk, ent, code, name in rows:
        info = infos.get(int(pk))
        if info is None:
            continue  # an enterprise in a zone rollups cannot serve (logged there)
        buckets = device_buckets(
            info,
            calendar=calendar_of(calendars, info),
            transitions=facts.transitions.get(int(pk), []),
            counts=facts.counts.get(int(pk), []),
            ranges=[(lo, hi)],
            horizon_ms=horizon_ms,
            micro_stop_ms=round(micro_stop_s * 1000),
        )
        components = summed(
            OeeComponents.from_bucket(b, info.ideal_cycle_time_s) for b in buckets.values()
        )
        if buckets:
            out.append(DeviceOee(str(ent), str(code), str(name), components))
    return out


def period_days(kind: str, anchor: date) -> tuple[date, date]:
    """First and last local day of the day, ISO week or month containing ``anchor``."""
    if kind == "day":
        return anchor, anchor
    if kind == "week":
        first = anchor - timedelta(days=anchor.weekday())
        return first, first + timedelta(days=6)
    if kind == "month":
        first = anchor.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        return first, nxt - timedelta(days=1)
    raise InvalidValue("period", kind, "must be day, week or month")


class Every(StrEnum):
    """The step of a history series."""

    DAY = "day"
    WEEK = "week"  # ISO weeks, Monday to Sunday
    MONTH = "month"


def series_buckets(first: date, last: date, every: Every) -> list[tuple[date, date]]:
    """The days, weeks or months from first to last, each clipped to the range: a
    series from a Wednesday by week starts with that Wednesday to Sunday."""
    out: list[tuple[date, date]] = []
    day = first
    while day <= last:
        _, end = period_days(str(every), day)
        out.append((day, min(end, last)))
        day = end + timedelta(days=1)
    return out


_BUCKET_SQL = {
    Every.DAY: sql.SQL("r.day"),
    Every.WEEK: sql.SQL("greatest(date_trunc('week', r.day)::date, %(first)s::date)"),
    Every.MONTH: sql.SQL("greatest(date_trunc('month', r.day)::date, %(first)s::date)"),
}


async def oee_series(
    conn: Conn,
    scope: OeeScope,
    first: date,
    last: date,
    every: Every,
    *,
    within: Within | None = None,
    federated: bool = True,
) -> list[OeeReport]:
    """One report per day, week or month of first..last (:func:`series_buckets`), each
    the figure :func:`oee_for_days` gives for its days, from one query (and one more
    of the federated reports)."""
    now = datetime.now(UTC)
    scope_sql, params = scope_filter(scope)
    params.update({"first": first, "last": last})
    restricted = _within(within, params)
    query = sql.SQL(
        """
        SELECT {bucket} AS bucket, e.credit_code, d.code, d.name, {sums}
        FROM rollup_device_day r JOIN device d ON d.id = r.device_id
        JOIN enterprise e ON e.id = d.enterprise_id
        WHERE d.is_production_equipment AND {scope} AND {within}
          AND r.day >= %(first)s AND r.day <= %(last)s
        GROUP BY 1, e.credit_code, d.code, d.name
        ORDER BY 1, e.credit_code, d.code
        """
    ).format(bucket=_BUCKET_SQL[every], sums=sql.SQL(_SUMS), scope=scope_sql, within=restricted)
    cur = await conn.execute(query, params)
    by_bucket: dict[date, list[DeviceOee]] = {}
    for row in await cur.fetchall():
        by_bucket.setdefault(row[0], []).append(
            DeviceOee(str(row[1]), str(row[2]), str(row[3]), _components(row[4:]))
        )
    remote = (
        await _federated_oee(conn, scope, first, last, every=every, within=within)
        if federated else {}
    )  # fmt: skip
    return [
        _oee_report(scope, b_first, b_last, devices=by_bucket.get(b_first, []),
                    remote=remote.get(b_first, []), now=now)
        for b_first, b_last in series_buckets(first, last, every)
    ]  # fmt: skip


# --- federated enterprises (the provincial instance) -------------------------------------
#
# Enterprises known only from the signed daily reports of cluster instances
# (zhizao.federation), materialised by migration 0014 as ``federated_enterprise`` (id,
# credit_code, region_code ... like an enterprise row, so every ``within`` applies to
# it as alias ``e``) and ``federated_day`` (alias ``r``: the day's in-service,
# networked and NC counts and OEE components). Each figure is summed from those days
# exactly as the cluster sums its devices' days: a device-day networked there is one
# here. An enterprise of the local registry is never read from reports (the local
# registry wins), so nothing is counted twice.

#: A federated enterprise counts unless the local registry holds it.
_NOT_LOCAL = sql.SQL("NOT EXISTS (SELECT 1 FROM enterprise l WHERE l.credit_code = e.credit_code)")
_FEDERATED_DAYS = sql.SQL(
    "federated_day r JOIN federated_enterprise e ON e.credit_code = r.enterprise"
)
_OEE_FIELDS = tuple(fields(OeeComponents))


def _oee_sums(column: sql.Composable) -> sql.Composable:
    # In the fields' order, which is also _SUMS's (read back by _components).
    return sql.SQL(", ").join(
        sql.SQL("coalesce(sum(({} ->> {})::float8), 0)").format(column, sql.Literal(f.name))
        for f in _OEE_FIELDS
    )


async def _federated_facts(conn: Conn, within: Within | None) -> dict[str, EnterpriseFacts]:
    params: dict[str, Any] = {}
    restricted = _within(within, params)
    cur = await conn.execute(
        sql.SQL(
            "SELECT e.credit_code, e.name, e.region_code, e.industry_code, e.clusters,"
            " e.above_designated_size, e.key_enterprise FROM federated_enterprise e"
            " WHERE {} AND {}"
        ).format(_NOT_LOCAL, restricted),
        params,
    )
    return {
        str(cc): EnterpriseFacts(str(cc), str(n), str(r), str(i), tuple(sorted(cl)), bool(a),
                                 bool(k))
        for cc, n, r, i, cl, a, k in await cur.fetchall()
    }  # fmt: skip


async def _federated_series_parts(
    conn: Conn, first: date, last: date, every: Every | None, within: Within | None
) -> dict[date, dict[str, RateParts]]:
    """Networked and in-service device-days of the federated enterprises, per bucket of
    first..last (one bucket, keyed by ``first``, when ``every`` is None)."""
    params: dict[str, Any] = {"first": first, "last": last}
    restricted = _within(within, params)
    bucket = sql.SQL("%(first)s::date") if every is None else _BUCKET_SQL[every]
    cur = await conn.execute(
        sql.SQL(
            "SELECT {bucket}, e.credit_code, sum(r.networked)::int8, sum(r.in_service)::int8"
            " FROM {days} WHERE r.day >= %(first)s AND r.day <= %(last)s AND {local}"
            " AND {within} GROUP BY 1, 2 HAVING sum(r.in_service) > 0"
        ).format(bucket=bucket, days=_FEDERATED_DAYS, local=_NOT_LOCAL, within=restricted),
        params,
    )
    out: dict[date, dict[str, RateParts]] = {}
    for b, cc, n, d in await cur.fetchall():
        out.setdefault(b, {})[str(cc)] = RateParts(int(n), int(d))
    return out


async def _federated_nc(
    conn: Conn, day: date, key_process: bool, within: Within | None
) -> dict[str, tuple[RateParts, Origin]]:
    """Each federated enterprise's NC counts of its newest report on or before ``day``
    (the ledger's state as of then), with that report's origin."""
    params: dict[str, Any] = {"day": day}
    restricted = _within(within, params)
    nc, of = ("key_process_nc", "key_process") if key_process else ("nc", "in_service")
    cur = await conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (r.enterprise) e.credit_code, r.{nc}, r.{of}, r.instance_id,"
            " r.received_at, r.day FROM {days} WHERE r.day <= %(day)s AND {local} AND {within}"
            " ORDER BY r.enterprise, r.day DESC"
        ).format(nc=sql.Identifier(nc), of=sql.Identifier(of), days=_FEDERATED_DAYS,
                 local=_NOT_LOCAL, within=restricted),
        params,
    )  # fmt: skip
    return {
        str(cc): (RateParts(int(n), int(d)), Origin(str(inst), at, reported, 1))
        for cc, n, d, inst, at, reported in await cur.fetchall()
        if int(d) > 0  # as locally: an enterprise without such a device has no row
    }


async def origins(conn: Conn, first: date, last: date, *, within: Within | None = None) -> Origins:
    """Where the figures of first..last come from: the federated enterprises with their
    instance, newest report received and newest day; every other one is local, as of
    now."""
    now = datetime.now(UTC)
    found = await _origins_by_bucket(conn, first, last, None, within)
    return Origins(now, found.get(first, {}))


async def _origins_by_bucket(
    conn: Conn, first: date, last: date, every: Every | None, within: Within | None
) -> dict[date, dict[str, Origin]]:
    params: dict[str, Any] = {"first": first, "last": last}
    restricted = _within(within, params)
    bucket = sql.SQL("%(first)s::date") if every is None else _BUCKET_SQL[every]
    cur = await conn.execute(
        sql.SQL(
            "SELECT {bucket}, e.credit_code, (array_agg(r.instance_id ORDER BY r.day DESC))[1],"
            " max(r.received_at), max(r.day), count(*) FROM {days}"
            " WHERE r.day >= %(first)s AND r.day <= %(last)s AND {local} AND {within}"
            " GROUP BY 1, 2"
        ).format(bucket=bucket, days=_FEDERATED_DAYS, local=_NOT_LOCAL, within=restricted),
        params,
    )
    out: dict[date, dict[str, Origin]] = {}
    for b, cc, inst, at, day, n in await cur.fetchall():
        out.setdefault(b, {})[str(cc)] = Origin(str(inst), at, day, int(n))
    return out


async def _federated_oee(
    conn: Conn,
    scope: OeeScope,
    first: date,
    last: date,
    *,
    every: Every | None,
    within: Within | None,
) -> dict[date, list[EnterpriseOee]]:
    """OEE components of the scope's federated enterprises per bucket of first..last
    (one, keyed by ``first``, when ``every`` is None): the enterprise's components for
    an enterprise, cluster or region, a line's for a line; none for a device."""
    if scope.level is Level.DEVICE:
        return {}
    if scope.level is Level.LINE:
        where: sql.Composable = sql.SQL("e.credit_code = %(ent)s AND r.lines ? %(code)s")
        params: dict[str, Any] = {"ent": scope.enterprise, "code": scope.code}
        column: sql.Composable = sql.SQL("(r.lines -> %(code)s)")
    else:
        where, params = scope_filter(scope)
        column = sql.SQL("r.oee")
    params.update({"first": first, "last": last})
    restricted = _within(within, params)
    bucket = sql.SQL("%(first)s::date") if every is None else _BUCKET_SQL[every]
    cur = await conn.execute(
        sql.SQL(
            "SELECT {bucket}, e.credit_code, min(e.name),"
            " (array_agg(r.instance_id ORDER BY r.day DESC))[1], max(r.received_at),"
            " max(r.day), count(*), {sums} FROM {days}"
            " WHERE r.day >= %(first)s AND r.day <= %(last)s AND {scope} AND {local}"
            " AND {within} GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(bucket=bucket, sums=_oee_sums(column), days=_FEDERATED_DAYS, scope=where,
                 local=_NOT_LOCAL, within=restricted),
        params,
    )  # fmt: skip
    out: dict[date, list[EnterpriseOee]] = {}
    for row in await cur.fetchall():
        origin = Origin(str(row[3]), row[4], row[5], int(row[6]))
        out.setdefault(row[0], []).append(
            EnterpriseOee(str(row[1]), str(row[2]), origin, _components(row[7:]))
        )
    return out


async def federated_enterprises(
    conn: Conn, members: Collection[str] | None = None, *, within: Within | None = None
) -> dict[str, str]:
    """Credit code → reporting instance of the federated enterprises (of ``members``
    when given) that count: what an answer flags as having no device-level data."""
    params: dict[str, Any] = {"members": sorted(members or ())}
    restricted = _within(within, params)
    only = sql.SQL("TRUE") if members is None else sql.SQL("e.credit_code = ANY(%(members)s)")
    cur = await conn.execute(
        sql.SQL(
            "SELECT e.credit_code, e.instance_id FROM federated_enterprise e"
            " WHERE {} AND {} AND {} ORDER BY 1"
        ).format(only, _NOT_LOCAL, restricted),
        params,
    )
    return {str(cc): str(inst) for cc, inst in await cur.fetchall()}


# --- networking and NC rates ----------------------------------------------------------


async def enterprise_facts(
    conn: Conn, *, within: Within | None = None, federated: bool = True
) -> dict[str, EnterpriseFacts]:
    """The enterprises of ``within``: the local registry's, and (``federated``) those
    known only from reports, with the facts of their newest reported day."""
    remote = await _federated_facts(conn, within) if federated else {}
    params: dict[str, Any] = {}
    restricted = _within(within, params)
    cur = await conn.execute(
        sql.SQL(
            """
            SELECT e.credit_code, e.name, e.region_code, e.industry_code,
                   array_remove(array_agg(c.code ORDER BY c.code), NULL),
                   e.above_designated_size, e.key_enterprise
            FROM enterprise e
            LEFT JOIN enterprise_cluster ec ON ec.enterprise_id = e.id
            LEFT JOIN cluster c ON c.id = ec.cluster_id
            WHERE {}
            GROUP BY e.id
            """
        ).format(restricted),
        params,
    )
    return remote | {
        str(cc): EnterpriseFacts(str(cc), str(n), str(r), str(i), tuple(cl), bool(a), bool(k))
        for cc, n, r, i, cl, a, k in await cur.fetchall()
    }


async def networking_parts(
    conn: Conn, first: date, last: date, *, within: Within | None = None, federated: bool = True
) -> dict[str, RateParts]:
    """Networked and in-service production device-days per enterprise, first..last;
    with ``federated``, also of the enterprises known only from reports (the sums of
    their days' counts: the same device-days)."""
    remote = (
        (await _federated_series_parts(conn, first, last, None, within)).get(first, {})
        if federated else {}
    )  # fmt: skip
    params: dict[str, Any] = {"first": first, "last": last}
    restricted = _within(within, params)
    # Restricted, the networked days are counted for the enterprises' devices only.
    own = sql.SQL("") if within is None else sql.SQL("AND r.device_id IN (SELECT id FROM dev)")
    query = sql.SQL(
        """
        WITH dev AS (
            SELECT d.id, d.enterprise_id,
                   greatest(%(first)s::date, d.commissioned_on) AS s,
                   least(%(last)s::date + 1, d.decommissioned_on) AS e
            FROM device d JOIN enterprise e ON e.id = d.enterprise_id
            WHERE d.is_production_equipment AND {within}
        ), networked AS (
            -- Counted per device straight off the partial index of networked days ...
            SELECT r.device_id, count(*) AS n FROM rollup_device_day r
            WHERE r.day >= %(first)s AND r.day <= %(last)s
              AND (r.good_points > 0 OR r.online_reported) {own}
            GROUP BY 1
        ), outside AS (
            -- ... less the days outside service, for the few devices whose service
            -- begins or ends inside the period (joining every row to its device's
            -- service window instead costs twice as much over a province).
            SELECT dev.id AS device_id, x.n
            FROM dev CROSS JOIN LATERAL (
                SELECT count(*) AS n FROM rollup_device_day r
                WHERE r.device_id = dev.id AND r.day >= %(first)s AND r.day <= %(last)s
                  AND (r.day < dev.s OR r.day >= dev.e)
                  AND (r.good_points > 0 OR r.online_reported)
            ) AS x
            WHERE dev.s > %(first)s OR dev.e <= %(last)s
        )
        SELECT e.credit_code,
               coalesce(sum(nw.n), 0)::int8 - coalesce(sum(o.n), 0)::int8,
               sum(greatest(dev.e - dev.s, 0))::int8
        FROM dev JOIN enterprise e ON e.id = dev.enterprise_id
        LEFT JOIN networked nw ON nw.device_id = dev.id
        LEFT JOIN outside o ON o.device_id = dev.id
        GROUP BY e.credit_code
        """
    ).format(within=restricted, own=own)
    cur = await conn.execute(query, params)
    return remote | {str(cc): RateParts(int(n), int(d)) for cc, n, d in await cur.fetchall()}


async def current_networking_parts(
    conn: Conn,
    now: datetime,
    window_h: float = DEFAULT_CURRENT_WINDOW_H,
    *,
    within: Within | None = None,
) -> dict[str, RateParts]:
    """Devices seen within the window before ``now`` / in service on today's local date."""
    since = now - timedelta(hours=window_h)
    params: dict[str, Any] = {"since": since, "now": now}
    restricted = _within(within, params)
    query = sql.SQL(
        """
        SELECT e.credit_code,
               count(*) FILTER (WHERE
                   EXISTS (SELECT 1 FROM device_hour_tally h
                           WHERE h.device_id = d.id
                             AND h.hour >= date_bin('1 hour', %(since)s, 'epoch'::timestamptz)
                             AND h.hour <= %(now)s
                             AND h.last_good >= %(since)s AND h.last_good <= %(now)s)
                   OR EXISTS (SELECT 1 FROM device_connectivity c
                              WHERE c.device_id = d.id AND c.online
                                AND c.time >= %(since)s AND c.time <= %(now)s)),
               count(*)
        FROM device d JOIN enterprise e ON e.id = d.enterprise_id
        WHERE d.is_production_equipment
          AND (d.commissioned_on IS NULL
               OR d.commissioned_on <= (%(now)s AT TIME ZONE e.time_zone)::date)
          AND (d.decommissioned_on IS NULL
               OR d.decommissioned_on > (%(now)s AT TIME ZONE e.time_zone)::date)
          AND {within}
        GROUP BY e.credit_code
        """
    ).format(within=restricted)
    cur = await conn.execute(query, params)
    return {str(cc): RateParts(int(n), int(d)) for cc, n, d in await cur.fetchall()}


async def nc_parts(
    conn: Conn,
    day: date,
    *,
    key_process: bool = False,
    within: Within | None = None,
    federated: bool = True,
) -> dict[str, RateParts]:
    """NC (or key-process NC) devices / in-service production devices on ``day``; with
    ``federated``, also of the enterprises known only from reports, as of their newest
    report on or before ``day`` (:func:`nc_origins` says which)."""
    remote = (
        {cc: parts for cc, (parts, _) in (await _federated_nc(conn, day, key_process,
                                                              within)).items()}
        if federated else {}
    )  # fmt: skip
    params: dict[str, Any] = {"day": day, "key": key_process}
    restricted = _within(within, params)
    query = sql.SQL(
        """
        SELECT e.credit_code, count(*) FILTER (WHERE d.is_nc), count(*)
        FROM device d JOIN enterprise e ON e.id = d.enterprise_id
        WHERE d.is_production_equipment AND (NOT %(key)s OR d.key_process)
          AND (d.commissioned_on IS NULL OR d.commissioned_on <= %(day)s)
          AND (d.decommissioned_on IS NULL OR d.decommissioned_on > %(day)s)
          AND {within}
        GROUP BY e.credit_code
        """
    ).format(within=restricted)
    cur = await conn.execute(query, params)
    return remote | {str(cc): RateParts(int(n), int(d)) for cc, n, d in await cur.fetchall()}


async def nc_origins(
    conn: Conn, day: date, *, key_process: bool = False, within: Within | None = None
) -> Origins:
    """Where the NC figures of ``day`` come from (:func:`nc_parts`)."""
    now = datetime.now(UTC)
    remote = await _federated_nc(conn, day, key_process, within)
    return Origins(now, {cc: origin for cc, (_, origin) in remote.items()})


async def networking_rates(
    conn: Conn,
    first: date,
    last: date,
    group_by: GroupBy,
    scope: Scope = Scope.ALL,
    *,
    within: Within | None = None,
) -> list[RateFigure]:
    """Daily (first == last) or period networking rate per group, both methods, each
    with its sources (:mod:`zhizao.provenance`)."""
    parts = await networking_parts(conn, first, last, within=within)
    facts = await enterprise_facts(conn, within=within)
    known = await origins(conn, first, last, within=within)
    return aggregate(Kind.NETWORKING, parts, facts, group_by, scope, origins=known)


async def covered_days(conn: Conn, first: date, last: date, *, within: Within | None = None) -> int:
    """Days of first..last on which any device of ``within``'s enterprises sent data (a
    good point or an online report: a networked day), a report's data coverage; a
    federated enterprise's day counts when its report has a networked device."""
    params: dict[str, Any] = {"first": first, "last": last}
    restricted = _within(within, params)
    query = sql.SQL(
        """
        SELECT count(DISTINCT day) FROM (
            SELECT r.day FROM rollup_device_day r
            JOIN device d ON d.id = r.device_id JOIN enterprise e ON e.id = d.enterprise_id
            WHERE r.day >= %(first)s AND r.day <= %(last)s AND {within}
              AND (r.good_points > 0 OR r.online_reported)
            UNION ALL
            SELECT r.day FROM {days}
            WHERE r.day >= %(first)s AND r.day <= %(last)s AND r.networked > 0 AND {local}
              AND {within}
        ) AS covered
        """
    ).format(within=restricted, days=_FEDERATED_DAYS, local=_NOT_LOCAL)
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def covered_days_by_enterprise(
    conn: Conn, first: date, last: date, *, within: Within | None = None
) -> dict[str, int]:
    """Days of first..last on which any of the enterprise's devices sent data, per
    enterprise (as :func:`covered_days`)."""
    params: dict[str, Any] = {"first": first, "last": last}
    restricted = _within(within, params)
    query = sql.SQL(
        """
        SELECT e.credit_code, count(DISTINCT r.day) FROM rollup_device_day r
        JOIN device d ON d.id = r.device_id JOIN enterprise e ON e.id = d.enterprise_id
        WHERE r.day >= %(first)s AND r.day <= %(last)s AND {within}
          AND (r.good_points > 0 OR r.online_reported)
        GROUP BY e.credit_code
        UNION ALL
        SELECT e.credit_code, count(*) FROM {days}
        WHERE r.day >= %(first)s AND r.day <= %(last)s AND r.networked > 0 AND {local}
          AND {within}
        GROUP BY e.credit_code
        """
    ).format(within=restricted, days=_FEDERATED_DAYS, local=_NOT_LOCAL)
    cur = await conn.execute(query, params)
    return {str(cc): int(n) for cc, n in await cur.fetchall()}


async def networking_series_parts(
    conn: Conn,
    first: date,
    last: date,
    every: Every,
    *,
    within: Within | None = None,
    federated: bool = True,
) -> dict[date, dict[str, RateParts]]:
    """:func:`networking_parts` of every day, week or month of first..last at once,
    keyed by the first day of each (:func:`series_buckets`)."""
    remote = await _federated_series_parts(conn, first, last, every, within) if federated else {}
    buckets = series_buckets(first, last, every)
    params: dict[str, Any] = {
        "first": first,
        "last": last,
        "firsts": [b[0] for b in buckets],
        "lasts": [b[1] for b in buckets],
    }
    restricted = _within(within, params)
    # In-service device-days per bucket from the devices' service windows, grouped
    # first: most devices share them (none), so the cross join with the buckets is
    # small. Networked days are counted inside service only.
    query = sql.SQL(
        """
        WITH dev AS (
            SELECT d.id, d.enterprise_id, d.commissioned_on AS c, d.decommissioned_on AS x
            FROM device d JOIN enterprise e ON e.id = d.enterprise_id
            WHERE d.is_production_equipment AND {within}
        ), b AS (
            SELECT * FROM unnest(%(firsts)s::date[], %(lasts)s::date[]) AS b(first, last)
        ), service AS (
            SELECT b.first AS bucket, svc.enterprise_id,
                   sum(svc.k * greatest(least(b.last + 1, svc.x) - greatest(b.first, svc.c), 0))
                       AS days
            FROM (SELECT enterprise_id, c, x, count(*) AS k FROM dev GROUP BY 1, 2, 3) AS svc
            CROSS JOIN b
            GROUP BY 1, 2
        ), networked AS (
            SELECT {bucket} AS bucket, dev.enterprise_id, count(*) AS n
            FROM rollup_device_day r JOIN dev ON dev.id = r.device_id
            WHERE r.day >= %(first)s AND r.day <= %(last)s
              AND (r.good_points > 0 OR r.online_reported)
              AND (dev.c IS NULL OR r.day >= dev.c) AND (dev.x IS NULL OR r.day < dev.x)
            GROUP BY 1, 2
        )
        SELECT s.bucket, e.credit_code, coalesce(nw.n, 0)::int8, s.days::int8
        FROM service s JOIN enterprise e ON e.id = s.enterprise_id
        LEFT JOIN networked nw ON nw.bucket = s.bucket AND nw.enterprise_id = s.enterprise_id
        """
    ).format(within=restricted, bucket=_BUCKET_SQL[every])
    cur = await conn.execute(query, params)
    out: dict[date, dict[str, RateParts]] = {b[0]: dict(remote.get(b[0], {})) for b in buckets}
    for bucket, cc, n, d in await cur.fetchall():
        out[bucket][str(cc)] = RateParts(int(n), int(d))
    return out


async def networking_series(
    conn: Conn,
    first: date,
    last: date,
    every: Every,
    group_by: GroupBy,
    *,
    scope: Scope = Scope.ALL,
    within: Within | None = None,
) -> list[tuple[date, date, list[RateFigure]]]:
    """The period networking rate of every day, week or month of first..last, per group:
    each the figures :func:`networking_rates` gives for its days."""
    parts = await networking_series_parts(conn, first, last, every, within=within)
    facts = await enterprise_facts(conn, within=within)
    now = datetime.now(UTC)
    found = await _origins_by_bucket(conn, first, last, every, within)
    return [
        (b_first, b_last, aggregate(Kind.NETWORKING, parts[b_first], facts, group_by, scope,
                                    origins=Origins(now, found.get(b_first, {}))))
        for b_first, b_last in series_buckets(first, last, every)
    ]  # fmt: skip


async def current_networking_rates(
    conn: Conn,
    now: datetime,
    group_by: GroupBy,
    scope: Scope = Scope.ALL,
    window_h: float = DEFAULT_CURRENT_WINDOW_H,
    *,
    within: Within | None = None,
) -> list[RateFigure]:
    # Devices seen within hours: only local data can say (reports are per day), so
    # the federated enterprises are not in these figures (and their sources say local).
    parts = await current_networking_parts(conn, now, window_h, within=within)
    facts = await enterprise_facts(conn, within=within, federated=False)
    return aggregate(Kind.NETWORKING, parts, facts, group_by, scope,
                     origins=Origins(datetime.now(UTC)))  # fmt: skip


async def nc_rates(
    conn: Conn,
    day: date,
    group_by: GroupBy,
    scope: Scope = Scope.ALL,
    *,
    key_process: bool = False,
    within: Within | None = None,
) -> list[RateFigure]:
    parts = await nc_parts(conn, day, key_process=key_process, within=within)
    kind = Kind.NC_KEY_PROCESS if key_process else Kind.NC
    known = await nc_origins(conn, day, key_process=key_process, within=within)
    return aggregate(kind, parts, await enterprise_facts(conn, within=within), group_by, scope,
                     origins=known)  # fmt: skip


async def networking_evidence(
    conn: Conn,
    day: date,
    group_by: GroupBy,
    group: str | None,
    scope: Scope = Scope.ALL,
    *,
    within: Within | None = None,
) -> list[Evidence]:
    """Every device of the group (every group: None) and scope in the ledger on ``day``,
    in natural order: counted, not counted, or excluded from the denominator (not
    production equipment, not yet commissioned, decommissioned), each with its reason
    and last-seen time."""
    enterprises = await enterprise_facts(conn, within=within)
    members = [
        cc for cc, ent in enterprises.items()
        if ent.in_scope(scope) and (group is None or group in group_keys(ent, group_by))
    ]  # fmt: skip
    params: dict[str, Any] = {"day": day, "members": members}
    restricted = _within(within, params)
    query = sql.SQL(
        """
        SELECT e.credit_code, d.code, d.name, coalesce(r.good_points, 0),
               coalesce(r.online_reported, false),
               greatest(
                   -- The last hour with a good point, then the latest in it (an hour can
                   -- hold several tally rows until the rollup job compacts them).
                   (SELECT max(h.last_good) FROM device_hour_tally h
                    WHERE h.device_id = d.id AND h.hour = (
                        SELECT h2.hour FROM device_hour_tally h2
                        WHERE h2.device_id = d.id AND h2.last_good IS NOT NULL
                          AND h2.hour < ((%(day)s::date + 1)::timestamp AT TIME ZONE e.time_zone)
                        ORDER BY h2.hour DESC LIMIT 1)),
                   (SELECT max(c.time) FROM device_connectivity c
                    WHERE c.device_id = d.id AND c.online
                      AND c.time < ((%(day)s::date + 1)::timestamp AT TIME ZONE e.time_zone))),
               d.is_production_equipment, d.commissioned_on, d.decommissioned_on, e.time_zone
        FROM device d JOIN enterprise e ON e.id = d.enterprise_id
        LEFT JOIN rollup_device_day r ON r.device_id = d.id AND r.day = %(day)s
        WHERE e.credit_code = ANY(%(members)s) AND {within}
        """
    ).format(within=restricted)
    cur = await conn.execute(query, params)
    out: list[Evidence] = []
    for cc, code, name, good, online, last_seen, prod, comm, decomm, tz in await cur.fetchall():
        reason = evidence_reason(
            int(good), bool(online), production=bool(prod), commissioned_on=comm,
            decommissioned_on=decomm, day=day,
        )  # fmt: skip
        counted = reason in ("good_points", "online_reported")
        out.append(
            Evidence(str(cc), str(code), str(name), counted, int(good), bool(online),
                     last_seen, reason, str(tz))
        )  # fmt: skip
    out.sort(key=lambda e: (e.enterprise, natural_key(e.device)))
    return out


async def shift_windows(
    conn: Conn, enterprise: str, line: str | None, day: date
) -> list[tuple[str, datetime, datetime]]:
    """(name, start, end) of every shift starting on local ``day`` under the applicable
    calendar (the line's, else the enterprise's); empty without a calendar."""
    cur = await conn.execute(
        "SELECT time_zone FROM enterprise WHERE credit_code = %s", (enterprise,)
    )
    row = await cur.fetchone()
    if row is None:
        raise InvalidValue("enterprise", enterprise, "is not in the registry")
    zone = check_zone(str(row[0]))
    cur = await conn.execute(
        "SELECT c.definition FROM shift_calendar c JOIN enterprise e ON e.id = c.enterprise_id"
        " WHERE e.credit_code = %s",
        (enterprise,),
    )
    calendars = [ShiftCalendar.model_validate(r[0]) for r in await cur.fetchall()]
    calendar = calendar_for(calendars, enterprise, line)
    if calendar is None:
        return []
    start = to_ms(datetime.combine(day, datetime.min.time(), tzinfo=zone))
    return [
        (inst.name, from_ms(inst.start_ms), from_ms(inst.end_ms))
        for inst in shift_instances(calendar, zone, start, start + 86_400_000)
        if inst.day == day
    ]


async def shift_interval(
    conn: Conn, enterprise: str, line: str | None, day: date, shift: str
) -> tuple[datetime, datetime]:
    """The window of the named shift starting on local ``day``."""
    for name, start, end in await shift_windows(conn, enterprise, line, day):
        if name == shift:
            return start, end
    raise InvalidValue("shift", shift, f"has no shift of that name on {day.isoformat()}")


async def scope_shift_windows(
    conn: Conn, scope: OeeScope, day: date
) -> list[tuple[str, datetime, datetime]]:
    """The shifts starting on local ``day`` of a device, line or enterprise: under the
    line's calendar (a device's line) or the enterprise's; empty without a calendar."""
    if scope.level in (Level.CLUSTER, Level.REGION):
        raise InvalidValue("level", str(scope.level), "shifts belong to one enterprise")
    enterprise = scope.code if scope.level is Level.ENTERPRISE else scope.enterprise
    if enterprise is None:
        raise InvalidValue("enterprise", None, f"a {scope.level} scope needs its enterprise")
    line: str | None = scope.code if scope.level is Level.LINE else None
    if scope.level is Level.DEVICE:
        cur = await conn.execute(
            "SELECT l.code FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
            " LEFT JOIN line l ON l.id = d.line_id WHERE e.credit_code = %s AND d.code = %s",
            (enterprise, scope.code),
        )
        row = await cur.fetchone()
        line = None if row is None or row[0] is None else str(row[0])
    return await shift_windows(conn, enterprise, line, day)


async def oee_by_shift(
    conn: Conn, scope: OeeScope, day: date, *, within: Within | None = None
) -> list[tuple[str, OeeReport]]:
    """OEE of each shift starting on ``day`` ("why did OEE drop on night shift?").

    For a device, line or enterprise: the calendar is the line's (a device's line) or
    the enterprise's.
    """
    return [
        (name, await oee_for_interval(conn, scope, start, end, within=within))
        for name, start, end in await scope_shift_windows(conn, scope, day)
    ]


async def group_names(
    conn: Conn, group_by: GroupBy, *, only: Collection[str] | None = None
) -> dict[str, str]:
    """Display names of the groups (regions, clusters, enterprises); none for industries.

    ``only``: just these groups (the ones a list of figures holds)."""
    query: sql.Composable
    if group_by in (GroupBy.PROVINCE, GroupBy.CITY, GroupBy.COUNTY):
        query = sql.SQL("SELECT code, name FROM region WHERE level = %(level)s")
    elif group_by is GroupBy.CLUSTER:
        query = sql.SQL("SELECT code, name FROM cluster WHERE TRUE")
    elif group_by is GroupBy.ENTERPRISE:
        # Local names win over reported ones, as local figures do.
        query = sql.SQL(
            "SELECT * FROM (SELECT credit_code, name FROM enterprise UNION ALL"
            " SELECT credit_code, name FROM federated_enterprise f WHERE NOT EXISTS"
            " (SELECT 1 FROM enterprise l WHERE l.credit_code = f.credit_code)) AS named"
            " WHERE TRUE"
        )
    else:
        return {}
    if only is not None:
        key = "credit_code" if group_by is GroupBy.ENTERPRISE else "code"
        query = sql.SQL("{} AND {} = ANY(%(only)s)").format(query, sql.Identifier(key))
    params = {"level": str(group_by), "only": sorted(only or ())}
    cur = await conn.execute(query, params)
    return {str(code).strip(): str(name) for code, name in await cur.fetchall()}


async def in_reach(conn: Conn, scope: OeeScope, visibility: Visibility | None = None) -> bool:
    """Whether ``scope`` names something of the registry that ``visibility`` reaches at
    SUMMARY access (everything when None): a device, line or enterprise of an
    enterprise it may see, a cluster or region it may see
    (:meth:`~zhizao.access.Visibility.cluster_filter`,
    :meth:`~zhizao.access.Visibility.region_filter`). Outside is the same as missing.

    On the provincial instance, an enterprise known from reports, a line in its
    reports, and a cluster or region holding one it may see are in reach too (through
    the same enterprise filter); a device of one never is (devices are not reported)."""
    if await _in_local_reach(conn, scope, visibility):
        return True
    return await _in_federated_reach(conn, scope, visibility)


async def _in_federated_reach(conn: Conn, scope: OeeScope, visibility: Visibility | None) -> bool:
    if scope.level is Level.DEVICE:
        return False
    vis, params = (sql.SQL("TRUE"), {}) if visibility is None else visibility.enterprise_filter()
    params = {**params, "code": scope.code, "ent": scope.enterprise}
    query: sql.Composable
    if scope.level is Level.LINE:
        query = sql.SQL(
            "SELECT 1 FROM {days} WHERE e.credit_code = %(ent)s AND r.lines ? %(code)s"
            " AND {local} AND {vis} LIMIT 1"
        ).format(days=_FEDERATED_DAYS, local=_NOT_LOCAL, vis=vis)
    else:
        where, extra = scope_filter(scope)
        query = sql.SQL(
            "SELECT 1 FROM federated_enterprise e WHERE {where} AND {local} AND {vis} LIMIT 1"
        ).format(where=where, local=_NOT_LOCAL, vis=vis)
        params.update(extra)
    cur = await conn.execute(query, params)
    return await cur.fetchone() is not None


async def _in_local_reach(conn: Conn, scope: OeeScope, visibility: Visibility | None) -> bool:
    params: dict[str, Any] = {"code": scope.code, "ent": scope.enterprise}
    if scope.level in (Level.DEVICE, Level.LINE, Level.ENTERPRISE):
        vis, extra = (sql.SQL("TRUE"), {}) if visibility is None else visibility.enterprise_filter()
        if scope.level is Level.DEVICE:
            query = sql.SQL(
                "SELECT 1 FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
                " WHERE e.credit_code = %(ent)s AND d.code = %(code)s AND {}"
            )
        elif scope.level is Level.LINE:
            query = sql.SQL(
                "SELECT 1 FROM line l JOIN enterprise e ON e.id = l.enterprise_id"
                " WHERE e.credit_code = %(ent)s AND l.code = %(code)s AND {}"
            )
        else:
            query = sql.SQL("SELECT 1 FROM enterprise e WHERE e.credit_code = %(code)s AND {}")
    elif scope.level is Level.CLUSTER:
        vis, extra = (sql.SQL("TRUE"), {}) if visibility is None else visibility.cluster_filter()
        query = sql.SQL("SELECT 1 FROM cluster c WHERE c.code = %(code)s AND {}")
    else:
        vis, extra = (sql.SQL("TRUE"), {}) if visibility is None else visibility.region_filter()
        query = sql.SQL("SELECT 1 FROM region r WHERE r.code = %(code)s AND {}")
    cur = await conn.execute(query.format(vis), {**params, **extra})
    return await cur.fetchone() is not None
