"""``python -m ingest``: one worker configured from the environment (ZHIZAO_INGEST_*)."""

from __future__ import annotations

import asyncio

from ingest.service import run_ingest
from ingest.settings import ingest_settings
from zhizao.logs import configure_logging


def main() -> None:
    configure_logging()
    asyncio.run(run_ingest(ingest_settings()))


if __name__ == "__main__":
    main()
