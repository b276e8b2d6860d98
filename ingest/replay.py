"""Replay dead letters after the registry is fixed (a device added to the ledger, say).

Each pending dead letter goes through the same validation and authorisation as a
live message, against today's registry. If any of its points now pass, they are
written (idempotently) with the dead letters of the points that still fail, and the
original is marked replayed, all in one transaction. A dead letter that still fails
as a whole stays pending, untouched, and the report says why.

A dead point is replayed as a one-point batch with the topic, enterprise, edge and
sequence number it came with. Sequence tracking is not applied to replays: the
sequence number was already counted when the message first arrived.

A dead letter that cannot be replayed at all (its payload unreadable, or the database
refusing what it now holds) is reported with its id and why, and the run goes on with
the next one; it stays pending. Only a database outage ends the run early.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ingest.convert import Converted, Converter, Inbound
from ingest.directory import DEFAULT_MAX_METRIC_NAMES, Directory
from ingest.writer import WRITE_ERRORS, caused_by_data, database_reason, failure_of
from zhizao.errors import ContractError, DataRefused
from zhizao.storage.connection import Conn, connect
from zhizao.storage.deadletters import (
    StoredDeadLetter,
    list_dead_letters,
    mark_replayed,
    write_dead_letters,
)
from zhizao.storage.facts import reset_session, write_facts, write_missed_deaths
from zhizao.wire import CONTRACT_VERSION, read_json

T = TypeVar("T")


@dataclass
class ReplayReport:
    examined: int = 0
    replayed: int = 0
    rows_new: int = 0
    still_dead_points: int = 0
    still_failing: list[tuple[int, str]] = field(default_factory=list)
    #: Letters that could not be replayed: unreadable, or refused by the database.
    failed: list[tuple[int, str]] = field(default_factory=list)


class _OneConnection:
    """Look-ups on one connection, without retries: a CLI run just fails."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def run_lookup(self, stage: str, work: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            return await work(self._conn)
        except WRITE_ERRORS as exc:
            if failure_of(exc) == "data":
                raise DataRefused(database_reason(exc).removeprefix("database: ")) from exc
            raise


def _as_message(letter: StoredDeadLetter) -> Inbound:
    received_ms = int(letter.received_at.timestamp() * 1000)
    if letter.point_index is None:
        return Inbound(topic=letter.topic, payload=letter.payload, received_ms=0)
    envelope = {
        "v": CONTRACT_VERSION,
        "enterprise": letter.enterprise,
        "edge": letter.edge_id,
        "seq": letter.seq or 0,
        "sent_at": received_ms,
        "points": [read_json(letter.payload)],
    }
    return Inbound(topic=letter.topic, payload=json.dumps(envelope).encode(), received_ms=0)


async def replay_dead_letters(
    db_url: str,
    *,
    ids: Sequence[int] | None = None,
    enterprise: str | None = None,
    reason_contains: str | None = None,
    limit: int = 10_000,
    max_future_s: float = 86_400,
    max_metric_names: int = DEFAULT_MAX_METRIC_NAMES,
) -> ReplayReport:
    report = ReplayReport()
    lookups = await connect(db_url, autocommit=True)
    writes = await connect(db_url)
    async with lookups, writes:
        converter = Converter(
            Directory(_OneConnection(lookups), miss_retry_s=0, max_metric_names=max_metric_names),
            max_future_ms=int(max_future_s * 1000),
        )
        after = 0
        while report.examined < limit:
            letters = await list_dead_letters(
                lookups,
                ids=ids,
                enterprise=enterprise,
                reason_contains=reason_contains,
                limit=min(500, limit - report.examined),
                after_id=after,
            )
            if not letters:
                break
            for letter in letters:
                after = letter.id
                report.examined += 1
                try:
                    message = _as_message(letter)
                except ContractError as exc:
                    report.failed.append((letter.id, f"unreadable dead letter: {exc}"))
                    continue
                converted = await converter.convert(message)
                if converted.message_dead or not (converted.facts or converted.missed_deaths):
                    reason = converted.dead[0].reason if converted.dead else "nothing to store"
                    report.still_failing.append((letter.id, reason))
                    continue
                try:
                    await _write(writes, letter, converted, report)
                except WRITE_ERRORS as exc:
                    if not caused_by_data(exc):
                        raise  # the database is gone: the rest cannot be written either
                    reset_session(writes)
                    report.failed.append((letter.id, database_reason(exc)))
    return report


async def _write(
    writes: Conn, letter: StoredDeadLetter, converted: Converted, report: ReplayReport
) -> None:
    async with writes.transaction():
        counts = await write_facts(writes, converted.facts)
        missed = await write_missed_deaths(writes, converted.missed_deaths)
        await write_dead_letters(writes, converted.dead)
        await mark_replayed(writes, [letter.id])
    report.replayed += 1
    report.rows_new += counts.new + missed
    report.still_dead_points += len(converted.dead)
