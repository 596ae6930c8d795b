"""POST /generate: raw-text completion, no chat template; JSON or Server-Sent Events.

Streaming sends one `generation.chunk` event per text delta, then one with `finish_reason`, `usage`
and `timings`, then `data: [DONE]`. The non-streaming answer is the same stream collected. The
prompt is tokenized off the event loop (`engine.asubmit`). A generation that failed is a 500, one
the server cancelled (shutting down) a 503, as in /chat/completions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from api.deps import EngineDep, unless_disconnected
from api.errors import check_finished, engine_errors
from api.protocol import (
    ERROR_RESPONSES,
    GenerateChunk,
    GenerateRequest,
    GenerateResponse,
    TimingsInfo,
    UsageInfo,
    new_id,
    now,
)
from api.sse import DONE, EventSourceResponse, guarded, sse

logger = logging.getLogger(__name__)

router = APIRouter(tags=["generate"])

STREAM_RESPONSE = {
    "description": "With `stream: true`: Server-Sent Events, one `generation.chunk` per text "
    "delta, the last with finish_reason, usage and timings, then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/GenerateChunk"}}},
}


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses={**ERROR_RESPONSES, 200: STREAM_RESPONSE},
    summary="Continue a raw text prompt (no chat template)",
)
async def generate(body: GenerateRequest, request: Request, engine: EngineDep) -> Any:
    with engine_errors("prompt"):
        stream = await engine.asubmit(body.to_generation_request())
    request_id, created, model = new_id("gen-"), now(), engine.model_name
    if body.stream:
        return EventSourceResponse(
            guarded(_events(stream, request_id, created, model), stream.cancel, "prompt")
        )
    result = await unless_disconnected(request, stream.collect(), stream.cancel)
    check_finished(result.finish_reason, result.error)
    return GenerateResponse(
        id=request_id,
        created=created,
        model=model,
        text=result.text,
        finish_reason=result.finish_reason,
        usage=UsageInfo.from_engine(result.usage, stream.prompt_tokens),
        timings=TimingsInfo.from_engine(result.timings),
    )


async def _events(stream: Any, request_id: str, created: int, model: str) -> AsyncIterator[str]:
    async for chunk in stream:
        check_finished(chunk.finish_reason, chunk.error)
        event = GenerateChunk(id=request_id, created=created, model=model, text=chunk.text)
        if chunk.finish_reason is not None:
            event.finish_reason = chunk.finish_reason
            event.usage = UsageInfo.from_engine(chunk.usage, stream.prompt_tokens)
            event.timings = TimingsInfo.from_engine(chunk.timings)
        if event.text or event.finish_reason:
            yield sse(event)
    yield DONE
