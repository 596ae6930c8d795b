"""Server-Sent Events: the event encoding, the streaming response, and the rules every stream keeps.

- Each event is `data: <json>\\n\\n`; the stream ends with `data: [DONE]`.
- An error while streaming is sent as `data: {"error": {...}}` followed by `data: [DONE]`: the
  status line went out with the first byte, so the error travels in the body, as OpenAI does it.
  A stream still open when the shutdown drain ends gets one with code `server_shutting_down`.
- However the stream ends (finished, failed, or the client went away and uvicorn cancelled the
  response task), `on_close` runs: it cancels the engine requests, freeing the engine at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.errors import from_engine_error

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"
_SURROGATE = re.compile("[\ud800-\udfff]")
T = TypeVar("T")


def sse(data: BaseModel | dict[str, Any]) -> str:
    """One event; pydantic models are dumped with their own exclusion rules."""
    if isinstance(data, BaseModel):
        payload = data.model_dump_json()
    else:
        payload = json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


_MARK = "\ue000nf4serve-text\ue000"  # private-use characters: dumped as they are, found once


class TextTemplate:
    """Events that differ only in one string field, from one dump of the model: `render(text)`
    gives the bytes `sse(model with text)` would, in about a sixth of the time. A stream sends
    one such event a token, so at many streams the model's validation and dump (about 7 µs an
    event on our CI machine) add up on the event loop. Text the template cannot take as is (a
    lone surrogate, which no JSON encoder takes) goes through the model."""

    def __init__(self, make: Callable[[str], BaseModel]):
        self.make = make
        quoted = json.dumps(_MARK, ensure_ascii=False)
        parts = sse(make(_MARK)).split(quoted)
        self.parts = parts if len(parts) == 2 else None

    def render(self, text: str) -> str:
        if self.parts is None or not text.isascii() and _SURROGATE.search(text):
            return sse(self.make(text))
        return self.parts[0] + json.dumps(text, ensure_ascii=False) + self.parts[1]


class EventSourceResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], **kwargs: Any):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(content, headers=headers, **kwargs)


async def guarded(
    events: AsyncIterator[str], on_close: Callable[[], None], prompt_param: str | None = None
) -> AsyncIterator[str]:
    """Pass `events` through; turn an exception into an error event and `[DONE]`; always
    call `on_close` (also when the client disconnects and the task is cancelled)."""
    try:
        async for event in events:
            yield event
    except Exception as exc:  # noqa: BLE001  (anything: the client gets an error event)
        error = from_engine_error(exc, prompt_param)
        # Cut by a shutdown is expected, not a failure.
        level = logging.INFO if error.detail.code == "server_shutting_down" else logging.WARNING
        logger.log(level, "Stream ended with an error: %s", error.detail.message)
        yield sse(error.body())
        yield DONE
    finally:
        on_close()


class _End:
    pass


async def merge(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Interleave several async streams as their items arrive, as (stream index, item).

    An exception in any stream is raised here; leaving early cancels the readers."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
        except Exception as exc:  # noqa: BLE001  (re-raised by the consumer)
            await queue.put((index, exc))
        finally:
            await queue.put((index, _End))

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _End:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
