"""The engine's own data types: what goes in (a request with sampling parameters) and what comes out
(a stream of chunks, or that stream collected into one result).

The HTTP layer and the UI build `GenerationRequest`s and consume `GenerationChunk`s; they never touch
the model. Every field that may be left out is `None`, meaning "the model's default".
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # the wire models import these types; they need no torch
    import torch

FinishReason = Literal["stop", "length", "cancelled", "error"]


class LogitsProcessor(Protocol):
    """Changes next-token logits for a batch of rows, in place or by returning new ones.

    Batch-shaped: in each step the engine calls a processor once, with every row of the batch whose
    request carries this same instance (a processor given to one request sees one row).
    `output_ids[i]` holds every token generated so far for row i (not the prompt); `logits` is a
    float32 tensor of shape (rows, vocabulary). Processors run after the penalties and the grammar,
    before temperature/top-k/top-p.
    """

    def __call__(self, output_ids: list[list[int]], logits: torch.Tensor) -> torch.Tensor: ...


# A forced tool call's prompt ends with this (the request's `assistant_prefix`), so the output
# starts inside the first call; the "tool_call" grammar starts there too.
TOOL_CALL_PREFIX = "<tool_call>\n"


@dataclass(frozen=True)
class Grammar:
    """A constraint on the output, as data: the engine compiles it with its own tokenizer (cached)
    and keeps one matcher per sequence, so `n` choices and concurrent requests never share state.

    - `json_object`: one JSON object; `json_schema`: JSON valid against `schema`;
    - `tool_call`: Qwen3 tool calls after the `<tool_call>\\n` prefix (the request's
      `assistant_prefix`), for the function `tool_name` or any of `tools`; `parallel` allows more
      than one call.
    """

    kind: Literal["json_object", "json_schema", "tool_call"]
    schema: dict[str, Any] | None = None
    tools: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None = None
    tool_name: str | None = None
    parallel: bool = True

    def __hash__(self) -> int:  # dict fields: hash the canonical JSON
        import json

        return hash(json.dumps([self.kind, self.schema, self.tools, self.tool_name, self.parallel],
                               sort_keys=True, default=str))


@dataclass
class SamplingParams:
    """How to pick tokens. `None` means the model's default (from its generation_config.json)."""

    max_tokens: int | None = None
    temperature: float | None = None  # 0 means greedy
    top_p: float | None = None
    top_k: int | None = None  # 0 turns top-k off
    min_p: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    # None: no logprobs; 0: the chosen token's logprob only; k: plus the k most likely tokens.
    logprobs: int | None = None
    logits_processors: list[LogitsProcessor] = field(default_factory=list)
    grammar: Grammar | None = None  # structured output, compiled by the engine
    # OpenAI's logit_bias: token id -> added to its logit before anything else (-100 bans it).
    logit_bias: dict[int, float] | None = None

    def resolved(self, defaults: SamplingDefaults) -> SamplingParams:
        """A copy with every `None` default replaced by the model's default."""
        import dataclasses

        return dataclasses.replace(
            self,
            max_tokens=self.max_tokens if self.max_tokens is not None else defaults.max_tokens,
            temperature=self.temperature if self.temperature is not None else defaults.temperature,
            top_p=self.top_p if self.top_p is not None else defaults.top_p,
            top_k=self.top_k if self.top_k is not None else defaults.top_k,
            min_p=self.min_p if self.min_p is not None else defaults.min_p,
            repetition_penalty=(
                self.repetition_penalty
                if self.repetition_penalty is not None
                else defaults.repetition_penalty
            ),
        )


@dataclass(frozen=True)
class SamplingDefaults:
    """The model's sampling defaults, read from generation_config.json where present."""

    max_tokens: int = 2048
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    min_p: float = 0.0
    repetition_penalty: float = 1.0


@dataclass
class GenerationRequest:
    """One generation. Give exactly one of `prompt` (raw text, no template), `prompt_token_ids`,
    or `messages` (OpenAI-style chat messages rendered with the model's chat template).

    `assistant_prefix` is text appended after the generation prompt of a chat (e.g. "<tool_call>\\n"
    to force a tool call); it is part of the prompt, not of the output.
    """

    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    assistant_prefix: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str = "api"  # who asked: "api" or "ui"; for counters and logs only


@dataclass
class TokenLogprob:
    token_id: int
    token: str  # the token's text (may be a partial UTF-8 character, shown with replacement chars)
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (id, text, logprob)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Timings:
    """Seconds, measured by the engine. `tokens_per_second` counts decode tokens after the first."""

    queue: float = 0.0
    time_to_first_token: float = 0.0
    total: float = 0.0
    tokens_per_second: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "queue": round(self.queue, 6),
            "time_to_first_token": round(self.time_to_first_token, 6),
            "total": round(self.total, 6),
            "tokens_per_second": round(self.tokens_per_second, 3),
        }


@dataclass
class GenerationChunk:
    """One step of a request's stream. The last chunk has `finish_reason`, `usage` and `timings`."""

    request_id: str
    text: str = ""  # new text since the previous chunk; always whole UTF-8 characters
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    error: str | None = None  # set when finish_reason == "error"


@dataclass(frozen=True)
class FinishedRequest:
    """What the engine tells its listeners (`Engine.add_listener`) when a request ends: its outcome,
    sizes and timings in seconds. Built from the request's last chunk."""

    request_id: str
    source: str  # "api" or "ui"
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int  # a stop token included, as in `Usage`
    queue_s: float  # submitted to admitted into the running batch
    time_to_first_token_s: float | None  # None: no token was generated
    total_s: float
    inter_token_s: float | None  # mean gap between output tokens after the first; None under two
    error: str | None = None

    @classmethod
    def from_chunk(cls, chunk: GenerationChunk, source: str, prompt_tokens: int) -> FinishedRequest:
        usage, timings = chunk.usage or Usage(prompt_tokens, 0), chunk.timings or Timings()
        assert chunk.finish_reason is not None
        return cls(
            request_id=chunk.request_id,
            source=source,
            finish_reason=chunk.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            queue_s=timings.queue,
            time_to_first_token_s=timings.time_to_first_token if usage.completion_tokens else None,
            total_s=timings.total,
            inter_token_s=1.0 / timings.tokens_per_second if timings.tokens_per_second > 0 else None,
            error=chunk.error,
        )


@dataclass
class GenerationResult:
    """A whole request's output: its stream collected."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
