"""``zhizao edge``: run an edge collector, or check its config against the real devices."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from zhizao.cli.common import console, err_console, fail
from zhizao.errors import ZhizaoError

if TYPE_CHECKING:
    # Imported lazily at run time: `zhizao --help` should not load asyncua.
    from edge.config import EdgeConfig
    from edge.mqtt.config import MqttSourceConfig
    from edge.opcua.config import OpcUaSourceConfig

app = typer.Typer(
    help="The edge collector (OPC UA, MQTT → spool → platform broker).", no_args_is_help=True
)

ConfigArg = typer.Argument(..., exists=False, help="Edge YAML config (docs/edge.md).")


@app.command("run")
def run_command(config: Path = ConfigArg) -> None:
    """Run the edge until SIGTERM or Ctrl-C; unsent data stays in the spool."""
    from edge.config import load_config
    from edge.runtime import run_edge
    from edge.settings import apply_settings, edge_settings

    try:
        cfg = apply_settings(load_config(config), edge_settings())
    except ZhizaoError as exc:
        raise fail(exc) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_edge(cfg, stop=stop)

    try:
        asyncio.run(main())
    except ZhizaoError as exc:
        raise fail(exc, code=1) from exc


@app.command("check")
def check_command(
    config: Path = ConfigArg,
    listen: float = typer.Option(5.0, help="Seconds to listen for MQTT devices."),
) -> None:
    """Validate the config, connect to the uplink broker and every source, read every
    mapped node (OPC UA) or listen for devices (MQTT) and print what was found."""
    from edge.config import load_config

    try:
        cfg = load_config(config)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(
        f"[green]config ok[/]: {config} — enterprise {cfg.identity.enterprise}, "
        f"edge {cfg.identity.edge_id}, {len(cfg.sources)} source(s)"
    )
    problems = asyncio.run(_check_all(cfg, listen))
    if problems:
        err_console.print(f"[bold red]{problems} problem(s) found[/]")
        raise typer.Exit(1)
    console.print("[green]all checks passed[/]")


async def _check_all(cfg: EdgeConfig, listen: float) -> int:
    from edge.mqtt.config import MqttSourceConfig
    from edge.opcua.config import OpcUaSourceConfig

    problems = await _check_uplink(cfg)
    for source in cfg.sources:
        if isinstance(source, OpcUaSourceConfig):
            problems += await _check_opcua(source)
        elif isinstance(source, MqttSourceConfig):
            problems += await _check_mqtt(source, listen)
    return problems


async def _check_uplink(cfg: EdgeConfig) -> int:
    from zhizao.mqtt import MqttSession

    session = MqttSession(
        cfg.uplink.model_copy(update={"reconnect_max_s": 1.0}),
        client_id=f"zhizao-check-{uuid.uuid4().hex[:10]}",
        name="check:uplink",
        persistent=False,
    )
    task = asyncio.create_task(session.run())
    try:
        async with asyncio.timeout(20):
            connected = await session.first_outcome()
    except TimeoutError:
        connected = False
    try:
        if not connected:
            why = session.last_error or "timeout"
            err_console.print(f"[red]uplink {cfg.uplink.address}: not reachable[/] ({why})")
            return 1
    finally:
        await session.disconnect()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    protocol = "MQTT 5" if session.protocol.value == 5 else "MQTT 3.1.1"
    console.print(f"[green]uplink {cfg.uplink.address}: connected[/] ({protocol})")
    return 0


async def _check_opcua(source: OpcUaSourceConfig) -> int:
    from edge.opcua.check import check_source

    try:
        checks = await check_source(source)
    except (OSError, TimeoutError, ZhizaoError, ConnectionError) as exc:
        err_console.print(f"[red]source {source.name} ({source.endpoint}): {exc!r}[/]")
        return 1
    except Exception as exc:  # noqa: BLE001 - asyncua raises many kinds; report, do not crash
        err_console.print(f"[red]source {source.name} ({source.endpoint}): {exc!r}[/]")
        return 1
    table = Table(title=f"OPC UA source {source.name} — {source.endpoint}")
    for column in ("device", "name", "address", "node", "value", "quality", "problem"):
        table.add_column(column)
    problems = 0
    for check in checks:
        problems += 1 if check.error else 0
        table.add_row(
            check.device,
            check.name,
            check.address,
            check.node_id or "",
            "" if check.value is None else str(check.value),
            "" if check.quality is None else str(check.quality),
            check.error or "",
        )
    console.print(table)
    return problems


async def _check_mqtt(source: MqttSourceConfig, listen: float) -> int:
    from edge.mqtt.check import check_source

    report = await check_source(source, listen_s=listen)
    if not report.reachable:
        err_console.print(
            f"[red]source {source.name}: broker {report.broker} not reachable[/] ({report.error})"
        )
        return 1
    for topic, reason in report.refused.items():
        err_console.print(
            f"[red]source {source.name}: the broker refused the subscription {topic}[/] "
            f"({reason}); check its ACL for this user"
        )
    table = Table(title=f"MQTT source {source.name} — {report.broker}, listened {listen:g} s")
    for column in ("device", "expected", "messages", "last seen", "last values", "problems"):
        table.add_column(column)
    problems = len(report.refused)
    now = time.time()
    for device in sorted(report.devices):
        entry = report.devices[device]
        if entry.last_seen_ms is None:
            seen = "[yellow]not seen[/]"
            problems += 1 if entry.expected else 0
        else:
            moment = datetime.fromtimestamp(entry.last_seen_ms / 1000, UTC)
            seen = f"{moment:%H:%M:%S}Z ({now - entry.last_seen_ms / 1000:.1f} s ago)"
        problems += 1 if entry.problems else 0
        table.add_row(
            device,
            "yes" if entry.expected else "no",
            str(entry.messages),
            seen,
            ", ".join(entry.last_points[:4]),
            "; ".join(entry.problems[:2]),
        )
    console.print(table)
    if report.unmatched:
        console.print(f"{report.unmatched} message(s) matched no topic mapping")
    return problems


if __name__ == "__main__":
    app()
