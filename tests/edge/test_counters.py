"""Cumulative counters become increments; resets and wraps neither lose nor invent parts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.counters import CumulativeCounter, Step, anomaly_event, as_total
from zhizao.wire import UplinkBatch, decode_batch, encode_batch

T0 = 1_772_409_600_000


def feed(counter: CumulativeCounter, totals: list[int]) -> list[int]:
    return [counter.update(total).increment for total in totals]


def test_first_total_is_only_a_baseline() -> None:
    counter = CumulativeCounter()
    assert counter.update(1234).step is Step.BASELINE
    assert feed(counter, [1236, 1236, 1240]) == [2, 0, 4]


def test_reset_counts_what_was_made_since_zero() -> None:
    counter = CumulativeCounter()
    feed(counter, [500, 510])
    step = counter.update(3)
    assert (step.increment, step.step, step.previous) == (3, Step.RESET, 510)
    assert counter.resets == 1


def test_wrap_of_a_16_bit_counter() -> None:
    counter = CumulativeCounter(bits=16)
    feed(counter, [65_530])
    step = counter.update(4)
    assert (step.increment, step.step) == (10, Step.WRAP)
    assert counter.wraps == 1


def test_jump_beyond_max_increment_counts_nothing_and_rebaselines() -> None:
    counter = CumulativeCounter(max_increment=1000)
    feed(counter, [10])
    assert counter.update(900_000).step is Step.JUMP
    assert counter.update(900_005).increment == 5


def test_out_of_range_value_is_ignored_and_keeps_the_baseline() -> None:
    counter = CumulativeCounter(bits=16)
    feed(counter, [100])
    assert counter.update(70_000) == counter.update(-1)
    assert counter.update(-1).step is Step.INVALID
    assert counter.update(103).increment == 3


def test_wrap_at_a_decimal_rollover_counts_each_part() -> None:
    counter = CumulativeCounter(rollover=1000)
    feed(counter, [997])
    assert [(s.increment, s.step) for s in map(counter.update, [999, 0, 998, 3])] == [
        (2, Step.COUNT),
        (1, Step.WRAP),  # 999 -> 0 is one part, not a reset to zero
        (998, Step.COUNT),
        (5, Step.WRAP),  # 998, 999, 0, 1, 2, 3
    ]
    assert counter.wraps == 2


def test_a_value_at_or_above_the_rollover_is_invalid_and_keeps_the_baseline() -> None:
    counter = CumulativeCounter(rollover=1000)
    feed(counter, [990])
    assert counter.update(1000).step is Step.INVALID
    assert counter.update(995).increment == 5


def test_several_wraps_at_1000_add_up_exactly() -> None:
    counter = CumulativeCounter(rollover=1000)
    made, value, totals = 0, 950, [950]
    for parts in [30, 45, 60, 7, 90, 100, 33, 99, 120, 1, 64] * 3:
        value = (value + parts) % 1000
        made += parts
        totals.append(value)
    assert sum(feed(counter, totals)) == made == 1947
    assert counter.wraps == 2  # 950 + 1947 = 2897: through 1000 and 2000


def test_rollover_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        CumulativeCounter(rollover=1)


def test_rebaseline_counts_nothing_for_the_next_total_then_counts_again() -> None:
    counter = CumulativeCounter()
    feed(counter, [100, 110])
    counter.rebaseline()
    for restarted_at in (40, 900):  # lower and higher than before the outage
        step = counter.update(restarted_at)
        assert (step.increment, step.step, step.previous) == (0, Step.REBASELINE, 110)
        assert counter.update(restarted_at + 3).increment == 3
        counter.last = 110
        counter.rebaseline()


def test_rebaseline_before_any_total_is_a_plain_baseline() -> None:
    counter = CumulativeCounter()
    counter.rebaseline()
    assert counter.update(5).step is Step.BASELINE


def test_plausibility_limit_by_hand() -> None:
    # 10 s ideal cycle, factor 2: in 60 s at most 60 / 10 * 2 + 1 = 13 parts.
    counter = CumulativeCounter(ideal_cycle_s=10)
    counter.update(100, ts=0)
    within = counter.update(113, ts=60_000)
    assert (within.increment, within.step, within.limit) == (13, Step.COUNT, 13)
    beyond = counter.update(127, ts=120_000)  # 14 in the next 60 s
    assert (beyond.increment, beyond.step) == (0, Step.IMPLAUSIBLE)
    assert (beyond.implied, beyond.limit, beyond.elapsed_ms, beyond.previous) == (
        14,
        13,
        60_000,
        113,
    )
    # The anomaly's total is the new baseline: the next normal increment counts.
    assert counter.update(129, ts=130_000).increment == 2
    assert counter.anomalies == 1


def test_plausibility_factor_and_the_part_of_slack() -> None:
    counter = CumulativeCounter(ideal_cycle_s=30, factor=1.5)
    counter.update(0, ts=0)
    # 100 s / 30 s * 1.5 = 5.0 -> 5 + 1 = 6 parts allowed
    assert counter.update(6, ts=100_000).step is Step.COUNT
    assert counter.update(13, ts=200_000).step is Step.IMPLAUSIBLE
    # The same instant: one part of slack only.
    assert counter.update(14, ts=200_000).step is Step.COUNT
    assert counter.update(16, ts=200_000).step is Step.IMPLAUSIBLE


def test_wraps_and_resets_are_judged_too() -> None:
    counter = CumulativeCounter(rollover=1000, ideal_cycle_s=60)
    counter.update(990, ts=0)
    assert counter.update(5, ts=60_000).step is Step.IMPLAUSIBLE  # 15 parts in a minute
    counter.update(500, ts=120_000)
    assert counter.update(3, ts=240_000).step is Step.RESET  # 3 since zero, in 2 minutes


def test_without_a_cycle_time_only_max_increment_applies() -> None:
    counter = CumulativeCounter(max_increment=50)
    counter.update(0, ts=0)
    assert counter.update(50, ts=1).step is Step.COUNT
    jump = counter.update(151, ts=2)
    assert (jump.step, jump.implied, jump.limit) == (Step.JUMP, 101, 50)


def test_time_going_backwards_cannot_be_judged() -> None:
    counter = CumulativeCounter(ideal_cycle_s=60)
    counter.update(0, ts=1_000_000)
    assert counter.update(20, ts=0).step is Step.COUNT


def test_as_total_accepts_integral_numbers_only() -> None:
    assert as_total(5) == 5
    assert as_total(5.0) == 5
    assert as_total(5.5) is None
    assert as_total(True) is None
    assert as_total("5") is None


@st.composite
def counter_history(draw: st.DrawFn) -> tuple[int, int | None, list[int], int]:
    """A machine's counter over time: (bits, rollover, reported totals, parts made).

    Between two reports the machine makes fewer parts than the wrap window, and a
    reset is drawn only where it is visible: the counter is not within the window of
    the top (there a reset and a wrap look the same, see test_wrap_of_a_16_bit_counter)
    and the machine made fewer parts since the reset than the counter showed before
    (a counter that is back at its old value shows nothing happened).
    """
    bits = draw(st.sampled_from([16, 32]))
    rollover = draw(st.sampled_from([None, 1000, 10_000]))
    modulus = rollover or 1 << bits
    window = modulus // 8
    value = draw(st.integers(0, modulus - 1))
    totals = [value]
    made = 0
    for _ in range(draw(st.integers(1, 40))):
        parts = draw(st.integers(0, window // 4))
        if draw(st.booleans()) and draw(st.booleans()) and parts < value < modulus - 2 * window:
            value = 0  # reset; what follows is counted from zero
        value = (value + parts) % modulus
        made += parts
        totals.append(value)
    return bits, rollover, totals, made


@given(counter_history())
def test_increments_add_up_to_the_parts_made(
    history: tuple[int, int | None, list[int], int],
) -> None:
    bits, rollover, totals, made = history
    counter = CumulativeCounter(bits=bits, rollover=rollover)
    increments = feed(counter, totals)
    assert all(increment >= 0 for increment in increments)
    assert sum(increments) == made


def test_anomaly_events_follow_the_contract_and_bad_ones_are_rejected() -> None:
    counter = CumulativeCounter(ideal_cycle_s=10)
    counter.update(100, ts=T0)
    step = counter.update(200, ts=T0 + 60_000)
    point = anomaly_event("CNC-1", "good", ts=T0 + 60_000, step=step, total=200, guard=counter)
    good = UplinkBatch(
        enterprise="91330106MA2XXXXX0Y", edge="e1", seq=0, sent_at=T0, points=[point]
    )
    assert decode_batch(encode_batch(good)).rejected == ()
    document = json.loads(encode_batch(good))
    bad = [
        {**document["points"][0], "value": "not json"},
        {**document["points"][0], "value": json.dumps({"counter": "good", "increment": -3})},
        {**document["points"][0], "name": "counter_anomaly.scrap"},
        {**document["points"][0], "value": json.dumps({"counter": "reject", "increment": 3})},
    ]
    decoded = decode_batch(json.dumps({**document, "points": [*document["points"], *bad]}).encode())
    assert len(decoded.batch.points) == 1
    reasons = [r.reason for r in decoded.rejected]
    assert [r.index for r in decoded.rejected] == [1, 2, 3, 4]
    assert "JSON object" in reasons[0]
    assert "non-negative integer increment" in reasons[1]
    assert ".good or .reject" in reasons[2]
    assert "as in its name" in reasons[3]
