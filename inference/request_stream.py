"""The async stream of one request's chunks, as `Engine.submit` returns it.

The scheduler's worker thread puts chunks on an asyncio queue of the submitter's event loop;
iterating the stream takes them off until the final chunk. Leaving the loop early (or `cancel()`)
cancels the request, which the scheduler frees within one step. `collect()` gathers the whole
result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from .sequence import Sequence
from .types import GenerationChunk, GenerationResult, Timings, Usage


class RequestStream:
    """The async stream of one request's chunks. Leaving the loop early cancels the request."""

    def __init__(self, seq: Sequence, queue: asyncio.Queue[GenerationChunk],
                 wake: Callable[[], None], prompt_text: str | None = None):
        self._seq = seq
        self._queue = queue
        self._wake = wake  # tells the scheduler to look at its sequences again
        self._done = False
        self.request_id = seq.request_id
        self.prompt_token_ids = seq.prompt_ids
        self.prompt_text = prompt_text  # the rendered prompt; None for a token-id prompt
        self.prompt_tokens = len(seq.prompt_ids)
        self.max_tokens = seq.max_tokens

    def cancel(self) -> None:
        if not self._seq.finished:
            self._seq.cancel()
            self._wake()

    @property
    def finished(self) -> bool:
        return self._done

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        try:
            while not self._done:
                chunk = await self._queue.get()
                self._done = chunk.finish_reason is not None
                yield chunk
        finally:
            if not self._done:
                self.cancel()

    async def collect(self) -> GenerationResult:
        texts, ids, logprobs, last = [], [], [], None
        async for chunk in self:
            texts.append(chunk.text)
            ids.extend(chunk.token_ids)
            if chunk.logprobs:
                logprobs.extend(chunk.logprobs)
            last = chunk
        assert last is not None and last.finish_reason is not None
        return GenerationResult(
            request_id=self.request_id,
            text="".join(texts),
            token_ids=ids,
            finish_reason=last.finish_reason,
            usage=last.usage or Usage(self.prompt_tokens, 0),
            timings=last.timings or Timings(),
            logprobs=logprobs if self._seq.params.logprobs is not None else None,
            error=last.error,
        )
