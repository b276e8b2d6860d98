"""Devices, edge gateways and shift calendars through the API.

Who may do what is the matrix's (``CASES``); these tests assert what a user of each
role sees: the rows, the totals, the errors and the audit trail.
"""

from __future__ import annotations

from typing import Any

from tests.api.matrix import Case
from tests.api.world import NB1, WZ

DEVICE_OF = {NB1: "M01", WZ: "S01"}
EDGE_OF = {NB1: "edge-nb1", WZ: "edge-wz"}
CALENDAR: dict[str, Any] = {
    "name": "一班制 2026",
    "shifts": [
        {
            "name": "白班",
            "start": "08:00",
            "end": "17:00",
            "breaks": [{"start": "12:00", "end": "13:00", "name": "午休"}],
        }
    ],
    "holidays": [{"name": "国庆节", "from": "2026-10-01", "to": "2026-10-07"}],
    "workdays": [{"date": "2026-10-10", "as": "fri", "name": "国庆调休"}],
}


def _ent(ent: str, rest: str = "") -> str:
    return f"/api/v1/enterprises/{ent}{rest}"


CASES = [
    Case("GET", "/api/v1/devices", "list", item_enterprise=lambda item: item["enterprise"]),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/devices",
        "summary",
        url=lambda e: _ent(e, "/devices"),
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/devices",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/devices"),
        body=lambda p, e: {
            "code": "N01",
            "name": "新加工中心",
            "device_type": "cnc_machine_tool",
            "line_code": "L1",
            "is_nc": True,
        },
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/devices/{code}",
        "summary",
        url=lambda e: _ent(e, f"/devices/{DEVICE_OF[e]}"),
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/devices/{code}",
        "write",
        url=lambda e: _ent(e, f"/devices/{DEVICE_OF[e]}"),
        body=lambda p, e: {"decommissioned_on": "2027-01-01"},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/edges",
        "summary",
        url=lambda e: _ent(e, "/edges"),
    ),
    Case(
        "POST",
        "/api/v1/enterprises/{credit_code}/edges",
        "write",
        ok=201,
        url=lambda e: _ent(e, "/edges"),
        body=lambda p, e: {"edge_id": f"edge-{DEVICE_OF[e]}", "device_codes": [DEVICE_OF[e]]},
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/edges/{edge_id}",
        "summary",
        url=lambda e: _ent(e, f"/edges/{EDGE_OF[e]}"),
    ),
    Case(
        "PATCH",
        "/api/v1/enterprises/{credit_code}/edges/{edge_id}",
        "write",
        url=lambda e: _ent(e, f"/edges/{EDGE_OF[e]}"),
        body=lambda p, e: {"name": "一号线网关"},
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/edges/{edge_id}",
        "write",
        ok=204,
        url=lambda e: _ent(e, f"/edges/{EDGE_OF[e]}"),
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/calendars",
        "summary",
        url=lambda e: _ent(e, "/calendars"),
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/calendar",
        "summary",
        url=lambda e: _ent(e, "/calendar"),
    ),
    Case(
        "PUT",
        "/api/v1/enterprises/{credit_code}/calendar",
        "write",
        url=lambda e: _ent(e, "/calendar"),
        body=lambda p, e: CALENDAR,
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/calendar",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/calendar"),
        note="204 whether or not there was one (afterwards there is none)",
    ),
    Case(
        "GET",
        "/api/v1/enterprises/{credit_code}/lines/{code}/calendar",
        "summary",
        url=lambda e: _ent(e, "/lines/L1/calendar"),
    ),
    Case(
        "PUT",
        "/api/v1/enterprises/{credit_code}/lines/{code}/calendar",
        "write",
        url=lambda e: _ent(e, "/lines/L1/calendar"),
        body=lambda p, e: CALENDAR,
    ),
    Case(
        "DELETE",
        "/api/v1/enterprises/{credit_code}/lines/{code}/calendar",
        "write",
        ok=204,
        url=lambda e: _ent(e, "/lines/L1/calendar"),
    ),
]
