"""Shared pieces of the contract suite: request builders, batch-shaped logits processors that make
random-weight output deterministic, and `assert_same_greedy`, the rule for comparing a greedy
request run alone with the same request run in a batch.

Only public types are used here: `GenerationRequest`, `SamplingParams`, `GenerationResult`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from inference import GenerationRequest, GenerationResult, SamplingParams

# A float32 tie: two candidates this close in log-probability may swap under a different (batched)
# reduction order; any larger gap must give the same greedy token.
TIE_TOLERANCE = 1e-4
END_OF_TURN = 151645  # <|im_end|> in the Qwen3 tokenizer

CHAT = [{"role": "user", "content": "Tell me a story."}]


def chat(content: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def req(max_tokens: int = 12, messages: list[dict[str, Any]] | None = None, **sampling: Any
        ) -> GenerationRequest:
    """A chat request; `sampling` goes to `SamplingParams`."""
    return GenerationRequest(messages=messages or CHAT,
                             sampling=SamplingParams(max_tokens=max_tokens, **sampling))


def ids_req(prompt_ids: list[int], max_tokens: int | None = None, **sampling: Any
            ) -> GenerationRequest:
    return GenerationRequest(prompt_token_ids=list(prompt_ids),
                             sampling=SamplingParams(max_tokens=max_tokens, **sampling))


class ForceTokens:
    """Forces a fixed token sequence, then end of turn. Batch-shaped: one row per request."""

    def __init__(self, ids: list[int], eos: int = END_OF_TURN):
        self.ids = list(ids) + [eos]

    def __call__(self, output_ids: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(logits, float("-inf"))
        for row, ids in enumerate(output_ids):
            forced[row, self.ids[min(len(ids), len(self.ids) - 1)]] = 0.0
        return forced


class ArgmaxOnly:
    """Leaves only each row's most likely token: greedy whatever the temperature or truncation, a
    reference that does not depend on the sampling parameters under test."""

    def __call__(self, output_ids: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        best = logits.argmax(dim=-1, keepdim=True)
        only = torch.full_like(logits, float("-inf"))
        return only.scatter(-1, best, 0.0)


class BanTokens:
    """Forbids some tokens (the stop tokens, so that a generation runs to its length limit)."""

    def __init__(self, ids: list[int]):
        self.ids = list(ids)

    def __call__(self, output_ids: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        logits[:, self.ids] = float("-inf")
        return logits


class BiasTokens:
    """Adds `amount` to some tokens' logits; after a grammar's mask, -inf stays -inf."""

    def __init__(self, ids: list[int], amount: float = 50.0):
        self.ids = torch.tensor(sorted(set(ids)), dtype=torch.long)
        self.amount = amount

    def __call__(self, output_ids: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        logits[:, self.ids.to(logits.device)] += self.amount
        return logits


def closing_token_ids(tokenizer) -> list[int]:
    """Tokens containing `"` or `}`: a bias towards them stands in for a model that wants to finish
    its JSON (random weights never close a string by themselves)."""
    return [i for token, i in tokenizer.get_vocab().items() if '"' in token or "}" in token]


def stop_token_ids(engine) -> list[int]:
    return list(engine.info()["stop_token_ids"])


def assert_same_greedy(solo: GenerationResult, batched: GenerationResult,
                       tolerance: float = TIE_TOLERANCE) -> None:
    """The batched greedy output must equal the solo one, token for token. Where they first differ,
    this is accepted only as a float32 tie: the solo run (made with `logprobs >= 2`) must show its
    two most likely tokens at that position within `tolerance` of each other, with the solo and the
    batched tokens being those two. Everything after that position may differ. Anything else fails,
    with the reason; nothing passes for lack of information."""
    a, b = list(solo.token_ids), list(batched.token_ids)
    if a == b:
        return
    position = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if position is None:
        raise AssertionError(
            f"one output is a prefix of the other (solo {len(a)} tokens, batched {len(b)}): "
            f"solo {a}, batched {b}")
    where = f"at token {position}: solo chose {a[position]}, batched {b[position]}"
    if solo.logprobs is None:
        raise AssertionError(f"outputs differ {where}; the solo run has no logprobs (run it with "
                             "logprobs=2) to tell a tie from a bug")
    if position >= len(solo.logprobs):
        raise AssertionError(f"outputs differ {where}, and the solo run has no logprob there "
                             f"(only {len(solo.logprobs)}; a stop token has none)")
    entry = solo.logprobs[position]
    if entry.token_id != a[position]:
        raise AssertionError(f"outputs differ {where}; the solo logprobs are misaligned "
                             f"(entry {position} is token {entry.token_id})")
    if len(entry.top) < 2:
        raise AssertionError(f"outputs differ {where}; the solo run reports {len(entry.top)} "
                             "alternatives there (run it with logprobs=2)")
    (first_id, _, first), (second_id, _, second) = entry.top[0], entry.top[1]
    gap = abs(first - second)
    if gap > tolerance:
        raise AssertionError(f"outputs differ {where}, but the solo top two logprobs there differ "
                             f"by {gap:.3g} > {tolerance}: not a tie ({entry.top[:2]})")
    if {a[position], b[position]} - {first_id, second_id}:
        raise AssertionError(f"outputs differ {where}; a tie between {first_id} and {second_id} "
                             "does not explain these tokens")


async def wait_until(predicate, timeout: float = 2.0, interval: float = 0.02) -> bool:
    """Poll `predicate()` until it is true or `timeout` seconds pass; returns its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            return bool(predicate())
        await asyncio.sleep(interval)
    return True
