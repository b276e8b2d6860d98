"""The demo's API and board process: ``python -m zhizao.cli.demo_serve`` (the demo runs
it, see :class:`zhizao.cli.demo_board.BoardServer`).

A module of its own, which the ``zhizao.cli`` package does not import, so that running
it with ``-m`` does not find it imported already. It serves on the listening socket it
inherits (``--fd``), with the signing secret of the data directory's login file
(``--home``) and the database URL from ``ZHIZAO_DB_URL``; it logs to the demo's log
and ends when its parent does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import uvicorn

from platform_api import create_app
from zhizao.cli.demo_board import board_settings, demo_login
from zhizao.logs import log_to_file


async def _serve(fd: int, home: Path) -> None:
    login = demo_login(home)
    settings = board_settings(os.environ["ZHIZAO_DB_URL"], login)
    config = uvicorn.Config(
        create_app(settings), fd=fd, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    parent = os.getppid()

    async def orphaned() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                server.should_exit = True
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(orphaned())
    try:
        await server.serve()
    finally:
        watcher.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zhizao.cli.demo_serve")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    log_to_file(args.log)
    asyncio.run(_serve(args.fd, args.home))
    return 0


if __name__ == "__main__":
    sys.exit(main())
