"""Bulk ledger upload (POST /api/v1/ledger/import): the CLI's importer over HTTP."""

from __future__ import annotations

from tests.api.matrix import Case


def device_csv(ent: str) -> bytes:
    return f"统一社会信用代码,设备编号,设备名称,设备类型\n{ent},X01,新设备,数控机床\n".encode()


CASES = [
    Case(
        "POST",
        "/api/v1/ledger/import",
        "writer",
        files=lambda p, e: {"file": ("设备台账.csv", device_csv(e), "text/csv")},
        note="an engineer's rows of another enterprise are row errors (tested below)",
    ),
]
