"""``zhizao kpi``: OEE, networking rate and NC rate as tables in Chinese and English.

Every time a person reads is local: the enterprise's zone with its offset
(2026-10-12 08:00+08:00), or Asia/Shanghai when the figures span enterprises in
several zones (:func:`zhizao.storage.kpi.display_zone`). "Today", the default date,
is the local date in that zone, from :data:`CLOCK` (a seam for tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from zhizao.calendar import read_calendar_file
from zhizao.cli import anomalies
from zhizao.cli.common import (
    DbUrlOption,
    console,
    db_settings,
    fail,
    parse_day,
    with_conn,
)
from zhizao.cli.rollup import parse_instant
from zhizao.errors import InvalidValue, ZhizaoError
from zhizao.networking import Evidence, GroupBy, Method, RateFigure, Scope
from zhizao.oee import FLAG_LABELS, LOSS_LABELS, Flag, Oee
from zhizao.provenance import NO_DEVICES_NOTE, Source, describe
from zhizao.storage.connection import Conn
from zhizao.storage.kpi import (
    Level,
    OeeReport,
    OeeScope,
    current_networking_rates,
    display_zone,
    group_names,
    nc_rates,
    networking_evidence,
    networking_rates,
    oee_by_shift,
    oee_for_days,
    oee_for_interval,
    period_days,
    shift_interval,
)
from zhizao.storage.rollups import store_calendars

app = typer.Typer(help="KPIs: OEE, 设备联网率, 数控化率.", no_args_is_help=True)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


#: The wall clock; tests replace it (they never depend on the real time).
CLOCK: Callable[[], datetime] = _wall_clock

#: Short flag names for table cells; the full text is printed under the table.
FLAG_SHORT: dict[Flag, str] = {
    Flag.PERFORMANCE_OVER_100: "性能>100%",
    Flag.COVERAGE_GAP: "数据缺口",
    Flag.MISSING_IDEAL_CYCLE_TIME: "缺理想节拍",
    Flag.NO_PLANNED_TIME: "无计划时间",
}


def pct(value: float | None) -> str:
    """A ratio as a percentage for tables; None (no data) as a dash."""
    return "—" if value is None else f"{value * 100:.2f}%"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f} h"


def local_time(value: datetime, zone: ZoneInfo, *, seconds: bool = False) -> str:
    """An instant as a person there reads it: 2026-10-12 08:00+08:00."""
    return value.astimezone(zone).isoformat(sep=" ", timespec="seconds" if seconds else "minutes")


def _instant(value: date | datetime, zone: ZoneInfo) -> str:
    return local_time(value, zone) if isinstance(value, datetime) else str(value)


def local_today(zone: ZoneInfo) -> date:
    return CLOCK().astimezone(zone).date()


def print_flags(result: Oee) -> None:
    for flag in result.flags:
        console.print(f"[yellow]⚠ {FLAG_LABELS[flag]} ({flag})[/]")


def _flag_cell(result: Oee) -> str:
    return ", ".join(f"{FLAG_SHORT[f]} {f}" for f in result.flags) or "—"


def _scope_args(
    level: Level | None, code: str | None, level_opt: Level | None, code_opt: str | None
) -> tuple[Level, str]:
    """LEVEL CODE as arguments or as --level/--code (both spellings are in use)."""
    chosen_level = level_opt if level_opt is not None else level
    chosen_code = code_opt if code_opt is not None else code
    if chosen_level is None:
        raise InvalidValue("level", None, "give LEVEL (device, line, enterprise, ...) or --level")
    if chosen_code is None:
        raise InvalidValue("code", None, "give CODE or --code")
    return chosen_level, chosen_code


def print_oee(report: OeeReport, zone: ZoneInfo | None = None) -> None:
    r = report.result
    c = r.components
    where = zone or ZoneInfo("Asia/Shanghai")
    title = (
        f"OEE 设备综合效率 — {report.scope.level} {report.scope.code}"
        f" {_instant(report.start, where)} … {_instant(report.end, where)}"
        f" (source {report.source})"
    )
    console.print(f"[bold]{title}[/]")  # above the table: too long to wrap into its width
    table = Table("指标 figure", "值 value")
    table.add_row("可用率 Availability (APT/PBT)", pct(r.availability))
    table.add_row("性能开动率 Performance", pct(r.performance))
    table.add_row("合格品率 Quality (good/produced)", pct(r.quality))
    table.add_row("[bold]OEE 设备综合效率[/]", f"[bold]{pct(r.oee)}[/]")
    table.add_row("计划时间 Scheduled time", _hours(c.scheduled_s))
    table.add_row("计划开动时间 Planned busy time (PBT)", _hours(c.pbt_s))
    table.add_row("实际开动时间 Actual production time (APT)", _hours(c.apt_s))
    table.add_row("计划外加班运行 Running outside the calendar", _hours(c.overtime_running_s))
    table.add_row(
        "产量 Produced / 合格 good / 不良 reject", f"{c.produced} / {c.good} / {c.reject}"
    )
    console.print(table)
    losses = Table("损失 loss", "时间 time", "占PBT share of PBT", title="损失分解 Loss breakdown")
    for name, (zh, en) in LOSS_LABELS.items():
        seconds = float(getattr(r.losses, name))
        losses.add_row(f"{zh} {en}", _hours(seconds), pct(seconds / c.pbt_s if c.pbt_s else None))
    console.print(losses)
    print_flags(r)
    if len(report.devices) > 1:
        per = Table(
            "企业 enterprise", "设备 device", "A", "P", "Q", "OEE", "标注 flags",
            title="按设备 By device",
        )  # fmt: skip
        for d in report.devices:
            o = d.oee
            per.add_row(d.enterprise, f"{d.device} {d.name}", pct(o.availability),
                        pct(o.performance), pct(o.quality), pct(o.oee), _flag_cell(o))  # fmt: skip
        console.print(per)
    for f in report.federated:
        o = f.oee
        console.print(
            f"{f.enterprise} {f.name}: OEE {pct(o.oee)} (A {pct(o.availability)}, P"
            f" {pct(o.performance)}, Q {pct(o.quality)}), {NO_DEVICES_NOTE}"
        )
    print_sources(report.sources, where)


@app.command("shifts")
def shifts_command(  # noqa: PLR0917 - typer maps each option to a parameter
    level: Level | None = typer.Argument(None, help="device, line or enterprise"),
    code: str | None = typer.Argument(None, help="Device or line code, or credit code."),
    enterprise: str | None = typer.Option(None, help="Credit code (for a device or a line)."),
    on: str | None = typer.Option(
        None, "--date", help="The local day the shifts start on (default today, local)."
    ),
    level_opt: Level | None = typer.Option(None, "--level", help="LEVEL, as an option."),
    code_opt: str | None = typer.Option(None, "--code", help="CODE, as an option."),
    db_url: DbUrlOption = None,
) -> None:
    """OEE of every shift of a day side by side (班次对比)."""
    url = db_settings(db_url).url
    try:
        lvl, cd = _scope_args(level, code, level_opt, code_opt)
        scope = OeeScope(lvl, cd, enterprise)
        day = parse_day(on, "--date")

        async def job(conn: Conn) -> tuple[date, ZoneInfo, list[tuple[str, OeeReport]]]:
            zone = await display_zone(conn, scope)
            anchor = day or local_today(zone)
            return anchor, zone, await oee_by_shift(conn, scope, anchor)

        anchor, zone, rows = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    table = Table(
        "班次 shift", "开始 start", "结束 end", "A", "P", "Q", "OEE", "离线 offline",
        "标注 flags", title=f"按班次 OEE by shift — {lvl} {cd} {anchor} ({zone.key})",
    )  # fmt: skip
    flagged: dict[Flag, None] = {}
    for name, report in rows:
        r = report.result
        flagged.update(dict.fromkeys(r.flags))
        table.add_row(
            name, _instant(report.start, zone), _instant(report.end, zone),
            pct(r.availability), pct(r.performance), pct(r.quality), pct(r.oee),
            _hours(r.components.offline_s), _flag_cell(r),
        )  # fmt: skip
    console.print(table)
    for flag in flagged:
        console.print(f"[yellow]⚠ {FLAG_LABELS[flag]} ({flag})[/]")
    if not rows:
        console.print("没有班次日历或当天无班次 no shift calendar, or no shift starts that day")


@app.command("oee")
def oee_command(  # noqa: PLR0917 - typer maps each option to a parameter
    level: Level | None = typer.Argument(None, help="device, line, enterprise, cluster or region"),
    code: str | None = typer.Argument(
        None, help="Device or line code, credit code, cluster or region code."
    ),
    enterprise: str | None = typer.Option(None, help="Credit code (for a device or a line)."),
    period: str = typer.Option("day", help="day, week or month around --date."),
    on: str | None = typer.Option(None, "--date", help="A local date (default today, local)."),
    first: str | None = typer.Option(None, "--from", help="First local day of a custom range."),
    last: str | None = typer.Option(None, "--to", help="Last local day of a custom range."),
    start: str | None = typer.Option(None, help="Start instant (ISO 8601 with offset)."),
    end: str | None = typer.Option(None, help="End instant (exclusive)."),
    shift: str | None = typer.Option(None, help="A shift name of the calendar, on --date."),
    level_opt: Level | None = typer.Option(None, "--level", help="LEVEL, as an option."),
    code_opt: str | None = typer.Option(None, "--code", help="CODE, as an option."),
    db_url: DbUrlOption = None,
) -> None:
    """OEE with A, P, Q, time components and the loss breakdown."""
    url = db_settings(db_url).url
    try:
        lvl, cd = _scope_args(level, code, level_opt, code_opt)
        scope = OeeScope(lvl, cd, enterprise)
        day = parse_day(on, "--date")
        t0, t1 = parse_instant(start, "--start"), parse_instant(end, "--end")
        d0, d1 = parse_day(first, "--from"), parse_day(last, "--to")

        async def job(conn: Conn) -> tuple[OeeReport, ZoneInfo]:
            zone = await display_zone(conn, scope)
            return await _oee(conn, local_today(zone) if day is None else day), zone

        async def _oee(conn: Conn, anchor: date) -> OeeReport:
            if shift is not None:
                ent = enterprise if enterprise is not None else cd
                line = cd if lvl is Level.LINE else None
                s, e = await shift_interval(conn, ent, line, anchor, shift)
                return await oee_for_interval(conn, scope, s, e)
            if t0 is not None and t1 is not None:
                return await oee_for_interval(conn, scope, t0, t1)
            if d0 is not None and d1 is not None:
                return await oee_for_days(conn, scope, d0, d1)
            return await oee_for_days(conn, scope, *period_days(period, anchor))

        report, zone = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    print_oee(report, zone)
    # Counter anomalies (zhizao/cli/anomalies.py): say how many wait for a person.
    anomalies.print_pending(url, scope, report.start, report.end)


def print_sources(sources: Sequence[Source], zone: ZoneInfo | None = None) -> None:
    """Where the figures come from, under the table, when any is not this instance's."""
    if any(s.federated for s in sources):
        console.print(f"数据来源 sources: {describe(sources, zone)}")


