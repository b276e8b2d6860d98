"""A typed PostgreSQL query for the Grafana foundation SDK.

The SDK ships query types for many datasources but none for PostgreSQL. This one
implements its ``cog.variants.Dataquery`` interface (``to_json``/``from_json``) and is
registered with the SDK's runtime for the plugin id of Grafana's PostgreSQL datasource,
so that ``Dashboard.from_json`` reads our dashboards back with these objects instead of
untyped ``UnknownDataquery`` bags.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

#: Grafana's PostgreSQL datasource plugin (id since Grafana 10.3; "postgres" before).
POSTGRES_TYPE = "grafana-postgresql-datasource"


class Format(StrEnum):
    TABLE = "table"
    TIME_SERIES = "time_series"


class PostgresQuery(cogvariants.Dataquery):
    """One SQL target of a panel, in code mode (Grafana's ``rawQuery``)."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        format: Format = Format.TABLE,
        datasource: DataSourceRef | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = format
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "editorMode": "code",
            "rawQuery": True,
            "format": str(self.format),
            "rawSql": self.raw_sql,
        }
        if self.datasource is not None:
            out["datasource"] = self.datasource.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        source = data.get("datasource")
        return cls(
            ref_id=str(data.get("refId", "A")),
            raw_sql=str(data.get("rawSql", "")),
            format=Format(data.get("format", "table")),
            datasource=None if source is None else DataSourceRef.from_json(source),
        )


class PostgresQueryBuilder(cogbuilder.Builder[PostgresQuery]):
    def __init__(self) -> None:
        self._internal = PostgresQuery()

    def build(self) -> PostgresQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def raw_sql(self, raw_sql: str) -> Self:
        self._internal.raw_sql = raw_sql
        return self

    def format(self, format: Format) -> Self:
        self._internal.format = format
        return self

    def datasource(self, datasource: DataSourceRef) -> Self:
        self._internal.datasource = datasource
        return self


def variant_config() -> cogruntime.DataqueryConfig:
    return cogruntime.DataqueryConfig(
        identifier=POSTGRES_TYPE, from_json_hook=PostgresQuery.from_json
    )


def register() -> None:
    """Make the SDK decode PostgreSQL targets as :class:`PostgresQuery` (idempotent)."""
    cogruntime.register_dataquery_variant(variant_config())
