"""Memory of an ingest worker under a burst of large messages during a database outage.

Run:  .venv/bin/python bench/burst_ingest.py [--messages 500] [--mib 3] [--inflight-mib 64]

A worker process (``python -m ingest``, default settings but ``inflight_max_bytes``)
consumes from a Mosquitto of the benchmark's own and writes into a PostgreSQL cluster
of its own, which the benchmark stops. Meanwhile ``--messages`` payloads of ``--mib``
MiB arrive (QoS 1, each acknowledged by the broker); then the cluster starts again and
the worker drains the broker's queue. The worker's VmRSS is sampled all along
(tests/ingest/burst.py has the steps). Prints the figures and the bound of
docs/ingest.md ("Memory") and exits 1 if a peak exceeds it, a row is missing or
doubled, or the resident set does not come back near the baseline.
docs/robustness.md ("Memory and the broker") has the figures of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.settings import MAX_PACKET_BYTES
from tests.fix_mqtt import Mosquitto
from tests.fix_pgcluster import PgCluster, _bin_dir
from tests.ingest.burst import MIB, run_burst
from zhizao.settings import DatabaseSettings
from zhizao.storage.connection import ensure_database
from zhizao.storage.migrate import upgrade

#: The bound of docs/ingest.md: RSS ≤ baseline + K × inflight_max_bytes + 2 × max packet.
K = 4
#: "Near the baseline" after the burst.
AFTER_SLACK = 32 * MIB


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--mib", type=float, default=3.0)
    parser.add_argument("--inflight-mib", type=int, default=64)
    args = parser.parse_args()
    bin_dir = _bin_dir()
    if bin_dir is None:
        print("PostgreSQL server binaries (initdb, pg_ctl) are required")
        return 2
    folder = Path(tempfile.mkdtemp(prefix="zhizao-burst-"))
    # A folder of its own: under root the cluster runs as postgres and owns it.
    cluster = PgCluster(Path(tempfile.mkdtemp(prefix="zhizao-burst-pg-")), bin_dir)
    cluster.init()
    cluster.start()
    # The broker queues the whole burst in memory; saving that every second would
    # measure the disk, not the worker.
    broker = Mosquitto(folder / "mosquitto", extra_config="autosave_interval 3600\n")
    broker.start()
    try:
        await ensure_database(cluster.url)
        await upgrade(DatabaseSettings(url=cluster.url), timescale=False)
        inflight = args.inflight_mib * MIB
        result = await run_burst(
            cluster,
            broker,
            folder / "worker.log",
            messages=args.messages,
            payload_bytes=int(args.mib * MIB),
            inflight_max_bytes=inflight,
            settle_bytes=AFTER_SLACK,
        )
    finally:
        broker.kill()
        if cluster.running:
            cluster.stop("immediate")
    bound = result.baseline + K * inflight + 2 * MAX_PACKET_BYTES
    print("\n".join(result.lines(inflight)))
    print(f"bound: baseline + {K} x inflight_max_bytes + 2 x max_packet_bytes"
          f" = {bound / MIB:.1f} MiB")
    problems = []
    if max(result.peak_outage, result.peak_drain) > bound:
        problems.append("a peak exceeds the bound")
    if result.rows_stored != result.rows_expected or result.replays or result.gaps:
        problems.append("not every message stored exactly once")
    if result.after > result.baseline + AFTER_SLACK:
        problems.append(f"RSS after the burst more than {AFTER_SLACK // MIB} MiB above baseline")
    for problem in problems:
        print("FAIL:", problem)
    shutil.rmtree(cluster.folder, ignore_errors=True)
    if not problems:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print("kept", folder)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
