"""One log format per process: library records come out as the same JSON lines as ours."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from zhizao.logs import configure_logging


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(json_lines=True, level="INFO")
    capsys.readouterr()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


@pytest.mark.usefixtures("json_logs")
def test_library_and_own_logs_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.get_logger("ingest").info("ingest starting", client_id="w1")
    logging.getLogger("amqtt.broker").warning("client %s gone", "edge-1")
    own, library = _lines(capsys)
    assert own["event"] == "ingest starting"
    assert own["client_id"] == "w1"
    assert library["event"] == "client edge-1 gone"
    assert library["level"] == "warning"
    assert library["logger"] == "amqtt.broker"
    assert str(library["timestamp"]).endswith("Z")


@pytest.mark.usefixtures("json_logs")
def test_configuring_twice_keeps_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_lines=True, level="INFO")
    logging.getLogger("edge.simulator").warning("once")
    assert [line["event"] for line in _lines(capsys)] == ["once"]


@pytest.mark.usefixtures("json_logs")
def test_asyncua_connection_loss_is_one_warning_other_errors_keep_their_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    session_log = logging.getLogger("asyncua.client.ua_session.UaSession")
    for exc in (ConnectionError("Connection is closed"), KeyError("subscription 7")):
        # As asyncua's logger.exception() does inside its except clause.
        session_log.error("Publish iteration crashed; retrying in 1s", exc_info=exc)
    lost, other = _lines(capsys)
    assert lost["level"] == "warning"
    assert lost["event"] == "Publish iteration crashed; retrying in 1s: Connection is closed"
    assert "exception" not in lost
    assert other["level"] == "error"
    assert "KeyError" in str(other["exception"])
