"""The registry's top through the API: regions, clusters, enterprises, sites, lines.

Who may do what is the matrix's (``CASES``); these tests assert what a user of each
role sees: the rows, the totals, the errors and the audit trail.
"""

from __future__ import annotations

import psycopg

from tests.api.conftest import ApiClient
from tests.api.matrix import Case
from tests.api.world import NB1, NB2, NB_MOLD, WZ, WZ_SHOE
from zhizao.codes import make_credit_code

CLUSTER_OF = {NB1: NB_MOLD, WZ: WZ_SHOE}
NEW_ENTERPRISE = make_credit_code("91330203MA2NB0003")


def with_sites(db_url: str) -> None:
    """A site W1 in NB1 and in WZ (the seeded world has none)."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO site (enterprise_id, code, name)"
            " SELECT id, 'W1', '一号车间' FROM enterprise WHERE credit_code = ANY(%s)",
            ([NB1, WZ],),
        )


def _ent(ent: str, rest: str = "") -> str:
    return f"/api/v1/enterprises/{ent}{rest}"


CASES = [
    # Regions are public reference data: every authenticated user reads them.
    Case("GET", "/api/v1/regions", "list"),
    Case(
        "GET",
        "/api/v1/regions/{code}",
        "self",
        url=lambda e: "/api/v1/regions/330203",
        note="reference data: the same for every authenticated user",
    ),
    Case(
        "POST",
        "/api/v1/regions",
        "admin",
        ok=201,
        body=lambda p, e: {"code": "320000", "name": "江苏省"},
    ),
    Case(
        "PATCH",
        "/api/v1/regions/{code}",
        "admin",
        url=lambda e: "/api/v1/regions/330203",
        body=lambda p, e: {"name": "海曙"},
    ),
    Case("GET", "/api/v1/clusters", "list"),
    Case(
        "GET",
        "/api/v1/clusters/{code}",
        "summary",
        url=lambda e: f"/api/v1/clusters/{CLUSTER_OF[e]}",
    ),
    Case(
        "POST",
        "/api/v1/clusters",
        "admin",
        ok=201,
        body=lambda p, e: {
            "code": "NB-PUMP",
            "name": "宁波泵阀产业集群",
            "region_code": "330203",
            "industry_code": "C34",
        },
    ),
    Case(
        "PATCH",
        "/api/v1/clusters/{code}",
        "admin",
        url=lambda e: f"/api/v1/clusters/{NB_MOLD}",
        body=lambda p, e: {"name": "宁波模具集群"},
    ),
    Case("GET", "/api/v1/enterprises", "list", item_enterprise=lambda item: item["credit_code"]),
    Case("GET", "/api/v1/enterprises/{credit_code}", "summary", url=_ent),
    Case(
        "POST",
        "/api/v1/enterprises",
        "admin",
        ok=201,
        body=lambda p, e: {
            "credit_code": NEW_ENTERPRISE,
            "name": "宁波丁精密机械有限公司",
            "region_code": "330203",
            "industry_code": "C3484",
        },
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}",
        "admin",
        url=_ent,
        body=lambda p, e: {"key_enterprise": True},
    ),
    Case(
        "GET", "/api/v1/enterprises/{credit_code}/sites", "summary", url=lambda e: _ent(e, "/sites")
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/sites",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/sites"),
        body=lambda p, e: {"code": "W2", "name": "二号车间"},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/sites/{code}",
        "summary",
        url=lambda e: _ent(e, "/sites/W1"),
        prepare=with_sites,
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/sites/{code}",
        "write",
        url=lambda e: _ent(e, "/sites/W1"),
        body=lambda p, e: {"name": "冲压车间"},
        prepare=with_sites,
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/sites/{code}",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/sites/W1"),
        prepare=with_sites,
    ),
    Case(
        "GET", "/api/v1/enterprises/{credit_code}/lines", "summary", url=lambda e: _ent(e, "/lines")
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/lines",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/lines"),
        body=lambda p, e: {"code": "L2", "name": "二号线"},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/lines/{code}",
        "summary",
        url=lambda e: _ent(e, "/lines/L1"),
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/lines/{code}",
        "write",
        url=lambda e: _ent(e, "/lines/L1"),
        body=lambda p, e: {"name": "总装一线"},
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/lines/{code}",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/lines/L1"),
    ),
]