def print_rates(
    title: str, figures: list[RateFigure], names: dict[str, str], zone: ZoneInfo | None = None
) -> None:
    federated = any(s.federated for f in figures for s in f.sources)
    table = Table(
        "分组 group", "口径 method", "范围 scope", "比率 rate", "分子 numerator",
        "分母 denominator", "企业数 enterprises", title=title,
    )  # fmt: skip
    if federated:  # a column only where the province counts reported enterprises
        table.add_column("来源 sources")
    for f in figures:
        mean = f.method is Method.MEAN_OF_ENTERPRISE_RATES
        table.add_row(
            f"{f.group} {names.get(f.group, '')}".strip(),
            f"{f.method.label_zh} {f.method}", f"{f.scope.label_zh} {f.scope}",
            pct(f.rate), f"{f.numerator:.4f}" if mean else f"{f.numerator:,.0f}",
            f"{f.denominator:,.0f}", str(f.enterprises),
            *([describe(f.sources, zone)] if federated else []),
        )  # fmt: skip
    console.print(table)


def print_evidence(rows: list[Evidence]) -> None:
    """Every device of the group: counted, not counted, or excluded from the denominator."""
    table = Table(
        "企业 enterprise", "设备 device", "计入 counted", "原因 reason",
        "最后在线 last seen (local)", title="核查清单 Evidence",
    )  # fmt: skip
    for e in rows:
        seen = (
            "—" if e.last_seen is None
            else local_time(e.last_seen, ZoneInfo(e.time_zone), seconds=True)
        )  # fmt: skip
        status = "不计入分母 excluded" if e.excluded else "是 yes" if e.counted else "否 no"
        table.add_row(e.enterprise, f"{e.device} {e.name}", status,
                      f"{e.reason_zh} ({e.reason})", seen)  # fmt: skip
    console.print(table)
    counted = sum(e.counted for e in rows)
    excluded = sum(e.excluded for e in rows)
    console.print(
        f"计入 counted {counted} · 未计入 not counted {len(rows) - counted - excluded}"
        f" · 不计入分母 excluded {excluded}"
    )


