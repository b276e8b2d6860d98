"""``zhizao kpi anomalies``: counter increments the edge did not count, to accept or drop.

Listed for a scope (as ``kpi oee`` takes it) and a period of local days; ``--accept ID``
counts one as production (the rollups pick it up on their next run), ``--drop ID``
records that it is not. See :mod:`zhizao.storage.anomalies`.
"""

from __future__ import annotations

import getpass
from datetime import date, datetime

import typer
from rich.table import Table

from zhizao.cli.common import (
    DbUrlOption,
    console,
    db_settings,
    fail,
    parse_day,
    with_conn,
)
from zhizao.errors import InvalidValue, ZhizaoError
from zhizao.storage.anomalies import (
    Anomaly,
    Period,
    accept,
    drop,
    list_anomalies,
    pending_count,
)
from zhizao.storage.kpi import Level, OeeScope

RULES = {"plausibility": "超出节拍上限 beyond the cycle-time limit",
         "max_increment": "超出单次上限 beyond max_increment"}  # fmt: skip


def _scope(level: Level | None, code: str | None, enterprise: str | None) -> OeeScope | None:
    if level is None:
        return OeeScope(Level.ENTERPRISE, enterprise) if enterprise else None
    if code is None:
        raise InvalidValue("CODE", None, f"a {level} scope needs its code")
    return OeeScope(level, code, enterprise)


def _status(a: Anomaly) -> str:
    if a.decision is None:
        return "待处理 pending"
    when = a.decided_at.astimezone(a.local_time.tzinfo) if a.decided_at else None
    stamp = when.isoformat(timespec="minutes") if when else "?"
    return f"{a.decision.label_zh} {a.decision.value} · {a.decided_by} · {stamp}"


def _why(a: Anomaly) -> str:
    d = a.detail
    elapsed = d.get("elapsed_ms")
    span = "" if elapsed is None else f" in {elapsed / 1000:,.0f} s"
    limit = "" if d.get("limit") is None else f", limit {d['limit']:,}"
    rule = RULES.get(str(d.get("rule")), str(d.get("rule")))
    return f"{rule}: {d.get('previous_total')} → {d.get('total')}{span}{limit}"


def print_anomalies(rows: list[Anomaly], title: str) -> None:
    table = Table(title=title)
    table.add_column("ID", no_wrap=True)
    table.add_column("设备 device")
    table.add_column("时间 time", no_wrap=True)
    table.add_column("增量 increment", justify="right", no_wrap=True)
    table.add_column("依据 why")
    table.add_column("状态 status")
    for a in rows:
        counter = "合格 good" if a.counter == "good" else "不良 reject"
        table.add_row(
            str(a.id), f"{a.device} {a.device_name}\n{a.enterprise}",
            a.local_time.isoformat(timespec="seconds"), f"+{a.increment:,} {counter}",
            _why(a), _status(a),
        )  # fmt: skip
    console.print(table)


def anomalies_command(  # noqa: PLR0917 - typer maps each option to a parameter
    level: Level | None = typer.Argument(
        None, help="device, line, enterprise, cluster or region (default: every enterprise)"
    ),
    code: str | None = typer.Argument(None, help="Its code, as for `zhizao kpi oee`."),
    enterprise: str | None = typer.Option(None, help="Credit code (alone: that enterprise)."),
    on: str | None = typer.Option(None, "--day", help="A local day."),
    first: str | None = typer.Option(None, "--from", help="First local day."),
    last: str | None = typer.Option(None, "--to", help="Last local day."),
    show_all: bool = typer.Option(False, "--all", help="Also those decided already."),
    accept_id: int | None = typer.Option(None, "--accept", help="Count this one as production."),
    drop_id: int | None = typer.Option(None, "--drop", help="Record this one as not production."),
    by: str | None = typer.Option(None, help="Who decides (default: the login name)."),
    note: str | None = typer.Option(None, help="Why, kept with the decision."),
    db_url: DbUrlOption = None,
) -> None:
    """计数异常 Counter anomalies: increments the edge refused as implausible."""
    url = db_settings(db_url).url
    try:
        if accept_id is not None and drop_id is not None:
            raise InvalidValue("--accept/--drop", (accept_id, drop_id), "decide one at a time")
        if accept_id is not None or drop_id is not None:
            who = by or getpass.getuser()
            if accept_id is not None:
                decided = with_conn(url, lambda c: accept(c, accept_id, by=who, note=note))
                console.print(
                    f"已采纳 accepted {decided.id}: +{decided.increment} {decided.counter} for"
                    f" {decided.device} at {decided.local_time.isoformat(timespec='seconds')};"
                    " run `zhizao rollup run` to update the KPIs",
                    soft_wrap=True,
                )
            elif drop_id is not None:
                decided = with_conn(url, lambda c: drop(c, drop_id, by=who, note=note))
                console.print(f"已舍弃 dropped {decided.id}: not counted as production")
            return
        scope = _scope(level, code, enterprise)
        day = parse_day(on, "--day")
        period = Period(
            first=parse_day(first, "--from") or day, last=parse_day(last, "--to") or day
        )
        rows = with_conn(url, lambda c: list_anomalies(c, scope, period, pending_only=not show_all))
    except ZhizaoError as exc:
        raise fail(exc) from exc
    where = "all enterprises" if scope is None else f"{scope.level} {scope.code}"
    when = f" {period.first or '…'} … {period.last or '…'}" if period.first or period.last else ""
    kind = "" if show_all else " pending"
    print_anomalies(rows, f"计数异常 Counter anomalies{kind} — {where}{when}")
    if not rows:
        console.print("没有计数异常 no counter anomalies")


def print_pending(url: str, scope: OeeScope, start: date | datetime, end: date | datetime) -> None:
    """For ``kpi oee``: one line when anomalies of its scope and period wait."""
    if isinstance(start, datetime) and isinstance(end, datetime):
        period = Period(start=start, end=end)
    else:
        first = start.date() if isinstance(start, datetime) else start
        last = end.date() if isinstance(end, datetime) else end
        period = Period(first=first, last=last)
    count = with_conn(url, lambda c: pending_count(c, scope, period))
    if count:
        args = f"{scope.level} {scope.code}"
        if scope.enterprise:
            args += f" --enterprise {scope.enterprise}"
        if period.first is not None:
            args += f" --from {period.first} --to {period.last}"
        console.print(
            f"[yellow]⚠ {count} 条计数异常待处理 counter anomalies pending"
            f" (zhizao kpi anomalies {args})[/]",
            soft_wrap=True,  # a command to paste: not broken across lines
        )
