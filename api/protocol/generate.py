"""The wire format of `/generate` (raw-text completion) and of the service endpoints
(`/models`, `/model/info`, `/health`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.protocol.common import (
    FinishReason,
    LogitBias,
    MaxTokens,
    MinP,
    RepetitionPenalty,
    RequestModel,
    Seed,
    Stop,
    Temperature,
    TimingsInfo,
    TopK,
    TopP,
    UsageInfo,
    logit_bias_ids,
    stop_list,
)
from inference.types import GenerationRequest, SamplingParams


def _is_none(value: Any) -> bool:
    return value is None


class GenerateRequest(RequestModel):
    """Raw-text completion: the prompt goes to the model as is, with no chat template."""

    prompt: str = Field(min_length=1, description="The text to continue.")
    max_tokens: MaxTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    min_p: MinP = None
    repetition_penalty: RepetitionPenalty = None
    stop: Stop = None
    seed: Seed = None
    logit_bias: LogitBias = None
    stream: bool = Field(False, description="Send Server-Sent Events, one per text delta.")

    def to_sampling_params(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            stop=stop_list(self.stop),
            seed=self.seed,
            logit_bias=logit_bias_ids(self.logit_bias),
        )

    def to_generation_request(self) -> GenerationRequest:
        return GenerationRequest(prompt=self.prompt, sampling=self.to_sampling_params())


class GenerateResponse(BaseModel):
    id: str
    object: Literal["generation"] = "generation"
    created: int
    model: str
    text: str
    finish_reason: FinishReason
    usage: UsageInfo
    timings: TimingsInfo


class GenerateChunk(BaseModel):
    """One Server-Sent Event of a streamed `/generate`: a text delta, then a last event with the
    finish reason, usage and timings."""

    id: str
    object: Literal["generation.chunk"] = "generation.chunk"
    created: int
    model: str
    text: str = ""
    finish_reason: FinishReason | None = Field(None, exclude_if=_is_none)
    usage: UsageInfo | None = Field(None, exclude_if=_is_none)
    timings: TimingsInfo | None = Field(None, exclude_if=_is_none)


# -- /models, /model/info, /health ------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelInfo(BaseModel):
    """What the engine reports about the model it serves (the engine may add keys)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    builtin: bool = Field(description="The built-in tiny model with random weights: its output "
                          "is noise.")
    fallback: bool = Field(description="The built-in model runs because the configured one could "
                           "not be had.")
    quantization: dict[str, Any] = Field(description="Method, 4-bit type, double quant, compute "
                                         "dtype, number of 4-bit layers.")
    parameters: int | None = None
    weight_memory_bytes: int | None = None
    memory: dict[str, Any] = Field(default_factory=dict, description="GPU and process memory.")
    context_window: int = Field(description="The model's own context window in tokens.")
    max_context: int = Field(description="The context window in use (the configured maximum).")
    generation_defaults: dict[str, Any] = Field(default_factory=dict)
    counters: dict[str, Any] = Field(default_factory=dict, description="Live request counters.")


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    status: Literal["ok", "degraded", "loading", "stopping", "error"] = Field(
        description="ok: serving; degraded: serving the built-in model in place of the default "
        "one (see `reason`); loading, stopping, error: not serving (503).")
    model_loaded: bool
    model: str
    uptime_s: float
    memory: dict[str, Any] = Field(default_factory=dict)
    queue_depth: int
    active_requests: int
    error: str | None = Field(None, description="Why the model is not serving, if it is not.")
    reason: str | None = Field(None, description="Why the status is degraded, if it is.")
    fallback: bool = False
