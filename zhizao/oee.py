"""OEE after ISO 22400-2, exactly as DESIGN §7 defines it; pure functions over plain data.

The figures are ratios of components that add up: time per state inside and outside
scheduled time, counts, and ideal production time. :class:`OeeComponents` of devices,
hours, days or shifts are summed with ``+`` and only then divided by :func:`compute`,
so a line's OEE is never an average of its machines' OEEs.

    PBT  planned busy time  = scheduled − PLANNED_STOP in schedule + RUNNING outside it
    APT  actual production  = RUNNING in schedule + RUNNING outside it
    A = APT / PBT     P = ideal cycle time × produced / APT     Q = good / produced
    OEE = ideal time of good units / PBT   (= A × P × Q for one device)

For an aggregate of devices with different ideal cycle times, A × P × Q and
OEE = ideal-good / PBT can differ slightly; OEE is the time-based figure (it sums),
and ``quality_weighted`` (ideal time of good / ideal time of produced) is the quality
that makes the product exact.

Loss breakdown (seconds, adding up to PBT together with the ideal time of good units):
breakdowns and idle (each without their micro-stops), setup, micro-stops, the OFFLINE
coverage gap (scheduled time nothing was known about: never counted as running),
speed loss (APT − ideal time of everything produced; negative when the ideal cycle
time is set too long, which is flagged) and rejects (ideal time of rejected units).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum

from zhizao.intervals import Bucket


class Flag(StrEnum):
    PERFORMANCE_OVER_100 = "performance_over_100"  # ideal cycle time too long, or counts wrong
    COVERAGE_GAP = "coverage_gap"  # OFFLINE time inside planned busy time
    MISSING_IDEAL_CYCLE_TIME = "missing_ideal_cycle_time"  # running devices without one
    NO_PLANNED_TIME = "no_planned_time"  # PBT is zero: no ratio can be given


FLAG_LABELS: dict[Flag, str] = {
    Flag.PERFORMANCE_OVER_100: "性能开动率超过100%(理想节拍设置过长或计数有误)",
    Flag.COVERAGE_GAP: "计划时间内有离线时段(数据覆盖缺口)",
    Flag.MISSING_IDEAL_CYCLE_TIME: "有设备未设置理想节拍",
    Flag.NO_PLANNED_TIME: "无计划开动时间",
}


@dataclass(frozen=True, slots=True)
class OeeComponents:
    """Summable parts of OEE; seconds unless named otherwise."""

    scheduled_s: float = 0.0
    planned_stop_s: float = 0.0  # PLANNED_STOP inside scheduled time
    running_s: float = 0.0  # RUNNING inside scheduled time
    overtime_running_s: float = 0.0  # RUNNING outside scheduled time: extends PBT
    idle_s: float = 0.0  # the following four inside scheduled time
    setup_s: float = 0.0
    unplanned_stop_s: float = 0.0
    offline_s: float = 0.0
    micro_idle_s: float = 0.0  # IDLE episodes shorter than the micro-stop threshold
    micro_unplanned_s: float = 0.0  # UNPLANNED_STOP episodes shorter than it
    good: int = 0
    reject: int = 0
    ideal_time_s: float = 0.0  # ideal cycle time × produced
    ideal_good_s: float = 0.0  # ideal cycle time × good
    unrated_running_s: float = 0.0  # APT of devices without an ideal cycle time

    def __add__(self, other: OeeComponents) -> OeeComponents:
        return OeeComponents(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(OeeComponents))
        )

    @property
    def pbt_s(self) -> float:
        return self.scheduled_s - self.planned_stop_s + self.overtime_running_s

    @property
    def apt_s(self) -> float:
        return self.running_s + self.overtime_running_s

    @property
    def produced(self) -> int:
        return self.good + self.reject

    @classmethod
    def from_bucket(cls, bucket: Bucket, ideal_cycle_time_s: float | None) -> OeeComponents:
        running = bucket.sched_running_ms + bucket.overtime_running_ms
        ict = ideal_cycle_time_s or 0.0
        return cls(
            scheduled_s=bucket.scheduled_ms / 1000,
            planned_stop_s=bucket.sched_planned_stop_ms / 1000,
            running_s=bucket.sched_running_ms / 1000,
            overtime_running_s=bucket.overtime_running_ms / 1000,
            idle_s=bucket.sched_idle_ms / 1000,
            setup_s=bucket.sched_setup_ms / 1000,
            unplanned_stop_s=bucket.sched_unplanned_stop_ms / 1000,
            offline_s=bucket.sched_offline_ms / 1000,
            micro_idle_s=bucket.micro_idle_ms / 1000,
            micro_unplanned_s=bucket.micro_unplanned_ms / 1000,
            good=bucket.good,
            reject=bucket.reject,
            ideal_time_s=ict * (bucket.good + bucket.reject),
            ideal_good_s=ict * bucket.good,
            unrated_running_s=0.0 if ideal_cycle_time_s else running / 1000,
        )


def summed(parts: Iterable[OeeComponents]) -> OeeComponents:
    out = OeeComponents()
    for part in parts:
        out = out + part
    return out


@dataclass(frozen=True, slots=True)
class Losses:
    """Where planned busy time went; the fields add up to PBT."""

    breakdowns_s: float
    setup_s: float
    idle_s: float
    micro_stops_s: float
    offline_gap_s: float
    speed_loss_s: float
    rejects_s: float
    valuable_s: float  # ideal time of good units: what OEE keeps

    def total_s(self) -> float:
        return float(sum(getattr(self, f.name) for f in fields(Losses)))


LOSS_LABELS: dict[str, tuple[str, str]] = {
    "breakdowns_s": ("故障停机损失", "breakdowns"),
    "setup_s": ("换型调整损失", "setup and changeover"),
    "idle_s": ("待机损失", "idle (waiting)"),
    "micro_stops_s": ("短暂停机损失", "micro-stops"),
    "offline_gap_s": ("离线(数据缺口)", "offline (coverage gap)"),
    "speed_loss_s": ("速度损失", "speed loss"),
    "rejects_s": ("不良品损失", "rejects"),
    "valuable_s": ("有效生产时间", "valuable operating time"),
}


@dataclass(frozen=True, slots=True)
class Oee:
    components: OeeComponents
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    quality_weighted: float | None
    losses: Losses
    flags: tuple[Flag, ...]

    @property
    def pbt_s(self) -> float:
        return self.components.pbt_s

    @property
    def apt_s(self) -> float:
        return self.components.apt_s


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def compute(components: OeeComponents) -> Oee:
    """A, P, Q, OEE, losses and flags of (summed) components."""
    c = components
    pbt, apt = c.pbt_s, c.apt_s
    performance = _ratio(c.ideal_time_s, apt)
    flags: list[Flag] = []
    if pbt <= 0:
        flags.append(Flag.NO_PLANNED_TIME)
    # A tolerance of a millisecond per hour keeps float noise from raising the flag.
    if performance is not None and c.ideal_time_s > apt + 1e-6 * max(apt, 1.0):
        flags.append(Flag.PERFORMANCE_OVER_100)
    if c.offline_s > 0:
        flags.append(Flag.COVERAGE_GAP)
    if c.unrated_running_s > 0:
        flags.append(Flag.MISSING_IDEAL_CYCLE_TIME)
    micro = c.micro_idle_s + c.micro_unplanned_s
    losses = Losses(
        breakdowns_s=c.unplanned_stop_s - c.micro_unplanned_s,
        setup_s=c.setup_s,
        idle_s=c.idle_s - c.micro_idle_s,
        micro_stops_s=micro,
        offline_gap_s=c.offline_s,
        speed_loss_s=apt - c.ideal_time_s,
        rejects_s=c.ideal_time_s - c.ideal_good_s,
        valuable_s=c.ideal_good_s,
    )
    return Oee(
        components=c,
        availability=_ratio(apt, pbt),
        performance=performance,
        quality=_ratio(c.good, c.produced),
        oee=_ratio(c.ideal_good_s, pbt),
        quality_weighted=_ratio(c.ideal_good_s, c.ideal_time_s),
        losses=losses,
        flags=tuple(flags),
    )
