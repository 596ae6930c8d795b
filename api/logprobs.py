"""Log probabilities in OpenAI's shapes: chat's `{"content": [{"token", "logprob", "bytes",
"top_logprobs": [...]}]}`, and the legacy completions' parallel lists `{"tokens", "token_logprobs",
"top_logprobs": [{token: logprob}], "text_offset"}`.

The engine reports each token's text, which for a token holding part of a multi-byte character is
not its real bytes; `bytes` are recovered exactly from the byte-level BPE vocabulary. Every logprob
is a finite number: JSON has no -inf, and OpenAI reports an impossible token as -9999.0.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from api.protocol import ChoiceLogprobs, CompletionLogprobs, TokenLogprob, TopLogprob
from inference.types import TokenLogprob as EngineTokenLogprob

MIN_LOGPROB = -9999.0  # OpenAI's value for a token that could not have been picked


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else MIN_LOGPROB


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable stand-in character -> its byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def token_bytes(tokenizer: Any, token_id: int, text: str) -> list[int]:
    """The exact bytes of a token (its vocabulary entry), falling back to its text in UTF-8."""
    try:
        piece = tokenizer.convert_ids_to_tokens(token_id)
    except Exception:  # noqa: BLE001  (ids beyond the tokenizer: use the text)
        piece = None
    decoder = _byte_decoder()
    if isinstance(piece, str) and piece and all(ch in decoder for ch in piece):
        return [decoder[ch] for ch in piece]
    return list(text.encode("utf-8"))


def to_openai(tokenizer: Any, logprobs: list[EngineTokenLogprob] | None) -> ChoiceLogprobs:
    """The engine's per-token logprobs as a choice's (or chunk's) `logprobs` object."""
    content = []
    for item in logprobs or []:
        top = [
            TopLogprob(token=text, logprob=finite(value),
                       bytes=token_bytes(tokenizer, token_id, text))
            for token_id, text, value in item.top
        ]
        content.append(
            TokenLogprob(
                token=item.token,
                logprob=finite(item.logprob),
                bytes=token_bytes(tokenizer, item.token_id, item.token),
                top_logprobs=top,
            )
        )
    return ChoiceLogprobs(content=content)


def to_legacy(logprobs: list[EngineTokenLogprob] | None,
              offset: int = 0) -> tuple[CompletionLogprobs, int]:
    """The engine's per-token logprobs as a legacy completion's `logprobs`, the first token
    starting at character `offset` of the choice's text; also the offset after the last token.
    Each `top_logprobs` entry holds the chosen token too, as OpenAI's does."""
    result = CompletionLogprobs()
    for item in logprobs or []:
        chosen = finite(item.logprob)
        top = {text: finite(value) for _, text, value in item.top}
        top.setdefault(item.token, chosen)
        result.tokens.append(item.token)
        result.token_logprobs.append(chosen)
        result.top_logprobs.append(top)
        result.text_offset.append(offset)
        offset += len(item.token)
    return result, offset
