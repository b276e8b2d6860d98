"""OEE math (pure): the textbook shift to four decimals, losses, flags, splitting, summing."""

from __future__ import annotations

import itertools
import math
from datetime import time
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kpi import textbook
from tests.kpi.seed import ENT
from zhizao.calendar import Schedule, scheduled_intervals
from zhizao.intervals import (
    Bucket,
    CountPoint,
    Interval,
    StatePoint,
    split,
    total,
    transitions_from_intervals,
)
from zhizao.oee import Flag, OeeComponents, compute, summed
from zhizao.wire import StateClass as S

SH = ZoneInfo("Asia/Shanghai")
H = 3_600_000


def _textbook_components(start: int, end: int) -> OeeComponents:
    schedule = Schedule(scheduled_intervals(textbook.calendar(ENT), SH, start, end))
    buckets = split(textbook.states(), textbook.counts(), schedule, start, end)
    return OeeComponents.from_bucket(total(buckets.values()), ideal_cycle_time_s=1.0)


def test_textbook_shift_to_four_decimals() -> None:
    result = compute(_textbook_components(*textbook.day_bounds()))
    assert result.pbt_s == 420 * 60
    assert result.apt_s == 373 * 60
    got = {
        "availability": result.availability,
        "performance": result.performance,
        "quality": result.quality,
        "oee": result.oee,
    }
    assert {k: round(v, 4) for k, v in got.items() if v is not None} == textbook.EXPECTED
    assert result.flags == ()
    losses = result.losses
    assert losses.breakdowns_s == 47 * 60
    assert losses.rejects_s == 423
    assert losses.speed_loss_s == 373 * 60 - 19_271
    assert abs(losses.total_s() - result.pbt_s) < 1e-6


def test_the_shift_alone_gives_the_same_figures_as_the_whole_day() -> None:
    # Everything outside the shift is planned stop outside scheduled time: it adds nothing.
    assert _textbook_components(*textbook.shift_bounds()) == _textbook_components(
        *textbook.day_bounds()
    )


def test_running_outside_the_calendar_extends_planned_busy_time() -> None:
    start, end = textbook.day_bounds()
    states = [*textbook.states()[:-1], StatePoint(textbook.local(16), S.PLANNED_STOP)]
    schedule = Schedule(scheduled_intervals(textbook.calendar(ENT), SH, start, end))
    comp = OeeComponents.from_bucket(
        total(split(states, textbook.counts(), schedule, start, end).values()), 1.0
    )
    assert comp.overtime_running_s == 2 * 3600
    assert comp.pbt_s == 420 * 60 + 2 * 3600
    result = compute(comp)
    assert result.availability is not None
    assert result.availability <= 1.0
    assert result.oee is not None
    assert result.oee < 0.7479


def test_offline_inside_planned_time_lowers_availability_and_is_flagged() -> None:
    start, end = textbook.day_bounds()
    states = [
        *textbook.states(),
        StatePoint(textbook.local(10), S.OFFLINE),
        StatePoint(textbook.local(10, 30), S.RUNNING),
    ]
    states.sort(key=lambda p: p.ts_ms)
    schedule = Schedule(scheduled_intervals(textbook.calendar(ENT), SH, start, end))
    result = compute(
        OeeComponents.from_bucket(
            total(split(states, textbook.counts(), schedule, start, end).values()), 1.0
        )
    )
    assert result.losses.offline_gap_s == 30 * 60
    assert result.pbt_s == 420 * 60  # the gap stays in planned busy time
    assert result.apt_s == (373 - 30) * 60
    assert Flag.COVERAGE_GAP in result.flags


def test_no_data_is_offline_never_running() -> None:
    buckets = split([], [], Schedule([(0, 2 * H)]), 0, 2 * H)
    assert [b.offline_ms for b in buckets.values()] == [H, H]
    assert compute(OeeComponents.from_bucket(total(buckets.values()), 1.0)).availability == 0.0


def test_performance_over_100_percent_is_flagged_not_hidden() -> None:
    comp = OeeComponents(
        scheduled_s=3600, running_s=3600, good=4000, ideal_time_s=4000, ideal_good_s=4000
    )
    result = compute(comp)
    assert result.performance is not None
    assert result.performance > 1
    assert Flag.PERFORMANCE_OVER_100 in result.flags
    assert result.losses.speed_loss_s == -400


def test_micro_stops_are_short_stops_classified_by_their_whole_length() -> None:
    # A 90 s idle crossing an hour edge is one micro-stop; a 200 s breakdown is not.
    states = [
        StatePoint(0, S.RUNNING),
        StatePoint(H - 45_000, S.IDLE),
        StatePoint(H + 45_000, S.RUNNING),
        StatePoint(H + 600_000, S.UNPLANNED_STOP),
        StatePoint(H + 800_000, S.RUNNING),
    ]
    buckets = split(states, [], Schedule([(0, 2 * H)]), 0, 2 * H)
    assert [b.micro_idle_ms for b in buckets.values()] == [45_000, 45_000]
    assert sum(b.micro_unplanned_ms for b in buckets.values()) == 0
    result = compute(OeeComponents.from_bucket(total(buckets.values()), 1.0))
    assert result.losses.micro_stops_s == 90
    assert result.losses.breakdowns_s == 200
    assert result.losses.idle_s == 0


def test_missing_ideal_cycle_time_is_flagged() -> None:
    bucket = Bucket(scheduled_ms=H, sched_running_ms=H, running_ms=H, good=10)
    result = compute(OeeComponents.from_bucket(bucket, None))
    assert Flag.MISSING_IDEAL_CYCLE_TIME in result.flags
    assert result.performance == 0.0


