"""The textbook shift (the classic worked example of OEE), shared by pure and storage tests.

An 8-hour shift 06:00-14:00 with two 15-minute breaks and a 30-minute meal: 420
minutes planned. 47 minutes of breakdown leave 373 minutes running. Ideal cycle time
1 s (60 parts a minute); 19,271 parts made, 423 of them rejected.

    A = 373 / 420 = 0.8881   P = 19,271 / 22,380 = 0.8611   Q = 18,848 / 19,271 = 0.9780
    OEE = 18,848 s / 25,200 s = 0.7479
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from zhizao.calendar import ShiftCalendar, to_ms
from zhizao.intervals import CountPoint, StatePoint
from zhizao.wire import StateClass as S

SH = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 3, 2, tzinfo=SH)  # a Monday
EXPECTED = {"availability": 0.8881, "performance": 0.8611, "quality": 0.9780, "oee": 0.7479}


def local(hh: int, mm: int = 0) -> int:
    return to_ms(DAY.replace(hour=hh, minute=mm))


def calendar(enterprise: str) -> ShiftCalendar:
    return ShiftCalendar.model_validate(
        {
            "enterprise": enterprise,
            "name": "textbook",
            "shifts": [
                {
                    "name": "早班",
                    "start": "06:00",
                    "end": "14:00",
                    "breaks": [
                        {"name": "break", "start": "09:00", "end": "09:15"},
                        {"name": "meal", "start": "11:00", "end": "11:30"},
                        {"name": "break", "start": "12:30", "end": "12:45"},
                    ],
                }
            ],
        }
    )


def states() -> list[StatePoint]:
    return [
        StatePoint(local(0), S.PLANNED_STOP),  # no shift before 06:00
        StatePoint(local(6), S.RUNNING),
        StatePoint(local(7), S.UNPLANNED_STOP),  # 47 minutes of breakdown
        StatePoint(local(7, 47), S.RUNNING),
        StatePoint(local(9), S.PLANNED_STOP),
        StatePoint(local(9, 15), S.RUNNING),
        StatePoint(local(11), S.PLANNED_STOP),
        StatePoint(local(11, 30), S.RUNNING),
        StatePoint(local(12, 30), S.PLANNED_STOP),
        StatePoint(local(12, 45), S.RUNNING),
        StatePoint(local(14), S.PLANNED_STOP),  # shift over
    ]


def counts() -> list[CountPoint]:
    """19,271 parts in hourly batches, 423 rejects among them."""
    good, reject = 18_848, 423
    hours = [6, 8, 9, 10, 11, 12, 13]
    out = []
    for i, hh in enumerate(hours):
        g = good // len(hours) + (good % len(hours) if i == 0 else 0)
        r = reject // len(hours) + (reject % len(hours) if i == 0 else 0)
        out.append(CountPoint(local(hh, 30), g, r))
    return out


def day_bounds() -> tuple[int, int]:
    return to_ms(DAY), to_ms(DAY + timedelta(days=1))


def shift_bounds() -> tuple[int, int]:
    return to_ms(datetime.combine(DAY.date(), time(6), tzinfo=SH)), local(14)
