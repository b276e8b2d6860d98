"""What a broker restart costs: real edges → the shipped Mosquitto config → real ingest.

Run:  .venv/bin/python bench/broker_restarts.py [--rounds 5] [--case NAME ...]

Each case runs tests/ingest/restarts.py (two edges fed at a steady pace, an ingest
worker, the broker stopped or killed and started again every few thousand points) on a
database of its own and prints sent, stored, lost, and what ingest's sequence tracker
reports missing. The figures of a run are in docs/robustness.md ("Memory and the
broker").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fix_db import create_database, drop_database
from tests.ingest.restarts import run_restarts
from zhizao.settings import DatabaseSettings
from zhizao.storage.migrate import upgrade

ON_CHANGES = "autosave_on_changes true\nautosave_interval 1\n"
PLAIN = {"shared_group": None}
CASES: dict[str, dict[str, object]] = {
    # The shipped config, ingest on its default shared subscription ...
    "stop": {"how": "stop"},
    "stop-away": {"how": "stop", "ingest_away": True},
    "kill": {"how": "kill"},
    "kill-away": {"how": "kill", "ingest_away": True},
    # ... and on a plain subscription (shared_group empty: one worker).
    "stop-plain": {"how": "stop", **PLAIN},
    "stop-away-plain": {"how": "stop", "ingest_away": True, **PLAIN},
    "kill-plain": {"how": "kill", **PLAIN},
    "kill-away-plain": {"how": "kill", "ingest_away": True, **PLAIN},
    # Other persistence settings.
    "kill-away-5s": {"how": "kill", "ingest_away": True, "extra_config": "autosave_interval 5\n"},
    "kill-on-changes": {"how": "kill", "extra_config": ON_CHANGES, **PLAIN},
    "kill-away-on-changes": {"how": "kill", "ingest_away": True, "extra_config": ON_CHANGES,
                             **PLAIN},
    "stop-away-no-persistence": {
        "how": "stop", "ingest_away": True, "extra_config": "persistence false\n", **PLAIN
    },
}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--points-per-round", type=int, default=4000)
    args = parser.parse_args()
    for name in args.case or list(CASES):
        db = f"zhizao_bench_restarts_{uuid.uuid4().hex[:8]}"
        url = create_database(db)
        try:
            await upgrade(DatabaseSettings(url=url), timescale=False)
            with tempfile.TemporaryDirectory(prefix="zhizao-restarts-") as tmp:
                result = await run_restarts(
                    url, Path(tmp), rounds=args.rounds, points_per_round=args.points_per_round,
                    **CASES[name],  # type: ignore[arg-type]
                )
            print(f"{name:22s} {result.line()}", flush=True)
        finally:
            drop_database(db)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
