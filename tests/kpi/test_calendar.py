"""Shift calendars: the 2026 sample, 调休 and holidays, night shifts, breaks, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.kpi.seed import ENT
from zhizao.calendar import (
    Schedule,
    ShiftCalendar,
    calendar_for,
    parse_calendars,
    read_calendar_file,
    scheduled_intervals,
    shift_instances,
    to_ms,
)
from zhizao.errors import ConfigError

SAMPLE = Path(__file__).parents[2] / "zhizao" / "data" / "calendar_2026.yaml"
SH = ZoneInfo("Asia/Shanghai")
H = 3_600_000


def _day_hours(calendar: ShiftCalendar | None, day: date, zone: ZoneInfo = SH) -> float:
    start = to_ms(datetime.combine(day, time(0), tzinfo=zone))
    end = to_ms(datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone))
    return sum(e - s for s, e in scheduled_intervals(calendar, zone, start, end)) / H


def _one_shift(**extra: object) -> ShiftCalendar:
    return ShiftCalendar.model_validate(
        {
            "enterprise": ENT,
            "name": "t",
            "shifts": [
                {
                    "name": "白班",
                    "start": "08:00",
                    "end": "17:00",
                    "breaks": [{"start": "12:00", "end": "13:00"}],
                }
            ],
            **extra,
        }
    )


def test_sample_2026_calendar_loads_with_the_published_holidays() -> None:
    calendars = read_calendar_file(SAMPLE)
    enterprise = calendar_for(calendars, ENT, None)
    line = calendar_for(calendars, ENT, "L1")
    assert enterprise is not None
    assert enterprise.line is None
    assert line is not None
    assert line.line == "L1"
    assert calendar_for(calendars, ENT, "L9") is enterprise  # no line calendar: the enterprise's
    holidays = enterprise.holiday_dates()
    assert date(2026, 2, 17) in holidays  # 春节 (正月初一)
    assert date(2026, 10, 1) in holidays
    assert len([d for d in holidays if d.month == 2]) == 9  # 春节 9 days


def test_make_up_working_day_is_scheduled_and_holiday_is_not() -> None:
    enterprise = calendar_for(read_calendar_file(SAMPLE), ENT, None)
    # 2026-02-14 is a Saturday worked for 春节 (调休): day shift plus night shift from 20:00.
    assert date(2026, 2, 14).weekday() == 5
    assert _day_hours(enterprise, date(2026, 2, 14)) == 22.5
    # An ordinary Saturday: only the tail of Friday's night shift (00:30-08:00).
    assert _day_hours(enterprise, date(2026, 3, 7)) == 7.5
    # 2026-02-16, a Monday inside 春节: no shift starts on the 15th or the 16th.
    assert _day_hours(enterprise, date(2026, 2, 16)) == 0.0
    # 2026-02-15 (holiday, Sunday) still ends the night shift that started on the 14th.
    assert _day_hours(enterprise, date(2026, 2, 15)) == 7.5


def test_night_shift_crosses_midnight_and_belongs_to_its_start_day() -> None:
    enterprise = calendar_for(read_calendar_file(SAMPLE), ENT, None)
    assert enterprise is not None
    start = to_ms(datetime(2026, 3, 6, 12, tzinfo=SH))  # Friday noon
    end = to_ms(datetime(2026, 3, 7, 12, tzinfo=SH))
    night = [i for i in shift_instances(enterprise, SH, start, end) if i.name == "夜班"]
    assert [i.day for i in night] == [date(2026, 3, 6)]
    assert night[0].end_ms - night[0].start_ms == 12 * H
    assert night[0].scheduled_ms == 11.5 * H  # minus the 00:00-00:30 break


def test_no_calendar_means_all_time_scheduled() -> None:
    assert _day_hours(None, date(2026, 2, 17)) == 24.0


def test_breaks_are_not_scheduled() -> None:
    assert _day_hours(_one_shift(), date(2026, 3, 2)) == 8.0


def test_daylight_saving_zone_gets_the_real_length_of_a_shift() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    cal = ShiftCalendar.model_validate(
        {
            "enterprise": ENT,
            "name": "n",
            "shifts": [{"name": "N", "start": "22:00", "end": "06:00", "days": ["sat"]}],
        }
    )
    # 2026-03-29 02:00 Berlin clocks jump to 03:00: the night shift is 7 hours long.
    start = to_ms(datetime(2026, 3, 28, tzinfo=UTC))
    iv = scheduled_intervals(cal, berlin, start, start + 3 * 24 * H)
    assert sum(e - s for s, e in iv) == 7 * H


def test_unquoted_yaml_times_are_read_as_clock_times() -> None:
    [cal] = parse_calendars(
        {
            "calendars": [
                {
                    "enterprise": ENT,
                    "name": "x",
                    "shifts": [{"name": "夜", "start": 1200, "end": 480}],
                }
            ]
        }
    )  # YAML 1.1 reads 20:00 as 1200 and 8:00 as 480
    assert (cal.shifts[0].start, cal.shifts[0].end) == (time(20), time(8))


def test_a_wrong_calendar_names_the_file_and_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_calendars(
            {
                "calendars": [
                    {
                        "enterprise": ENT,
                        "name": "x",
                        "shifts": [{"name": "a", "start": "25:00", "end": "08:00"}],
                    }
                ]
            },
            source="plant.yaml",
        )
    assert info.value.source == "plant.yaml"
    assert info.value.key == "calendars.0.shifts.0.start"


def test_a_day_that_is_both_holiday_and_workday_is_refused() -> None:
    with pytest.raises(ConfigError, match="both a holiday and a make-up"):
        parse_calendars(
            {
                "holidays": [{"date": "2026-05-09"}],
                "workdays": [{"date": "2026-05-09"}],
                "calendars": [
                    {
                        "enterprise": ENT,
                        "name": "x",
                        "shifts": [{"name": "a", "start": "08:00", "end": "17:00"}],
                    }
                ],
            }
        )


def test_schedule_overlap_counts_partial_intervals() -> None:
    schedule = Schedule([(0, 10), (20, 30), (25, 40)])
    assert schedule.intervals == [(0, 10), (20, 40)]
    assert schedule.overlap(5, 25) == 10
    assert schedule.overlap(-5, 100) == 30
    assert schedule.overlap(10, 20) == 0
