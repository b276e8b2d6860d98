"""``zhizao contract``: the wire contract's published artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zhizao.cli.common import console
from zhizao.wire import json_schemas

app = typer.Typer(help="The edge → platform wire contract.", no_args_is_help=True)


@app.command("schema")
def schema_command(
    out: Path = typer.Option(Path("docs/schema"), help="Folder to write *.schema.json to."),
) -> None:
    """Write the JSON Schemas of the uplink contract (tests check they are current)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {path}")
