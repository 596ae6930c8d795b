"""How often the playground sends a growing reply to the browser.

Every update makes the page render the whole reply again (Markdown, LaTeX, code highlighting), so
sending one per token costs the browser work that grows with the square of the reply's length: on
a slow machine a long reply froze the page for seconds, Stop included. `paced` groups the engine's
chunks so that updates come at most once per `update_interval(chars)`: 50 ms while the reply is
short (smooth to the eye), then longer as it grows (a bounded rendering cost per second), at most
half a second. A chunk that ends the stream is sent at once, and a chunk is never held back longer
than the interval: the wait for the next chunk is bounded by it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")

MIN_INTERVAL = 0.05
MAX_INTERVAL = 0.5
# Characters of reply the browser is asked to render per second, at most, once past MIN_INTERVAL.
RENDER_CHARS_PER_SECOND = 40_000


def update_interval(chars: int) -> float:
    """Seconds between two updates of a reply `chars` characters long."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, chars / RENDER_CHARS_PER_SECOND))


async def paced(
    chunks: AsyncIterable[T],
    interval: Callable[[], float],
    ends: Callable[[T], bool] = lambda chunk: False,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[list[T]]:
    """Yield `chunks` in groups, one group per `interval()` seconds at most; a chunk for which
    `ends` is true closes its group at once. Closing this generator early cancels the wait for
    the next chunk and closes `chunks` (when it is an async generator)."""
    clock = clock or asyncio.get_running_loop().time
    source = aiter(chunks)
    pending: list[T] = []
    waiting: asyncio.Future[T] | None = None
    last = -math.inf
    try:
        while True:
            if waiting is None:
                waiting = asyncio.ensure_future(anext(source))
            timeout = max(0.0, last + interval() - clock()) if pending else None
            done, _ = await asyncio.wait({waiting}, timeout=timeout)
            if done:
                future, waiting = waiting, None
                try:
                    chunk = future.result()
                except StopAsyncIteration:
                    break
                pending.append(chunk)
                if not ends(chunk) and clock() - last < interval():
                    continue
            group, pending = pending, []
            last = clock()
            yield group
        if pending:
            yield pending
    finally:
        if waiting is not None:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()
