"""Who may see and change what: roles scoped to the hierarchy (DESIGN §8).

A principal (a user, or a machine token acting for one) holds *grants*: a role and
the part of the hierarchy it applies to.

=====================  ===========  ==========================================
role                   scope        may
=====================  ===========  ==========================================
admin                  (none)       everything, everywhere
enterprise_engineer    credit code  read everything of the enterprise, raw
                                    telemetry included; change its registry
enterprise_viewer      credit code  read everything of the enterprise
cluster_operator       cluster      KPIs, device counts and connectivity of the
                                    cluster's enterprises; no raw process values
regional_analyst       region code  the same for the enterprises of a province,
                                    city or county (GB/T 2260 prefix)
=====================  ===========  ==========================================

:func:`visibility` turns the grants into a :class:`Visibility`, and
:meth:`Visibility.enterprise_filter` into the one SQL fragment over the enterprise
table that every query, list, page total, export and error message of the API goes
through. No route builds its own filter, so a route cannot forget a tenant: an
object outside the fragment does not exist for the caller (404, never 403, so its
existence is not disclosed either). :meth:`Visibility.cluster_filter` and
:meth:`Visibility.region_filter` are built on it: the clusters and regions a
principal may name (a region holding one enterprise it may see can be asked for;
what comes back is computed over the enterprises it may see, nothing more).

Three levels of access, each a subset of the one before:

* ``SUMMARY``: KPIs, counts of devices, connectivity summaries, the ledger;
* ``RAW``: metric points, state timelines, production counts, sequence gaps;
  only for enterprise roles and admins (raw process values never leave the
  enterprise scope);
* ``WRITE``: changes to the registry below the enterprise; engineers and admins.

Regions, clusters and enterprises themselves are created and changed by admins only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from psycopg import sql

from zhizao import codes
from zhizao.errors import InvalidValue
from zhizao.registry import is_code


class Role(StrEnum):
    ADMIN = "admin"
    ENTERPRISE_ENGINEER = "enterprise_engineer"
    ENTERPRISE_VIEWER = "enterprise_viewer"
    CLUSTER_OPERATOR = "cluster_operator"
    REGIONAL_ANALYST = "regional_analyst"

    @property
    def label_zh(self) -> str:
        return ROLE_LABELS[self]


ROLE_LABELS: dict[Role, str] = {
    Role.ADMIN: "平台管理员",
    Role.ENTERPRISE_ENGINEER: "企业工程师",
    Role.ENTERPRISE_VIEWER: "企业查看者",
    Role.CLUSTER_OPERATOR: "产业集群运营",
    Role.REGIONAL_ANALYST: "区域分析员(省/市/县)",
}

_ENTERPRISE_ROLES = frozenset({Role.ENTERPRISE_ENGINEER, Role.ENTERPRISE_VIEWER})


class Access(StrEnum):
    SUMMARY = "summary"
    RAW = "raw"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Grant:
    role: Role
    scope: str | None = None

    def __post_init__(self) -> None:
        check_grant(self.role, self.scope)

    def __str__(self) -> str:
        return self.role.value if self.scope is None else f"{self.role.value}:{self.scope}"


def check_grant(role: Role, scope: str | None) -> None:
    """Raise InvalidValue unless ``scope`` is the kind of code ``role`` applies to."""
    if role is Role.ADMIN:
        if scope is not None:
            raise InvalidValue("scope", scope, "an admin grant has no scope")
        return
    if scope is None:
        raise InvalidValue("scope", scope, f"a {role.value} grant needs a scope")
    if role in _ENTERPRISE_ROLES:
        codes.validate_credit_code(scope)
    elif role is Role.REGIONAL_ANALYST:
        codes.validate_region_code(scope)
    elif not is_code(scope):
        raise InvalidValue("scope", scope, "must be a cluster code")


def parse_grant(text: str) -> Grant:
    """``admin``, ``enterprise_engineer:91330200MA2H7XYZ4K``, ``regional_analyst:330200``."""
    role_text, _, scope = text.partition(":")
    try:
        role = Role(role_text.strip())
    except ValueError as exc:
        raise InvalidValue(
            "role", role_text, f"must be one of {', '.join(r.value for r in Role)}"
        ) from exc
    return Grant(role, scope.strip() or None)


@dataclass(frozen=True, slots=True)
class Visibility:
    """What a principal's grants reach, by kind of scope."""

    admin: bool = False
    #: Credit codes readable raw (enterprise roles), and those also writable.
    enterprises: frozenset[str] = frozenset()
    writable: frozenset[str] = frozenset()
    clusters: frozenset[str] = frozenset()
    #: GB/T 2260 prefixes: 33 for a province, 3302 for a city, 330203 for a county.
    region_prefixes: frozenset[str] = frozenset()

    @property
    def nothing(self) -> bool:
        return not (self.admin or self.enterprises or self.clusters or self.region_prefixes)

    def can_raw_anything(self) -> bool:
        return self.admin or bool(self.enterprises)

    def enterprise_filter(
        self, alias: str = "e", access: Access = Access.SUMMARY
    ) -> tuple[sql.Composable, dict[str, Any]]:
        """A boolean SQL expression over the enterprise row ``alias``, and its parameters.

        Parameters are named ``_vis_*`` so the fragment composes with a query's own
        named parameters.
        """
        if self.admin:
            return sql.SQL("TRUE"), {}
        col = sql.Identifier(alias)
        parts: list[sql.Composable] = []
        params: dict[str, Any] = {}
        own = self.writable if access is Access.WRITE else self.enterprises
        if own:
            parts.append(sql.SQL("{}.credit_code = ANY(%(_vis_ents)s)").format(col))
            params["_vis_ents"] = sorted(own)
        if access is Access.SUMMARY:
            if self.clusters:
                parts.append(
                    # By code, over local and federated enterprises alike (migration
                    # 0014): a cluster's operator on the province reaches its
                    # enterprises known only from the cluster instance's reports.
                    sql.SQL(
                        "{}.id IN (SELECT m.enterprise_id FROM enterprise_cluster_code m"
                        " WHERE m.code = ANY(%(_vis_clusters)s))"
                    ).format(col)
                )
                params["_vis_clusters"] = sorted(self.clusters)
            if self.region_prefixes:
                parts.append(sql.SQL("{}.region_code LIKE ANY(%(_vis_regions)s)").format(col))
                params["_vis_regions"] = [f"{p}%" for p in sorted(self.region_prefixes)]
        if not parts:
            return sql.SQL("FALSE"), {}
        return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)), params

    def cluster_filter(self, alias: str = "c") -> tuple[sql.Composable, dict[str, Any]]:
        """Clusters a principal may see: its own, those in its regions, and those of
        the enterprises it may see."""
        if self.admin:
            return sql.SQL("TRUE"), {}
        col = sql.Identifier(alias)
        ent_sql, params = self.enterprise_filter("ve")
        parts: list[sql.Composable] = [
            sql.SQL(
                "{}.id IN (SELECT ec.cluster_id FROM enterprise_cluster ec"
                " JOIN enterprise ve ON ve.id = ec.enterprise_id WHERE {})"
            ).format(col, ent_sql)
        ]
        if self.clusters:
            parts.append(sql.SQL("{}.code = ANY(%(_vis_clusters)s)").format(col))
            params["_vis_clusters"] = sorted(self.clusters)
        if self.region_prefixes:
            parts.append(sql.SQL("{}.region_code LIKE ANY(%(_vis_regions)s)").format(col))
            params["_vis_regions"] = [f"{p}%" for p in sorted(self.region_prefixes)]
        return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)), params

    def region_filter(self, alias: str = "r") -> tuple[sql.Composable, dict[str, Any]]:
        """Regions a principal may name (SUMMARY): those inside its regional grants, and
        those holding an enterprise it may see. A cluster operator may ask for its
        province; what it gets there is computed over its enterprises only."""
        if self.admin:
            return sql.SQL("TRUE"), {}
        col = sql.Identifier(alias)
        ent_sql, params = self.enterprise_filter("ve")
        parts: list[sql.Composable] = [
            sql.SQL(
                "EXISTS (SELECT 1 FROM enterprise ve WHERE {ent} AND starts_with(ve.region_code,"
                " left({r}.code, CASE {r}.level WHEN 'province' THEN 2 WHEN 'city' THEN 4"
                " ELSE 6 END)))"
            ).format(ent=ent_sql, r=col)
        ]
        if self.region_prefixes:
            parts.append(sql.SQL("{}.code LIKE ANY(%(_vis_regions)s)").format(col))
            params["_vis_regions"] = [f"{p}%" for p in sorted(self.region_prefixes)]
        return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)), params


def visibility(grants: Iterable[Grant]) -> Visibility:
    """The one function that turns grants into what they reach (module doc)."""
    admin = False
    enterprises: set[str] = set()
    writable: set[str] = set()
    clusters: set[str] = set()
    prefixes: set[str] = set()
    for grant in grants:
        if grant.role is Role.ADMIN:
            admin = True
            continue
        scope = grant.scope or ""  # never empty: Grant checks it
        if grant.role in _ENTERPRISE_ROLES:
            enterprises.add(scope)
            if grant.role is Role.ENTERPRISE_ENGINEER:
                writable.add(scope)
        elif grant.role is Role.CLUSTER_OPERATOR:
            clusters.add(scope)
        else:
            prefixes.add(codes.region_prefix(scope))
    # A county inside a city already granted adds nothing; keep the filter short.
    prefixes = {p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes)}
    return Visibility(
        admin=admin,
        enterprises=frozenset(enterprises),
        writable=frozenset(writable),
        clusters=frozenset(clusters),
        region_prefixes=frozenset(prefixes),
    )


__all__ = [
    "Access",
    "Grant",
    "Role",
    "Visibility",
    "check_grant",
    "parse_grant",
    "visibility",
]
