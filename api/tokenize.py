"""POST /tokenize and /detokenize: the served model's tokenizer over HTTP, so that clients can count
tokens against the context window (`max_model_len`) before they send a request.

`/tokenize` takes raw text, counted as /generate and /completions count a prompt, or chat messages,
rendered as /chat/completions renders them, so `count` equals that request's `prompt_tokens`.
`/detokenize` is the reverse. Both run the tokenizer off the event loop; neither needs the model
to do anything else, nor is bounded by the context window.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from api.deps import EngineDep
from api.errors import APIError, engine_errors
from api.protocol import (
    ERROR_RESPONSES,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

router = APIRouter(tags=["tokenize"])


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES,
             summary="Text or chat messages to token ids, and their count")
async def tokenize(body: TokenizeRequest, engine: EngineDep) -> TokenizeResponse:
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "Give exactly one of 'prompt' (text) or 'messages' (a chat).",
                       param="prompt" if body.prompt is None else "messages",
                       code="invalid_value")
    with engine_errors("messages" if body.messages is not None else "prompt"):
        tokens = await asyncio.to_thread(engine.tokenize, body.to_generation_request())
    strings = None
    if body.return_token_strs:
        tokenizer = engine.tokenizer
        strings = await asyncio.to_thread(lambda: [tokenizer.decode([t]) for t in tokens])
    return TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=engine.max_context,
                            token_strs=strings)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERROR_RESPONSES,
             summary="Token ids to text")
async def detokenize(body: DetokenizeRequest, engine: EngineDep) -> DetokenizeResponse:
    with engine_errors("tokens"):
        tokenizer = engine.tokenizer  # 503 while the model loads

    def decode() -> str:
        vocabulary = len(tokenizer)
        unknown = next((t for t in body.tokens if t >= vocabulary), None)
        if unknown is not None:
            raise APIError(400, f"Token id {unknown} is not in the vocabulary "
                           f"(0-{vocabulary - 1}).", param="tokens", code="invalid_value")
        return tokenizer.decode(body.tokens)

    return DetokenizeResponse(prompt=await asyncio.to_thread(decode))
