"""The legacy Completions wire format (OpenAI's `/completions`): request, response and stream chunk.

What lm-eval-harness, Continue's autocomplete and benchmark clients send: `prompt` as a string, a
list of strings, a list of token ids, or a list of such lists (one completion per prompt and `n`).
`echo` puts the prompt before each completion. `suffix` (fill-in-the-middle) is refused: Qwen3
Instruct has no such mode. Prompt-token logprobs (`echo` with `logprobs`) are refused too: the
engine scores only the tokens it generates.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from api.protocol.common import (
    LogitBias,
    MinP,
    Penalty,
    RepetitionPenalty,
    RequestModel,
    Seed,
    Stop,
    Temperature,
    TopK,
    TopP,
    UsageInfo,
    logit_bias_ids,
    stop_list,
)
from api.protocol.messages import StreamOptions
from inference.types import GenerationRequest, SamplingParams

MAX_PROMPTS = 64  # prompts in one request (each is an engine request, n times)
MAX_LOGPROBS = 20
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint

TokenId = Annotated[int, Field(ge=0)]
Prompt = str | list[TokenId]


def _is_none(value: Any) -> bool:
    return value is None


class CompletionRequest(RequestModel):
    """OpenAI's legacy completion request. `model` is optional: this server serves one model."""

    prompt: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="The text to continue: a string, a list of strings, a list of token ids, or "
        f"a list of token-id lists (up to {MAX_PROMPTS} prompts; no chat template)."
    )
    model: str | None = Field(None, description="Ignored: the served model answers.")
    suffix: str | None = Field(None, description="Not supported (no fill-in-the-middle): 400.")
    max_tokens: int = Field(
        DEFAULT_MAX_TOKENS, ge=1,
        description="Most tokens to generate per choice (OpenAI's default: 16), clipped to the room "
        "the prompt leaves in the context window.")
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    min_p: MinP = None
    n: int = Field(1, ge=1, le=8, description="Completions per prompt.")
    best_of: int | None = Field(None, description="Only 1 or `n` (no server-side ranking).")
    stop: Stop = None
    seed: Seed = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    repetition_penalty: RepetitionPenalty = None
    logit_bias: LogitBias = None
    logprobs: int | None = Field(
        None, ge=0, le=MAX_LOGPROBS,
        description="Return each generated token's logprob and the k likeliest alternatives.")
    echo: bool = Field(False, description="Put the prompt before each completion's text.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Accepted and unused.")

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be an empty list")
            if any(isinstance(item, list) and not item for item in value):
                raise ValueError("a token-id prompt must not be empty")
            if isinstance(value[0], str | list) and len(value) > MAX_PROMPTS:
                raise ValueError(f"at most {MAX_PROMPTS} prompts are allowed, got {len(value)}")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix is not supported: this model has no fill-in-the-middle mode")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value not in (None, 1, info.data.get("n", 1)):
            raise ValueError("best_of other than 1 or n is not supported")
        return value

    @field_validator("echo")
    @classmethod
    def _echo_without_logprobs(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("logprobs") is not None:
            raise ValueError("echo with logprobs is not supported: this server does not score "
                             "prompt tokens")
        return value

    # -- conversion to engine parameters --------------------------------------------------------

    def prompts(self) -> list[Prompt]:
        """Each prompt: a string, or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(item, int) for item in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]

    def to_sampling_params(self, index: int = 0) -> SamplingParams:
        """Sampling for choice `index` of a prompt: its seed is `seed + index`, so choices differ
        while each prompt's answers do not depend on the others in the batch."""
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            stop=stop_list(self.stop),
            seed=None if self.seed is None else self.seed + index,
            logprobs=self.logprobs,
            logit_bias=logit_bias_ids(self.logit_bias),
        )

    def to_generation_request(self, prompt: Prompt, index: int = 0) -> GenerationRequest:
        """The engine request for choice `index` of `prompt` (the same path as /generate)."""
        sampling = self.to_sampling_params(index)
        if isinstance(prompt, str):
            return GenerationRequest(prompt=prompt, sampling=sampling)
        return GenerationRequest(prompt_token_ids=list(prompt), sampling=sampling)


# -- responses --------------------------------------------------------------------------------


class CompletionLogprobs(BaseModel):
    """Per generated token: its text, its logprob, the likeliest tokens' logprobs, and where it
    starts in the choice's text."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


CompletionFinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: CompletionFinishReason


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class CompletionChunkChoice(BaseModel):
    index: int
    text: str = ""
    logprobs: CompletionLogprobs | None = None
    finish_reason: CompletionFinishReason | None = None


class CompletionChunk(BaseModel):
    """One Server-Sent Event of a streamed completion: a text delta of one choice (the last one
    of each choice with its finish reason), or the usage chunk (`include_usage`)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: UsageInfo | None = Field(None, exclude_if=_is_none)
    system_fingerprint: str | None = None
