"""Shapes shared by several routes: pages and local times."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

T = TypeVar("T")


class RequestBody(BaseModel):
    """A request body that refuses fields it does not know: a misspelt field in a PATCH
    (``decomissioned_on``) is a 422 naming it, not a change silently not made."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list, with the total the filters match (in the caller's scope)."""

    total: int = Field(examples=[42])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])
    items: list[T]


Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")]


def _with_offset(value: datetime) -> str:
    return value.isoformat()


#: A time in an answer, ISO 8601 with its numeric UTC offset: pydantic writes an
#: offset of zero as ``Z``, so an enterprise in UTC (or London in winter) would read
#: ``…T08:00:00Z`` where every other enterprise reads ``…+08:00``; this writes
#: ``+00:00`` like any other offset. The schema stays a plain ``date-time``.
LocalTime = Annotated[
    datetime,
    PlainSerializer(_with_offset, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def local(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    """An instant as a reader of ``zone`` sees it (ISO 8601 with that offset)."""
    return None if value is None else value.astimezone(zone)
