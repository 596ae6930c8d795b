"""Shared pieces of the wire format: constrained sampling fields, usage, ids and the error body.

Each sampling field is defined once as an `Annotated` type with its bounds and description, and
reused by `/generate` and `/chat/completions`; `None` means "the model's default" (read from its
generation_config.json: temperature 0.7, top_p 0.8, top_k 20 for Qwen3-4B-Instruct-2507).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from inference.types import Timings, Usage


class RequestModel(BaseModel):
    """Base of every request body: fields this server does not know are ignored, not rejected.

    Types are strict, as OpenAI's are: `"stream": "yes"`, `"max_tokens": "4"` or `4.5`, `"n": "2"`
    are errors, not coerced. A number field takes an integer too (`"temperature": 1`).
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), strict=True)


MaxTokens = Annotated[
    int | None,
    Field(ge=1, description="Most tokens to generate; default 2048, clipped to the room the "
          "prompt leaves in the context window. More than the whole window is an error."),
]
Temperature = Annotated[
    float | None,
    Field(ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy. Default: the model's."),
]
TopP = Annotated[
    float | None,
    Field(gt=0.0, le=1.0, description="Nucleus sampling: keep the smallest set of tokens whose "
          "probability reaches top_p. Default: the model's."),
]
TopK = Annotated[
    int | None,
    Field(ge=0, description="Keep the k most likely tokens; 0 turns it off. Default: the model's."),
]
MinP = Annotated[
    float | None,
    Field(ge=0.0, le=1.0, description="Drop tokens below min_p times the top token's probability."),
]
# vLLM only asks for > 0, but a penalty of 1e-300 multiplies seen-token logits into overflow. At
# 0.01 the logits grow at most 100-fold, which stays finite even in float16; below that no useful
# setting exists (0.01 already makes a seen token all but certain).
MIN_REPETITION_PENALTY = 0.01
RepetitionPenalty = Annotated[
    float | None,
    Field(ge=MIN_REPETITION_PENALTY, le=10.0,
          description="CTRL-style penalty on tokens already seen; 1 is off, below 1 favours them "
          f"(at least {MIN_REPETITION_PENALTY})."),
]
Penalty = Annotated[
    float,
    Field(ge=-2.0, le=2.0, description="OpenAI-style penalty on generated tokens; 0 is off."),
]
Seed = Annotated[
    int | None,
    Field(description="Sample reproducibly: the same seed and parameters give the same output."),
]
MAX_STOP = 4


def _check_stop(stop: str | list[str] | None) -> str | list[str] | None:
    """Checked after parsing, so that the error says what is wrong with the list as a whole
    (a union's own error would be "Input should be a valid string")."""
    sequences = stop_list(stop)
    if len(sequences) > MAX_STOP:
        raise PydanticCustomError(
            "too_many_stop_sequences",
            "at most {max} stop sequences are allowed, got {count}",
            {"max": MAX_STOP, "count": len(sequences)},
        )
    if not all(sequences):
        raise PydanticCustomError("empty_stop_sequence", "a stop sequence must not be empty")
    return stop


Stop = Annotated[
    str | list[str] | None,
    AfterValidator(_check_stop),
    Field(description=f"Up to {MAX_STOP} strings that end generation; they are not part of the "
          "output."),
]


MAX_LOGIT_BIAS = 1024  # entries in one logit_bias: each is one sparse add per step
LOGIT_BIAS_RANGE = 100.0


def _check_logit_bias(bias: dict[str, float] | None) -> dict[str, float] | None:
    """Keys are token ids written as JSON object keys ("151645"), values within -100..100."""
    if bias is None:
        return None
    if len(bias) > MAX_LOGIT_BIAS:
        raise PydanticCustomError("too_many_logit_biases",
                                  "at most {max} tokens may be biased, got {count}",
                                  {"max": MAX_LOGIT_BIAS, "count": len(bias)})
    for key, value in bias.items():
        if not key.isascii() or not key.isdigit():
            raise PydanticCustomError("invalid_logit_bias_key",
                                      "keys must be token ids (integers), got {key!r}", {"key": key})
        if not -LOGIT_BIAS_RANGE <= value <= LOGIT_BIAS_RANGE:
            raise PydanticCustomError("invalid_logit_bias_value",
                                      "the bias of token {key} is {value}; biases range from -100 "
                                      "to 100", {"key": key, "value": value})
    return bias


LogitBias = Annotated[
    dict[str, float] | None,
    AfterValidator(_check_logit_bias),
    Field(description="Token id -> a bias from -100 to 100 added to its logit before sampling "
          "(OpenAI's logit_bias): -100 bans the token, 100 all but forces it."),
]


def logit_bias_ids(bias: dict[str, float] | None) -> dict[int, float] | None:
    """The request's logit_bias as the engine takes it: token id (int) -> bias."""
    return {int(token): float(value) for token, value in bias.items()} if bias else None


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: a prefix and 24 hex characters."""
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> UsageInfo:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    @classmethod
    def from_engine(cls, usage: Usage | None, prompt_tokens: int = 0) -> UsageInfo:
        if usage is None:
            return cls.of(prompt_tokens, 0)
        return cls.of(usage.prompt_tokens, usage.completion_tokens)


class TimingsInfo(BaseModel):
    """Seconds measured by the engine; tokens_per_second counts decode tokens after the first."""

    queue: float
    time_to_first_token: float
    total: float
    tokens_per_second: float

    @classmethod
    def from_engine(cls, timings: Timings | None) -> TimingsInfo:
        return cls(**(timings or Timings()).as_dict())


# "error" and "cancelled" never reach a client: they are answered as 500 and 503 errors.
FinishReason = Literal["stop", "length"]


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error or server_error.")
    param: str | None = Field(None, description="The offending request parameter, if any.")
    code: str | None = Field(None, description="e.g. context_length_exceeded, invalid_api_key.")


class ErrorResponse(BaseModel):
    """OpenAI's error body, for every error status and for errors inside a stream."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request; `param` names the offending parameter. Also a prompt over the "
        "context window (`context_length_exceeded`) when the server runs with "
        "`--context-error-status 400`.",
        401: "Missing or wrong API key (only when the server has one).",
        413: "The prompt does not fit the context window (`context_length_exceeded`), or the "
        "body is over 16 MiB (`request_too_large`).",
        500: "Generation failed for this request; the server keeps serving.",
        503: "The model is not loaded yet, the server is saturated, or it cancelled the "
        "generation (shutting down); see `Retry-After`.",
    }.items()
}
