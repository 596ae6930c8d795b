"""The Chat Completions wire format: OpenAI's request, response and stream chunk.

`ChatCompletionRequest` validates everything pydantic can (bounds, message roles, tool choice against
the tools given) so that errors name their parameter, then turns itself into the engine's
`GenerationRequest`s: one per choice (`n`), each with its own seed and grammar.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from api.protocol.common import (
    LogitBias,
    MaxTokens,
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
from api.protocol.messages import (
    ChatMessage,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    ResponseFormat,
    StreamOptions,
    ToolChoice,
    ToolDefinition,
    engine_message,
)
from inference.types import TOOL_CALL_PREFIX, GenerationRequest, Grammar, SamplingParams


def _is_none(value: Any) -> bool:
    return value is None


# -- the request ------------------------------------------------------------------------------


class ChatCompletionRequest(RequestModel):
    """OpenAI's chat completion request. `model` is optional: this server serves one model."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(None, description="Ignored: the served model answers.")
    max_tokens: MaxTokens = None
    max_completion_tokens: MaxTokens = None
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    min_p: MinP = None
    n: int = Field(1, ge=1, le=8, description="Number of choices to generate.")
    stop: Stop = None
    seed: Seed = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    repetition_penalty: RepetitionPenalty = None
    logit_bias: LogitBias = None
    logprobs: bool = Field(False, description="Return the log probability of each output token.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Also the k likeliest tokens.")
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = Field(
        None,
        description="auto (default with tools), none (the tools are not shown to the model), "
        "required, or a named function; required and named calls are grammar-enforced.",
    )
    parallel_tool_calls: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Accepted and unused.")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="Passed to the chat template, e.g. {\"enable_thinking\": false}."
    )

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs to be true")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _needs_tools(cls, value: Any, info: ValidationInfo) -> Any:
        tools = info.data.get("tools") or []
        if value in (None, "none", "auto"):
            return value
        if not tools:
            raise ValueError("tool_choice requires tools")
        if isinstance(value, NamedToolChoice):
            names = [tool.function.name for tool in tools]
            if value.function.name not in names:
                raise ValueError(f"function {value.function.name!r} is not in tools {names}")
        return value

    # -- conversion to engine parameters --------------------------------------------------------

    @property
    def tool_mode(self) -> str | None:
        """None (no tool calling), "auto", "required", or the forced function's name."""
        if not self.tools or self.tool_choice == "none":
            return None
        if self.tool_choice is None or self.tool_choice == "auto":
            return "auto"
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return "required"

    @property
    def forces_tool_call(self) -> bool:
        return self.tool_mode not in (None, "auto")

    def engine_tools(self) -> list[dict[str, Any]] | None:
        if self.tool_mode is None:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools or []]

    def engine_messages(self) -> list[dict[str, Any]]:
        return [engine_message(message) for message in self.messages]

    def grammar(self) -> Grammar | None:
        """The output constraint, as data: the engine compiles it (forced tool call or JSON)."""
        if self.forces_tool_call:
            tools = tuple(self.engine_tools() or [])
            name = None if self.tool_mode == "required" else str(self.tool_mode)
            parallel = self.parallel_tool_calls and name is None
            return Grammar("tool_call", tools=tools, tool_name=name, parallel=parallel)
        if isinstance(self.response_format, JsonSchemaFormat):
            return Grammar("json_schema", schema=self.response_format.json_schema.schema_)
        if isinstance(self.response_format, JsonObjectFormat):
            return Grammar("json_object")
        return None

    def to_sampling_params(self, index: int = 0) -> SamplingParams:
        """Sampling for choice `index`: its seed is `seed + index`, so choices differ."""
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            stop=stop_list(self.stop),
            seed=None if self.seed is None else self.seed + index,
            logprobs=logprobs,
            grammar=self.grammar(),
            logit_bias=logit_bias_ids(self.logit_bias),
        )

    def to_generation_request(self, index: int = 0) -> GenerationRequest:
        """The engine request for choice `index`."""
        return GenerationRequest(
            messages=self.engine_messages(),
            tools=self.engine_tools(),
            chat_template_kwargs=dict(self.chat_template_kwargs or {}),
            assistant_prefix=TOOL_CALL_PREFIX if self.forces_tool_call else "",
            sampling=self.to_sampling_params(index),
        )


# -- responses --------------------------------------------------------------------------------


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = Field(None, exclude_if=_is_none)
    tool_calls: list[ToolCallOut] | None = Field(None, exclude_if=_is_none)
    refusal: str | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


ChatFinishReason = Literal["stop", "length", "tool_calls"]


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: ChatFinishReason


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class DeltaFunctionCall(BaseModel):
    name: str | None = Field(None, exclude_if=_is_none)
    arguments: str | None = Field(None, exclude_if=_is_none)


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = Field(None, exclude_if=_is_none)
    type: Literal["function"] | None = Field(None, exclude_if=_is_none)
    function: DeltaFunctionCall


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = Field(None, exclude_if=_is_none)
    content: str | None = Field(None, exclude_if=_is_none)
    reasoning_content: str | None = Field(None, exclude_if=_is_none)
    tool_calls: list[DeltaToolCall] | None = Field(None, exclude_if=_is_none)


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: ChatFinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One Server-Sent Event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = Field(None, description="Only in the last chunk, with include_usage.")
    system_fingerprint: str | None = None
