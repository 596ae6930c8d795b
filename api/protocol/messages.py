"""Chat messages, tool definitions and response formats: the inputs of a chat completion.

`engine_message()` turns a validated message into what Qwen3's chat template expects: text parts
joined into one string, `developer` as `system`, tool-call arguments as objects.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from api.protocol.common import RequestModel

# -- messages ---------------------------------------------------------------------------------


class TextPart(RequestModel):
    type: Literal["text"] = Field(description="Only text parts are supported.")
    text: str


Content = str | list[TextPart]


def content_text(content: Content | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(part.text for part in content)


class SystemMessage(RequestModel):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(RequestModel):
    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCall(RequestModel):
    name: str
    arguments: str | dict[str, Any] = Field(description="JSON object, as a string or an object.")


class ToolCall(RequestModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(RequestModel):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None


class ToolMessage(RequestModel):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


def engine_message(message: ChatMessage) -> dict[str, Any]:
    """An OpenAI message as the engine's chat template wants it (text joined, arguments objects)."""
    role = "system" if message.role == "developer" else message.role
    result: dict[str, Any] = {"role": role, "content": content_text(message.content)}
    if isinstance(message, AssistantMessage) and message.tool_calls:
        result["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": _arguments(call.function)},
            }
            for call in message.tool_calls
        ]
    if isinstance(message, ToolMessage):
        result["tool_call_id"] = message.tool_call_id
    return result


def _arguments(function: FunctionCall) -> Any:
    if isinstance(function.arguments, dict):
        return function.arguments
    try:
        return json.loads(function.arguments) if function.arguments.strip() else {}
    except json.JSONDecodeError:
        return function.arguments  # written as is, as OpenAI would have received it


# -- tools and response formats ---------------------------------------------------------------


NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class FunctionDefinition(RequestModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(
        default_factory=lambda: dict(NO_PARAMETERS),
        description="JSON schema of the arguments: an object schema. Left out: no arguments.",
    )
    strict: bool | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _object_schema(cls, value: Any) -> Any:
        """Arguments are always a JSON object (Qwen3 writes them as one, OpenAI requires it)."""
        if value is None:
            return dict(NO_PARAMETERS)
        if isinstance(value, dict) and value.get("type", "object") != "object":
            raise ValueError(f"must be a JSON schema of type 'object', not {value['type']!r}")
        return value


class ToolDefinition(RequestModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class FunctionName(RequestModel):
    name: str


class NamedToolChoice(RequestModel):
    type: Literal["function"] = "function"
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(RequestModel):
    type: Literal["text"]


class JsonObjectFormat(RequestModel):
    type: Literal["json_object"]


class JsonSchemaSpec(RequestModel):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON schema to follow.")
    strict: bool | None = None


class JsonSchemaFormat(RequestModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(RequestModel):
    include_usage: bool = Field(False, description="Send a last chunk with `usage`.")
