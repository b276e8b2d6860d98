"""The broker's persistence is part of the delivery promise (issue 10, DESIGN §9).

Real edges (spool and uplink) send QoS 1 batches with their sequence numbers through a
Mosquitto running the shipped config (deploy/mosquitto/mosquitto.conf) to a real
ingest worker, and the broker is restarted under that load (tests/ingest/restarts.py).
docs/robustness.md ("Memory and the broker") has the measurements behind each case.

- Stopped cleanly (SIGTERM), Mosquitto saves its database on the way out: with a plain
  subscription, sent = stored, whether ingest was consuming or away (the queue then
  holds what the edges sent meanwhile).
- A shared subscription ($share/ingest/..., several workers) is not restored from the
  database by Mosquitto 2.0.11: until a worker subscribes again, the broker answers
  the edges "no matching subscribers" and drops their batches. Killed (SIGKILL), the
  broker also loses what it had acknowledged and neither saved nor handed to ingest.
  Neither can ingest prevent; what it must not be is silent: every lost message is an
  open sequence gap in ingest, and nothing else is.
- Without working persistence a clean restart loses the queue, and ingest says so in
  the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ingest.restarts import BATCH_POINTS, RestartResult, run_restarts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

AWAY = pytest.mark.parametrize("ingest_away", [False, True], ids=["ingest-running", "ingest-away"])


def _every_loss_reported(result: RestartResult) -> None:
    report = result.line()
    assert result.sent > 0, report
    assert result.lost >= 0, report  # nothing stored that was not sent
    # Each message the platform never got is in an open gap, and each open gap is a
    # message of 1 to BATCH_POINTS points that never arrived.
    assert result.gap_messages <= result.lost <= result.gap_messages * BATCH_POINTS, report


@AWAY
async def test_graceful_broker_restarts_under_load_lose_nothing(
    db_url: str, tmp_path: Path, ingest_away: bool
) -> None:
    result = await run_restarts(
        db_url, tmp_path, how="stop", rounds=3, ingest_away=ingest_away, shared_group=None
    )
    print(result.line())
    assert result.sent > 0
    assert result.stored == result.sent, result.line()
    assert result.gap_messages == 0, result.line()


async def test_graceful_restarts_with_a_shared_subscription_report_every_loss(
    db_url: str, tmp_path: Path
) -> None:
    result = await run_restarts(db_url, tmp_path, how="stop", rounds=3)
    print(result.line())
    _every_loss_reported(result)


@AWAY
async def test_after_kill_9_every_lost_message_is_reported_as_a_sequence_gap(
    db_url: str, tmp_path: Path, ingest_away: bool
) -> None:
    result = await run_restarts(db_url, tmp_path, how="kill", rounds=3, ingest_away=ingest_away)
    print(result.line())
    _every_loss_reported(result)


async def test_a_broker_without_persistence_loses_its_queue_and_ingest_reports_it(
    db_url: str, tmp_path: Path
) -> None:
    result = await run_restarts(
        db_url,
        tmp_path,
        how="stop",
        rounds=2,
        ingest_away=True,
        extra_config="persistence false\n",
        shared_group=None,
    )
    print(result.line())
    assert result.lost > 0, result.line()  # acknowledged to the edges, gone with the broker
    _every_loss_reported(result)
