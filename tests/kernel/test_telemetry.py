"""Bucket plans and ranges of telemetry queries (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from zhizao.errors import InvalidValue
from zhizao.telemetry import MAX_POINTS, plan_buckets, round_width, state_label
from zhizao.wire import StateClass

SH = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 3, 2, 8, 3, tzinfo=SH)


@pytest.mark.parametrize(
    ("seconds", "width"),
    [(0.2, 1), (1, 1), (1.01, 2), (86.4, 120), (172.8, 300), (3601, 7200), (86_401, 172_800)],
)
def test_round_widths(seconds: float, width: int) -> None:
    assert round_width(seconds) == width


def test_a_width_is_aligned_to_the_local_midnight_of_the_start() -> None:
    plan = plan_buckets(START, START + timedelta(minutes=10), SH, bucket=timedelta(minutes=5))
    assert plan.origin == datetime(2026, 3, 2, tzinfo=SH)
    assert plan.first == datetime(2026, 3, 2, 8, 0, tzinfo=SH)
    assert plan.count == 3  # 08:00, 08:05, 08:10: the edges are partial


@pytest.mark.parametrize("points", [1, 2, 7, 100, 499, MAX_POINTS])
def test_points_never_give_more_buckets_than_asked(points: int) -> None:
    for hours in (1, 13, 24 * 7, 24 * 400):
        plan = plan_buckets(START, START + timedelta(hours=hours), SH, points=points)
        assert 1 <= plan.count <= points


def test_a_width_with_too_many_buckets_is_refused() -> None:
    with pytest.raises(InvalidValue) as info:
        plan_buckets(START, START + timedelta(hours=2), SH, bucket=timedelta(seconds=1))
    assert info.value.field == "query.bucket"


def test_labels_have_chinese_and_english() -> None:
    assert state_label(StateClass.UNPLANNED_STOP) == "故障停机 Unplanned stop"
    assert state_label(StateClass.RUNNING) == "运行 Running"
