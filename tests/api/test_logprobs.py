"""Logprobs in OpenAI's shape: always finite numbers (JSON has no -inf), exact bytes per token."""

from __future__ import annotations

from api.logprobs import MIN_LOGPROB, to_openai
from inference.types import TokenLogprob


def test_logprobs_are_always_finite_numbers(builtin_tokenizer):
    top = [(9707, "Hello", float("-inf")), (1, '"', float("nan")), (2, "#", -0.5)]
    item = TokenLogprob(9707, "Hello", float("-inf"), top)
    (out,) = to_openai(builtin_tokenizer, [item]).content
    assert out.logprob == MIN_LOGPROB == -9999.0
    assert [entry.logprob for entry in out.top_logprobs] == [MIN_LOGPROB, MIN_LOGPROB, -0.5]
    assert out.bytes == list(b"Hello") and out.top_logprobs[1].bytes == list(b'"')
