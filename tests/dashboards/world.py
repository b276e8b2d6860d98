"""The dashboards' world: the sample ledger (8 enterprises, 4 clusters, 63 devices) and
one day of the ``factory`` simulator scenario, rolled up.

The scenario's timeline (edge/simulator/timeline.py: exact state intervals and parts, the
ground truth the simulator replays) is written as facts for its enterprise 宁波瑞驰
(HOME, a two-shift calendar 08:00-16:00 and 16:00-24:00; its robot RB-202 is left
silent), and the timelines of its first
devices are replayed on the first production devices of 慈溪宏拓 (OTHER): a second tenant
whose rows the first must never see. No MQTT or OPC UA here (tests/test_ground_truth.py
covers that path); the facts are what that path stores.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from edge.simulator.scenario import bundled, load_scenario
from edge.simulator.timeline import DeviceTimeline, build_timeline
from zhizao.calendar import parse_calendars
from zhizao.storage.connection import Conn
from zhizao.storage.facts import CountRow, FactBatch, StateRow, write_facts
from zhizao.storage.rollups import run_rollups, store_calendars

SH = ZoneInfo("Asia/Shanghai")
HOME = "91330206MA2GR7K17L"  # 宁波瑞驰, the scenario's enterprise (cluster NB-AUTO-PARTS)
OTHER = "91330282MA28CX3P78"  # 慈溪宏拓, the same cluster
DAY = date(2026, 3, 2)
SILENT = "RB-202"
SCENARIO = load_scenario(bundled("factory"))


def day_range(day: date = DAY) -> tuple[datetime, datetime]:
    """Grafana's "today" on ``day``: local 00:00:00 to 23:59:59 (inclusive end)."""
    start = datetime(day.year, day.month, day.day, tzinfo=SH)
    return start, start + timedelta(days=1) - timedelta(seconds=1)


async def _device_ids(conn: Conn, credit: str) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT d.code, d.id FROM device d JOIN enterprise e ON e.id = d.enterprise_id"
        " WHERE e.credit_code = %s AND d.is_production_equipment ORDER BY d.code",
        (credit,),
    )
    return {str(code): int(pk) for code, pk in await cur.fetchall()}


def _facts(timelines: dict[str, DeviceTimeline], ids: dict[str, int]) -> FactBatch:
    batch = FactBatch()
    for code, pk in ids.items():
        timeline = timelines[code]
        for interval in timeline.intervals:
            batch.states.append(
                StateRow(pk, interval.start, interval.state, reason=interval.reason)
            )
        for part in timeline.parts:
            batch.counts.append(CountRow(pk, part.ts, 1 if part.reject else 0, 1))
    return batch


async def fill(conn: Conn) -> None:
    """Write the day's facts and calendar, and bring the rollups up to date."""
    timelines = build_timeline(SCENARIO)
    home = await _device_ids(conn, HOME)
    other = await _device_ids(conn, OTHER)
    # RB-202 stays silent: the enterprise has a device that is not networked.
    played = {code: home[code] for code in timelines if code in home and code != SILENT}
    replayed = dict(zip(list(timelines)[:3], list(other.values())[:3], strict=True))
    calendars = parse_calendars(
        {
            "calendars": [
                {
                    "enterprise": HOME,
                    "name": "两班制",
                    "shifts": [
                        {"name": "早班", "start": "08:00", "end": "16:00"},
                        {"name": "中班", "start": "16:00", "end": "00:00"},
                    ],
                }
            ]
        }
    )
    async with conn.transaction():
        await store_calendars(conn, calendars)
        await write_facts(conn, _facts(timelines, played))
        batch = FactBatch()
        for code, pk in replayed.items():
            part = _facts(timelines, {code: pk})
            batch.states += part.states
            batch.counts += part.counts
        await write_facts(conn, batch)
    await run_rollups(conn, until=datetime(2026, 3, 4, tzinfo=SH), history_days=3)
