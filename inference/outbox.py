"""Handing the scheduler's chunks to the event loops that wait for them, once per step.

The scheduler's thread produces a chunk per running stream per step. Handing each over with its own
`call_soon_threadsafe` would wake the consumer's event loop once per chunk: a syscall each, and an
event loop that wakes in the middle of the step's bookkeeping and asks for the GIL. The outbox
keeps them instead, and `flush()` hands each loop its chunks in one call, in the order they were
put: on a GPU once the next step's forward pass is queued, on a CPU before it, and before the
scheduler waits for work.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# (callback, its argument, the context to run it in or None, what to do if its loop is closed)
Delivery = tuple[Callable[[Any], None], Any, contextvars.Context | None, Callable[[], None]]


class Outbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[asyncio.AbstractEventLoop, list[Delivery]] = {}

    def put(self, loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None], arg: Any,
            on_closed: Callable[[], None], context: contextvars.Context | None = None) -> None:
        """Run `callback(arg)` on `loop` at the next flush; `on_closed()` instead if the loop has
        closed by then (nobody is listening any more)."""
        with self._lock:
            self._pending.setdefault(loop, []).append((callback, arg, context, on_closed))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for loop, deliveries in pending.items():
            try:
                loop.call_soon_threadsafe(_deliver, deliveries)
            except RuntimeError:  # the loop is closed
                for *_, on_closed in deliveries:
                    on_closed()


def _deliver(deliveries: list[Delivery]) -> None:
    for callback, arg, context, _ in deliveries:
        try:
            if context is None:
                callback(arg)
            else:
                context.run(callback, arg)
        except Exception:  # one consumer's failure is not the others'
            logger.exception("Delivering a chunk failed")
