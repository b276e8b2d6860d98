"""``zhizao sim``: the factory simulator (OPC UA machines and robots, MQTT devices)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from edge.simulator.run import run_simulator
from edge.simulator.scenario import load_scenario, resolve
from zhizao.cli.common import console, fail
from zhizao.errors import ZhizaoError

app = typer.Typer(
    help="The factory simulator for demos, tests and benchmarks.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """The factory simulator (a group, so that ``sim run`` stays ``sim run``)."""


@app.command("run")
def run_command(
    scenario: str = typer.Argument(
        "factory", help="A scenario file, or the name of a bundled one (factory, smoke)."
    ),
    *,
    opcua_port: int = typer.Option(4840, help="Port of the simulated OPC UA server."),
    host: str = typer.Option("127.0.0.1", help="Address the OPC UA server listens on."),
    mqtt_url: str | None = typer.Option(
        None, help="Broker for the MQTT devices, e.g. mqtt://127.0.0.1:1883 (needed if any)."
    ),
    ground_truth: Path | None = typer.Option(
        None, help="Write the ground truth (JSON lines) here when the run ends."
    ),
    speed: float | None = typer.Option(
        None, help="Simulated seconds per wall second (default: the scenario's)."
    ),
) -> None:
    """Run a scenario until it ends (Ctrl-C ends it early; the ground truth is still written)."""
    try:
        loaded = load_scenario(resolve(scenario))
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(
        f"simulating [bold]{loaded.name}[/] ({len(loaded.devices)} devices) at "
        f"{speed or loaded.speed:g}x; OPC UA on opc.tcp://{host}:{opcua_port}/zhizao/sim/"
    )
    try:
        asyncio.run(
            run_simulator(
                loaded,
                opcua_port=opcua_port,
                mqtt_url=mqtt_url,
                ground_truth_path=ground_truth,
                speed=speed,
                host=host,
            )
        )
    except KeyboardInterrupt:
        console.print("stopped")
    except ValueError as exc:  # e.g. MQTT devices in the scenario but no --mqtt-url
        raise typer.BadParameter(str(exc)) from exc
    if ground_truth is not None:
        console.print(f"ground truth in {ground_truth}")
