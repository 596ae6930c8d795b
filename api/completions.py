"""POST /completions: OpenAI's legacy Completions, on the same engine path as /generate.

Each prompt of the request (text or token ids, one or a list) becomes `n` engine requests, all
submitted before any answer starts, so a too-long prompt (413, or 400 with `--context-error-status
400`) or a saturated engine (503) is an HTTP status, not a broken stream. A prompt is tokenized
once, off the event loop: its other choices reuse the first one's tokens. Choice `i` of prompt `p`
has index `p * n + i`, as OpenAI numbers them. The non-streaming answer is the streams collected;
with `echo`, each choice's text starts with its prompt (token ids decoded). A choice that failed
(500) or that the server cancelled (503: shutting down) fails the whole answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from api.choices import ChoiceStreams
from api.deps import EngineDep
from api.errors import check_finished
from api.logprobs import to_legacy
from api.protocol import (
    ERROR_RESPONSES,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
    new_id,
    now,
)
from api.sse import DONE, merge, sse
from inference.types import GenerationResult

logger = logging.getLogger(__name__)

router = APIRouter(tags=["completions"])

STREAM_RESPONSE = {
    "description": "With `stream: true`: Server-Sent Events, one `text_completion` chunk per text "
    "delta of a choice (the last with its finish_reason), then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/CompletionChunk"}}},
}


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={**ERROR_RESPONSES, 200: STREAM_RESPONSE},
    summary="Create a completion (OpenAI's legacy Completions; no chat template)",
)
async def create_completion(body: CompletionRequest, request: Request, engine: EngineDep) -> Any:
    return await Completion(engine, body).respond(request)


class Completion(ChoiceStreams):
    """One completion request: submits every prompt's choices, then answers in JSON or as SSE."""

    param = "prompt"

    def __init__(self, engine: Any, body: CompletionRequest):
        super().__init__(engine, body)
        self.id = new_id("cmpl-")
        self.created = now()
        self.echoes: list[str] = []  # each choice's echoed prompt ("" without echo)
        self.prompt_tokens = 0

    async def submit_all(self) -> None:
        n = self.body.n
        try:
            for prompt in self.body.prompts():
                first = await self.engine.asubmit(self.body.to_generation_request(prompt))
                self.streams.append(first)
                self.prompt_tokens += first.prompt_tokens
                for index in range(1, n):
                    again = self.body.to_generation_request(list(first.prompt_token_ids), index)
                    self.streams.append(await self.engine.asubmit(again))
                echo = ""
                if self.body.echo:
                    echo = prompt if isinstance(prompt, str) else await asyncio.to_thread(
                        self.engine.tokenizer.decode, prompt)
                self.echoes += [echo] * n
        except BaseException:
            self.cancel_all()
            raise
        logger.debug("%s: %d choice(s) submitted", self.id, len(self.streams))

    def _usage(self, completion_tokens: int) -> UsageInfo:
        return UsageInfo.of(self.prompt_tokens, completion_tokens)

    # -- non-streaming ------------------------------------------------------------------------

    def response(self, results: list[GenerationResult]) -> CompletionResponse:
        choices = []
        for index, (result, echo) in enumerate(zip(results, self.echoes, strict=True)):
            check_finished(result.finish_reason, result.error)
            logprobs = None
            if self.body.logprobs is not None:
                logprobs, _ = to_legacy(result.logprobs, len(echo))
            choices.append(CompletionChoice(index=index, text=echo + result.text,
                                            logprobs=logprobs,
                                            finish_reason=result.finish_reason))
        completion = sum(r.usage.completion_tokens for r in results if r.usage is not None)
        return CompletionResponse(id=self.id, created=self.created, model=self.engine.model_name,
                                  choices=choices, usage=self._usage(completion))

    # -- streaming ----------------------------------------------------------------------------

    def _chunk(self, choices: list[CompletionChunkChoice], usage: UsageInfo | None = None) -> str:
        return sse(CompletionChunk(id=self.id, created=self.created, model=self.engine.model_name,
                                   choices=choices, usage=usage))

    async def events(self) -> AsyncIterator[str]:
        """The SSE answer: each choice's echo first, then deltas as the choices produce them (a
        choice's last one with its finish reason), the usage chunk (include_usage) and `[DONE]`."""
        offsets = [len(echo) for echo in self.echoes]
        for index, echo in enumerate(self.echoes):
            if echo:
                yield self._chunk([CompletionChunkChoice(index=index, text=echo)])
        completion = 0
        async for index, chunk in merge(self.streams):
            check_finished(chunk.finish_reason, chunk.error)
            logprobs = None
            if self.body.logprobs is not None and chunk.logprobs:
                logprobs, offsets[index] = to_legacy(chunk.logprobs, offsets[index])
            if chunk.text or logprobs or chunk.finish_reason:
                yield self._chunk([CompletionChunkChoice(
                    index=index, text=chunk.text, logprobs=logprobs,
                    finish_reason=chunk.finish_reason)])
            if chunk.finish_reason is not None and chunk.usage is not None:
                completion += chunk.usage.completion_tokens
        if self.body.stream_options and self.body.stream_options.include_usage:
            yield self._chunk([], usage=self._usage(completion))
        yield DONE
