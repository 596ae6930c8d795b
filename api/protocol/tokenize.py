"""The wire format of `/tokenize` and `/detokenize` (as vLLM has them), for clients that count
tokens against the context window before they send a request."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from api.protocol.common import RequestModel
from api.protocol.messages import ChatMessage, ToolDefinition, engine_message
from inference.types import GenerationRequest


def _is_none(value: Any) -> bool:
    return value is None


class TokenizeRequest(RequestModel):
    """Raw text (`prompt`) or a chat (`messages`, with `tools` and `chat_template_kwargs` as in
    /chat/completions): exactly one of the two."""

    model: str | None = Field(None, description="Ignored: the served model's tokenizer is used.")
    prompt: str | None = Field(
        None, description="Text, tokenized as /generate and /completions tokenize a prompt.")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1,
        description="A chat, rendered with the model's chat template as /chat/completions renders "
        "it (the assistant's generation prompt included), so `count` is its `prompt_tokens`.")
    tools: list[ToolDefinition] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = Field(False, description="Also return each token's text.")

    def to_generation_request(self) -> GenerationRequest:
        if self.messages is None:
            return GenerationRequest(prompt=self.prompt)
        tools = [tool.model_dump(exclude_none=True) for tool in self.tools or []] or None
        return GenerationRequest(messages=[engine_message(m) for m in self.messages], tools=tools,
                                 chat_template_kwargs=dict(self.chat_template_kwargs or {}))


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int = Field(description="The context window in use: prompt plus output "
                               "tokens must fit in it.")
    token_strs: list[str] | None = Field(None, exclude_if=_is_none)


class DetokenizeRequest(RequestModel):
    model: str | None = Field(None, description="Ignored: the served model's tokenizer is used.")
    tokens: list[Annotated[int, Field(ge=0)]] = Field(description="Token ids to turn into text.")


class DetokenizeResponse(BaseModel):
    prompt: str = Field(description="The text of the tokens, special tokens included.")