def test_aggregate_divides_sums_never_averages_ratios() -> None:
    a = OeeComponents(
        scheduled_s=3600, running_s=3600, good=3600, ideal_time_s=3600, ideal_good_s=3600
    )  # OEE 100 %
    b = OeeComponents(scheduled_s=7200, running_s=0)  # OEE 0 %, twice the planned time
    assert compute(a + b).oee == 3600 / 10800  # not (1 + 0) / 2


# --- properties -----------------------------------------------------------------------

_states = st.sampled_from(list(S))
_transitions = st.lists(st.builds(StatePoint, st.integers(-H, 6 * H), _states), max_size=25)
_counts = st.lists(
    st.builds(CountPoint, st.integers(0, 6 * H - 1), st.integers(0, 50), st.integers(0, 5)),
    max_size=10,
)
_schedule = st.lists(
    st.tuples(st.integers(-H, 6 * H), st.integers(1, 3 * H)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(_transitions, _counts, _schedule, st.integers(1, 6 * H - 1), st.integers(0, 300_000))
def test_splitting_a_period_and_recombining_gives_the_same_components(
    transitions: list[StatePoint],
    counts: list[CountPoint],
    intervals: list[tuple[int, int]],
    cut: int,
    micro: int,
) -> None:
    schedule = Schedule(intervals)
    horizon = 6 * H
    whole = total(
        split(
            transitions, counts, schedule, 0, 6 * H, horizon_ms=horizon, micro_stop_ms=micro
        ).values()
    )
    left = total(
        split(
            transitions, counts, schedule, 0, cut, horizon_ms=horizon, micro_stop_ms=micro
        ).values()
    )
    right = total(
        split(
            transitions, counts, schedule, cut, 6 * H, horizon_ms=horizon, micro_stop_ms=micro
        ).values()
    )
    assert left + right == whole
    # Every instant is in exactly one state, and scheduled time splits by state.
    assert sum(whole.as_tuple()[:6]) == 6 * H
    sched_states = (
        whole.sched_running_ms
        + whole.sched_idle_ms
        + whole.sched_setup_ms
        + whole.sched_unplanned_stop_ms
        + whole.sched_planned_stop_ms
        + whole.sched_offline_ms
    )
    assert sched_states == whole.scheduled_ms == schedule.overlap(0, 6 * H)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(_transitions, _counts, st.sampled_from([None, 0.5, 1.0, 30.0])),
        min_size=1,
        max_size=5,
    )
)
def test_aggregation_over_devices_equals_the_sum_of_the_parts(
    devices: list[tuple[list[StatePoint], list[CountPoint], float | None]],
) -> None:
    schedule = Schedule([(0, 4 * H)])
    parts = [
        OeeComponents.from_bucket(total(split(t, c, schedule, 0, 6 * H).values()), ict)
        for t, c, ict in devices
    ]
    whole = summed(parts)
    result = compute(whole)
    # Sums of float seconds: equal up to rounding of the last bit.
    assert math.isclose(whole.pbt_s, sum(p.pbt_s for p in parts), abs_tol=1e-6)
    assert whole.good == sum(p.good for p in parts)
    assert abs(result.losses.total_s() - whole.pbt_s) < 1e-6
    if whole.pbt_s > 0:
        assert result.oee == whole.ideal_good_s / whole.pbt_s


def test_ground_truth_intervals_give_the_textbook_figures() -> None:
    # How the end-to-end test will compare the simulator's ground truth with the platform.
    marks = textbook.states()
    intervals = [Interval(a.ts_ms, b.ts_ms, a.state) for a, b in itertools.pairwise(marks)]
    start, end = textbook.day_bounds()
    intervals.append(Interval(marks[-1].ts_ms, end, marks[-1].state))
    schedule = Schedule(scheduled_intervals(textbook.calendar(ENT), SH, start, end))
    buckets = split(transitions_from_intervals(intervals), textbook.counts(), schedule, start, end)
    truth = OeeComponents.from_bucket(total(buckets.values()), 1.0)
    assert truth == _textbook_components(start, end)


def test_interval_crossing_the_end_of_a_shift_is_split_at_it() -> None:
    # Shift 06:00-14:30 (local); the machine runs 13:00-15:00, then stops.
    calendar = textbook.calendar(ENT).model_copy(
        update={"shifts": (textbook.calendar(ENT).shifts[0].model_copy(
            update={"end": time(14, 30), "breaks": ()}),)}
    )  # fmt: skip
    start, end = textbook.day_bounds()
    schedule = Schedule(scheduled_intervals(calendar, SH, start, end))
    states = [
        StatePoint(textbook.local(13), S.RUNNING),
        StatePoint(textbook.local(15), S.PLANNED_STOP),
    ]
    buckets = split(states, [], schedule, start, end)
    hour14 = buckets[textbook.local(14)]
    assert hour14.scheduled_ms == 30 * 60_000  # the shift ends inside the hour
    assert hour14.sched_running_ms == 30 * 60_000
    assert hour14.overtime_running_ms == 30 * 60_000
    whole = total(buckets.values())
    assert whole.running_ms == 2 * H
    assert whole.overtime_running_ms == 30 * 60_000
    # Before 13:00 nothing was known: OFFLINE, and inside the shift a coverage gap.
    assert whole.sched_offline_ms == 7 * H