@app.command("networking")
def networking_command(  # noqa: PLR0917 - typer maps each option to a parameter
    group_by: GroupBy = typer.Option(
        GroupBy.CITY, help="province, city, county, cluster, industry, enterprise"
    ),
    scope: Scope = typer.Option(
        Scope.ALL, help="all, above_designated_size (规上), key_enterprise (重点)"
    ),
    on: str | None = typer.Option(
        None, "--date", help="A local day: the daily rate (default today, local)."
    ),
    first: str | None = typer.Option(None, "--from", help="First day of a period."),
    last: str | None = typer.Option(None, "--to", help="Last day of a period."),
    current: bool = typer.Option(False, help="The current rate: devices seen within the window."),
    window_h: float = typer.Option(25.0, help="Window of the current rate, hours."),
    evidence: str | None = typer.Option(
        None, help="Also list the devices of this group (with --date)."
    ),
    db_url: DbUrlOption = None,
) -> None:
    """设备联网率: networked / in-service production devices, both methods, labelled."""
    url = db_settings(db_url).url
    try:
        given0 = parse_day(first, "--from") or parse_day(on, "--date")
        given1 = parse_day(last, "--to")
        now = CLOCK()

        async def job(
            conn: Conn,
        ) -> tuple[date, date, ZoneInfo, list[RateFigure], list[Evidence], dict[str, str]]:
            zone = await display_zone(conn)
            d0 = given0 or now.astimezone(zone).date()
            d1 = given1 or d0
            if current:
                figures = await current_networking_rates(conn, now, group_by, scope, window_h)
            else:
                figures = await networking_rates(conn, d0, d1, group_by, scope)
            rows = (
                await networking_evidence(conn, d0, group_by, evidence, scope) if evidence else []
            )
            return d0, d1, zone, figures, rows, await group_names(conn, group_by)

        d0, d1, zone, figures, rows, names = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    when = (
        f"current at {local_time(now, zone)}, {window_h:g} h window" if current else f"{d0} … {d1}"
    )
    print_rates(
        f"设备联网率 Equipment networking rate ({when}, by {group_by})", figures, names, zone
    )
    if rows:
        print_evidence(rows)
    if evidence and any(s.federated for f in figures for s in f.sources):
        console.print(f"[yellow]⚠ {NO_DEVICES_NOTE}[/]")


