"""Cumulative counters become increments; resets and wraps neither lose nor invent parts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.counters import CumulativeCounter, Step, as_total


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
    assert step == step.__class__(3, Step.RESET)
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


def test_as_total_accepts_integral_numbers_only() -> None:
    assert as_total(5) == 5
    assert as_total(5.0) == 5
    assert as_total(5.5) is None
    assert as_total(True) is None
    assert as_total("5") is None


@st.composite
def counter_history(draw: st.DrawFn) -> tuple[int, list[int], int]:
    """A machine's counter over time: (bits, reported totals, parts made).

    Between two reports the machine makes fewer parts than the wrap window, and a
    reset is drawn only where it is visible: the counter is not within the window of
    the top (there a reset and a wrap look the same, see test_wrap_of_a_16_bit_counter)
    and the machine made fewer parts since the reset than the counter showed before
    (a counter that is back at its old value shows nothing happened).
    """
    bits = draw(st.sampled_from([16, 32]))
    modulus = 1 << bits
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
    return bits, totals, made


@given(counter_history())
def test_increments_add_up_to_the_parts_made(history: tuple[int, list[int], int]) -> None:
    bits, totals, made = history
    counter = CumulativeCounter(bits=bits)
    increments = feed(counter, totals)
    assert all(increment >= 0 for increment in increments)
    assert sum(increments) == made
