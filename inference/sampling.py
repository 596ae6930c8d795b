"""Picking the next token: penalties, logits processors, temperature, top-k, top-p, min-p, seeds.

A `Sampler` belongs to one request and owns its random generator, so requests never share RNG state
and the same seed gives the same tokens. The filtering functions are pure and tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .types import SamplingParams, TokenLogprob

GREEDY_BELOW = 1e-5  # temperatures under this are treated as 0 (greedy)
# What OpenAI reports for a token that could not be picked; JSON has no -inf.
MIN_LOGPROB = -9999.0


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty over tokens seen in the prompt or the output (`seen` is a bool mask)."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def apply_presence_frequency(
    logits: torch.Tensor, counts: torch.Tensor, presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI's penalties over the tokens generated so far (`counts` per vocabulary id)."""
    if presence == 0.0 and frequency == 0.0:
        return logits
    return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts.to(logits.dtype)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches `p` (always at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= p
    drop_sorted[0] = False
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below `min_p` times the most likely token's."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), float("-inf"))


@dataclass
class SampledToken:
    token_id: int
    logprob: TokenLogprob | None


class Sampler:
    """Per-request sampling state: the seeded generator, token counts and the seen-token mask."""

    def __init__(self, params: SamplingParams, vocab_size: int, device: torch.device,
                 prompt_ids: list[int], valid_vocab: int | None = None, matcher=None):
        self.params = params
        self.matcher = matcher
        self._consumed = 0
        self.vocab_size = vocab_size
        self.generator = torch.Generator(device=device)
        if params.seed is not None:
            self.generator.manual_seed(int(params.seed) % (2**63))
        else:
            self.generator.seed()
        self.counts = torch.zeros(vocab_size, dtype=torch.int32, device=device)
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        if prompt_ids:
            self.seen[torch.tensor(prompt_ids, device=device)] = True
        # Ids past the tokenizer's vocabulary (padding rows of the embedding) are never sampled.
        self.invalid_tail = valid_vocab if valid_vocab and valid_vocab < vocab_size else None

    def adjust(self, logits: torch.Tensor, output_ids: list[int]) -> torch.Tensor:
        """Penalties and logits processors: the distribution the request samples from, before
        temperature and truncation."""
        p = self.params
        logits = logits.float()
        if self.invalid_tail is not None:
            logits[self.invalid_tail:] = float("-inf")
        logits = apply_repetition_penalty(logits, self.seen, p.repetition_penalty or 1.0)
        logits = apply_presence_frequency(logits, self.counts, p.presence_penalty, p.frequency_penalty)
        if self.matcher is not None:
            from .structured import apply_bitmasks, fill_bitmasks

            self.matcher.consume(output_ids[self._consumed:])
            self._consumed = len(output_ids)
            row = logits[None]
            apply_bitmasks(row, fill_bitmasks([self.matcher], logits.shape[-1]))
            logits = row[0]
        for processor in p.logits_processors:
            logits = processor([output_ids], logits[None])[0]
        return logits

    def choose(self, logits: torch.Tensor) -> int:
        p = self.params
        temperature = p.temperature or 0.0
        # A temperature this small divides logits into overflow; it means greedy anyway.
        if temperature < GREEDY_BELOW or p.top_k == 1:
            return int(torch.argmax(logits))
        logits = logits / temperature
        logits = filter_top_k(logits, p.top_k or 0)
        logits = filter_top_p(logits, p.top_p if p.top_p is not None else 1.0)
        logits = filter_min_p(logits, p.min_p or 0.0)
        probs = torch.softmax(logits, dim=-1)
        if not torch.isfinite(probs).all() or float(probs.sum()) <= 0.0:
            return int(torch.argmax(logits))  # extreme penalties overflowed: take the best token
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def __call__(self, logits: torch.Tensor, output_ids: list[int], decode) -> SampledToken:
        adjusted = self.adjust(logits, output_ids)
        if not torch.isfinite(adjusted).any():
            raise RuntimeError("every token was masked out; the grammar or penalties allow nothing")
        token = self.choose(adjusted)
        self.counts[token] += 1
        self.seen[token] = True
        logprob = None
        if self.params.logprobs is not None:
            logprob = self._logprob(adjusted, token, decode)
        return SampledToken(token, logprob)

    def _logprob(self, logits: torch.Tensor, token: int, decode) -> TokenLogprob:
        logprobs = torch.log_softmax(logits, dim=-1)
        top: list[tuple[int, str, float]] = []
        k = self.params.logprobs or 0
        if k > 0:
            values, ids = torch.topk(logprobs, k)
            # Tokens masked out (by a grammar, say) are not alternatives: leave them out.
            top = [(int(i), decode(int(i)), float(v))
                   for v, i in zip(values.tolist(), ids.tolist(), strict=True) if v > float("-inf")]
        return TokenLogprob(token, decode(token), max(float(logprobs[token]), MIN_LOGPROB), top)