@app.command("nc")
def nc_command(
    group_by: GroupBy = typer.Option(
        GroupBy.CITY, help="province, city, county, cluster, industry, enterprise"
    ),
    scope: Scope = typer.Option(
        Scope.ALL, help="all, above_designated_size (规上), key_enterprise (重点)"
    ),
    on: str | None = typer.Option(None, "--date", help="The local day (default today, local)."),
    key_process: bool = typer.Option(False, help="关键工序数控化率: key-process devices only."),
    db_url: DbUrlOption = None,
) -> None:
    """数控化率: NC devices / in-service production devices."""
    url = db_settings(db_url).url
    try:
        given = parse_day(on, "--date")

        async def job(conn: Conn) -> tuple[date, ZoneInfo, list[RateFigure], dict[str, str]]:
            zone = await display_zone(conn)
            day = given or local_today(zone)
            figures = await nc_rates(conn, day, group_by, scope, key_process=key_process)
            return day, zone, figures, await group_names(conn, group_by)

        day, zone, figures, names = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    name = "关键工序数控化率 Key-process NC rate" if key_process else "数控化率 NC rate"
    print_rates(f"{name} ({day}, by {group_by})", figures, names, zone)


@app.command("calendar")
def calendar_command(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A calendar YAML file."),
    db_url: DbUrlOption = None,
) -> None:
    """Store the shift calendars of a YAML file (班次日历); affected rollups are recomputed."""
    url = db_settings(db_url).url
    try:
        calendars = read_calendar_file(path)

        async def job(conn: Conn) -> int:
            async with conn.transaction():
                return await store_calendars(conn, calendars)

        stored = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"已保存 stored {stored} calendar(s); run `zhizao rollup run` to apply them")
