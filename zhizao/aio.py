"""Small asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


def call_on_loop(
    loop: asyncio.AbstractEventLoop | None,
    loop_thread: int | None,
    fn: Callable[..., object],
    *args: Any,
) -> None:
    """Run ``fn(*args)`` on ``loop``'s thread: at once when called there, soon otherwise.

    For callbacks a library fires in whatever thread it happens to be in (paho's
    socket callbacks during a connect done in a worker thread). A loop that is gone or
    closed takes nothing: paho also fires them when a client is garbage-collected.
    """
    if loop is None or loop.is_closed():
        return
    if threading.get_ident() == loop_thread:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)
