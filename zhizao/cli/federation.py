"""``zhizao federation``: an instance's identity, the province's register of instances,
and the cluster instance's push of signed daily reports (docs/federation.md)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import typer
from rich.table import Table

from zhizao.cli.common import DbUrlOption, console, db_settings, err_console, fail, with_conn
from zhizao.embedded import demo_home
from zhizao.errors import ZhizaoError
from zhizao.federation import (
    INSTANCE_HEADER,
    SIGNATURE_HEADER,
    Enqueued,
    Identity,
    Peer,
    due,
    enqueue,
    init_identity,
    list_peers,
    load_identity,
    mark_failed,
    mark_sent,
    outbox_status,
    parse_public_key,
    register_peer,
)
from zhizao.storage.connection import Conn, connect
from zhizao.storage.kpi import display_zone

app = typer.Typer(help="Federation: cluster instances report to the province.",
                  no_args_is_help=True)  # fmt: skip


def _default_key_file() -> Path:
    given = os.environ.get("ZHIZAO_FEDERATION_KEY_FILE")
    return Path(given) if given else demo_home().parent / "federation-key.json"


KeyFileOption = typer.Option(
    None, "--key-file", help="The identity file (default $ZHIZAO_FEDERATION_KEY_FILE, else"
    " federation-key.json beside the demo's data).",
)  # fmt: skip


@app.command("init")
def init_command(
    instance: str = typer.Argument(..., help="This instance's id, e.g. CL-NB-MOLD."),
    key_file: Path | None = KeyFileOption,
    force: bool = typer.Option(False, help="Replace an existing identity."),
) -> None:
    """Make this instance's Ed25519 key pair; print what the province registers."""
    path = key_file or _default_key_file()
    try:
        identity = init_identity(path, instance, force=force)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"身份已生成 identity written to {path} (mode 0600; keep it private)")
    console.print(f"实例 instance:  {identity.instance_id}")
    console.print(f"公钥 public key: {identity.public_key_text}")
    console.print("在省级平台登记 register it on the provincial instance with:")
    console.print(
        f"  zhizao federation register {identity.instance_id} --public-key"
        f" {identity.public_key_text} --region REGION [--cluster CLUSTER]",
        soft_wrap=True,
    )


@app.command("register")
def register_command(  # noqa: PLR0917 - typer maps each option to a parameter
    instance: str = typer.Argument(..., help="The reporting instance's id."),
    public_key: str = typer.Option(..., help="Its public key (base64, from its init)."),
    region: list[str] = typer.Option([], help="A region it may report for (repeatable)."),
    cluster: list[str] = typer.Option([], help="A cluster it may report for (repeatable)."),
    name: str = typer.Option("", help="A name for people."),
    db_url: DbUrlOption = None,
) -> None:
    """On the provincial instance: let an instance report for some regions and clusters."""
    url = db_settings(db_url).url
    try:
        key = parse_public_key(public_key)

        async def job(conn: Conn) -> Peer:
            return await register_peer(conn, instance, key, name=name, regions=region,
                                       clusters=cluster)  # fmt: skip

        peer = with_conn(url, job)
    except ZhizaoError as exc:
        raise fail(exc) from exc
    console.print(f"已登记 registered {peer.instance_id}: regions {', '.join(peer.regions) or '—'};"
                  f" clusters {', '.join(peer.clusters) or '—'}")  # fmt: skip


@app.command("peers")
def peers_command(db_url: DbUrlOption = None) -> None:
    """On the provincial instance: the registered instances."""
    peers = with_conn(db_settings(db_url).url, list_peers)
    table = Table("实例 instance", "名称 name", "地区 regions", "集群 clusters", "状态 state")
    for p in peers:
        table.add_row(p.instance_id, p.name, ", ".join(p.regions), ", ".join(p.clusters),
                      "停用 disabled" if p.disabled else "启用 active")  # fmt: skip
    console.print(table)


async def push_once(
    conn: Conn, identity: Identity, url: str, days: list[date], *, timeout_s: float = 30.0
) -> tuple[Enqueued, int, int]:
    """Enqueue what changed on ``days``, then deliver everything due. (enqueued, sent,
    failed); a failure leaves the report in the outbox for its next attempt."""
    enqueued = await enqueue(conn, identity, days)
    sent = failed = 0
    target = url.rstrip("/") + "/api/v1/federation/reports"
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        for item in await due(conn, datetime.now(UTC)):
            headers = {INSTANCE_HEADER: identity.instance_id,
                       SIGNATURE_HEADER: identity.sign(item.body),
                       "Content-Type": "application/json"}  # fmt: skip
            try:
                answer = await client.post(target, content=item.body, headers=headers)
            except httpx.HTTPError as exc:
                await mark_failed(conn, item, datetime.now(UTC), f"{type(exc).__name__}: {exc}")
                failed += 1
                continue
            if answer.status_code == 200:
                await mark_sent(conn, item, datetime.now(UTC))
                sent += 1
            else:
                detail = answer.text[:300]
                await mark_failed(conn, item, datetime.now(UTC), f"{answer.status_code} {detail}")
                failed += 1
    return enqueued, sent, failed


@app.command("push")
def push_command(  # noqa: PLR0917 - typer maps each option to a parameter
    url: str = typer.Option(..., help="The provincial instance's base URL."),
    days: int = typer.Option(7, min=1, max=400, help="Local days up to yesterday to report."),
    until: str | None = typer.Option(None, help="The last day to report (default yesterday)."),
    every: float = typer.Option(0, min=0, help="Repeat every this many seconds (0: once)."),
    key_file: Path | None = KeyFileOption,
    db_url: DbUrlOption = None,
) -> None:
    """On a cluster instance: report the last days' aggregates (only what changed), then
    deliver the outbox; failures wait for their next attempt (10 s doubling, ≤ 1 h)."""
    dburl = db_settings(db_url).url
    try:
        identity = load_identity(key_file or _default_key_file())
        last_given = date.fromisoformat(until) if until else None
    except ValueError as exc:
        raise fail(f"--until {until!r} is not a date (YYYY-MM-DD)") from exc
    except ZhizaoError as exc:
        raise fail(exc) from exc

    async def run() -> int:
        conn = await connect(dburl)
        async with conn:
            while True:
                zone = await display_zone(conn)
                last = last_given or datetime.now(zone).date() - timedelta(days=1)
                wanted = [last - timedelta(days=i) for i in range(days - 1, -1, -1)]
                enqueued, sent, failed = await push_once(conn, identity, url, wanted)
                status = await outbox_status(conn)
                err_console.print(
                    f"上报 push {wanted[0]}…{wanted[-1]}: 新修订 {enqueued.new} new revisions of"
                    f" {enqueued.enterprises} enterprise-days; 已送达 sent {sent}; 失败 failed"
                    f" {failed}; 待发 pending {status['pending']}"
                    + (f" (last error: {status['last_error']})" if status["last_error"] else "")
                )
                if every <= 0:
                    return 1 if status["pending"] else 0
                await asyncio.sleep(every)

    code = asyncio.run(run())
    if code:
        raise typer.Exit(code)


@app.command("status")
def status_command(db_url: DbUrlOption = None) -> None:
    """On a cluster instance: the outbox (pending, sent, next attempt, last error)."""
    status = with_conn(db_settings(db_url).url, outbox_status)
    for key, value in status.items():
        console.print(f"{key}: {value if value is not None else '—'}")
