"""POST /chat/completions: OpenAI's Chat Completions on the engine.

One engine request per choice (`n`), all submitted before any answer starts, so a too-long prompt
(413) or a saturated engine (503) is an HTTP status, not a broken stream. The chat is rendered and
tokenized once, off the event loop (`engine.asubmit`): the other choices reuse the first one's
prompt tokens. Each choice's text goes through the same two parsers in both modes: `<think>` into
`reasoning_content`, then Qwen3 `<tool_call>` blocks into `tool_calls`; non-streaming is the stream
collected, so both agree. A choice that failed (500) or that the server cancelled (503: shutting
down) fails the whole answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request

from api import logprobs as logprobs_mod
from api.choices import ChoiceStreams
from api.deps import EngineDep
from api.errors import check_finished
from api.protocol import (
    ERROR_RESPONSES,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    ChunkChoice,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCallOut,
    ToolCallOut,
    UsageInfo,
    new_id,
    now,
)
from api.sse import DONE, TextTemplate, merge, sse
from api.tool_calls import ToolCallDelta, ToolCallParser
from inference.reasoning import ReasoningParser, prompt_opens_reasoning
from inference.types import GenerationChunk, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)

router = APIRouter(tags=["chat"])

STREAM_RESPONSE = {
    "description": "With `stream: true`: Server-Sent Events, one `chat.completion.chunk` each, "
    "then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ChatCompletionChunk"}}},
}


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={**ERROR_RESPONSES, 200: STREAM_RESPONSE},
    summary="Create a chat completion (OpenAI-compatible)",
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, engine: EngineDep
) -> Any:
    return await ChatCompletion(engine, body).respond(request)


@dataclass
class ChoiceDelta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


class ChoiceParser:
    """One choice's text, split into reasoning, content and tool calls as it streams."""

    def __init__(self, *, in_reasoning: bool, tools: bool, in_call: bool):
        self.reasoning = ReasoningParser(in_reasoning=in_reasoning)
        self.tools = ToolCallParser(in_call=in_call) if tools else None

    def feed(self, text: str, *, final: bool = False) -> ChoiceDelta:
        split = self.reasoning.feed(text)
        if final:
            split += self.reasoning.finish()
        if self.tools is None:
            return ChoiceDelta(split.reasoning, split.content)
        parsed = self.tools.feed(split.content)
        if final:
            parsed += self.tools.finish()
        return ChoiceDelta(split.reasoning, parsed.content, parsed.tool_calls)


def finish_reason(engine_reason: str, has_calls: bool) -> str:
    if engine_reason == "length":
        return "length"
    return "tool_calls" if has_calls else "stop"


class ChatCompletion(ChoiceStreams):
    """One chat completion request: submits its choices, then answers in JSON or as SSE."""

    param = "messages"

    def __init__(self, engine: Any, body: ChatCompletionRequest):
        super().__init__(engine, body)
        self.id = new_id("chatcmpl-")
        self.created = now()
        self.in_reasoning = False
        self._content_templates: dict[int, TextTemplate] = {}

    async def submit_all(self) -> None:
        self.engine.tokenizer  # noqa: B018 -- raises ModelNotLoadedError (503) while loading
        await self.submit([self.body.to_generation_request(i) for i in range(self.body.n)])

    async def submit(self, requests: list[GenerationRequest]) -> None:
        """Submit one engine request per choice. The first renders and tokenizes the chat; the
        others get its prompt tokens, so the template runs once however large `n` is."""
        try:
            first = await self.engine.asubmit(requests[0])
            self.streams.append(first)
            for request in requests[1:]:
                request.messages, request.prompt_token_ids = None, list(first.prompt_token_ids)
                self.streams.append(await self.engine.asubmit(request))
        except BaseException:
            self.cancel_all()
            raise
        if not self.body.forces_tool_call and first.prompt_text is not None:
            self.in_reasoning = prompt_opens_reasoning(first.prompt_text)
        logger.debug("%s: %d choice(s) submitted", self.id, len(self.streams))

    def _parser(self) -> ChoiceParser:
        tools = self.body.tool_mode is not None
        return ChoiceParser(
            in_reasoning=self.in_reasoning, tools=tools, in_call=self.body.forces_tool_call
        )

    def _logprobs(self, items: Any) -> Any:
        if not self.body.logprobs:
            return None
        return logprobs_mod.to_openai(self.engine.tokenizer, items)

    # -- non-streaming ------------------------------------------------------------------------

    def response(self, results: list[GenerationResult]) -> ChatCompletionResponse:
        """The JSON answer: each choice's collected stream, parsed."""
        choices = []
        for index, result in enumerate(results):
            check_finished(result.finish_reason, result.error)
            parser = self._parser()
            parsed = parser.feed(result.text, final=True)
            calls = parser.tools.calls if parser.tools else []
            content: str | None = parsed.content
            if parser.tools:
                content = parser.tools.final_content(parsed.content)
            message = ChatMessageOut(
                content=content,
                reasoning_content=parsed.reasoning or None,
                tool_calls=[
                    ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
                    for c in calls
                ]
                or None,
            )
            choices.append(
                ChatCompletionChoice(
                    index=index,
                    message=message,
                    logprobs=self._logprobs(result.logprobs),
                    finish_reason=finish_reason(result.finish_reason, bool(calls)),
                )
            )
        return ChatCompletionResponse(
            id=self.id, created=self.created, model=self.engine.model_name, choices=choices,
            usage=self._usage(results),
        )

    def _usage(self, results: list[Any]) -> UsageInfo:
        prompt = self.streams[0].prompt_tokens if self.streams else 0
        completion = sum(r.usage.completion_tokens for r in results if r.usage is not None)
        return UsageInfo.of(prompt, completion)

    # -- streaming ----------------------------------------------------------------------------

    def _chunk(self, choices: list[ChunkChoice], usage: UsageInfo | None = None) -> str:
        return sse(
            ChatCompletionChunk(
                id=self.id, created=self.created, model=self.engine.model_name, choices=choices,
                usage=usage,
            )
        )

    def _content_chunk(self, index: int, text: str) -> str:
        """`_chunk` of a delta holding only content, the commonest event (one a token), from
        a template made from the same model (`TextTemplate`)."""
        template = self._content_templates.get(index)
        if template is None:
            template = self._content_templates[index] = TextTemplate(
                lambda content: ChatCompletionChunk(
                    id=self.id, created=self.created, model=self.engine.model_name,
                    choices=[ChunkChoice(index=index, delta=DeltaMessage(content=content))]))
        return template.render(text)

    async def events(self) -> AsyncIterator[str]:
        """The SSE answer: role first, then deltas as the choices produce them, a finish chunk
        per choice, the usage chunk (include_usage) and `[DONE]`."""
        parsers = [self._parser() for _ in self.streams]
        has_calls = [False] * len(self.streams)
        finals: list[GenerationChunk | None] = [None] * len(self.streams)
        for index in range(len(self.streams)):
            yield self._chunk([ChunkChoice(index=index, delta=DeltaMessage(role="assistant",
                                                                            content=""))])
        async for index, chunk in merge(self.streams):
            check_finished(chunk.finish_reason, chunk.error)
            final = chunk.finish_reason is not None
            parsed = parsers[index].feed(chunk.text, final=final)
            has_calls[index] |= bool(parsed.tool_calls)
            logprobs = self._logprobs(chunk.logprobs) if chunk.logprobs else None
            deltas = _deltas(parsed)
            if logprobs and not deltas:
                deltas = [DeltaMessage()]
            for delta in deltas:  # the chunk's logprobs go with its first delta
                if logprobs is None and _only_content(delta):
                    yield self._content_chunk(index, delta.content)
                else:
                    yield self._chunk([ChunkChoice(index=index, delta=delta, logprobs=logprobs)])
                logprobs = None
            if final:
                finals[index] = chunk
                reason = finish_reason(chunk.finish_reason, has_calls[index])
                yield self._chunk(
                    [ChunkChoice(index=index, delta=DeltaMessage(), finish_reason=reason)]
                )
        if self.body.stream_options and self.body.stream_options.include_usage:
            yield self._chunk([], usage=self._usage([c for c in finals if c is not None]))
        yield DONE


def _only_content(delta: DeltaMessage) -> bool:
    return (delta.content is not None and delta.role is None and delta.reasoning_content is None
            and delta.tool_calls is None)


def _deltas(parsed: ChoiceDelta) -> list[DeltaMessage]:
    """One step's wire deltas: its text first, then each tool-call piece in a chunk of its own."""
    deltas = []
    if parsed.content or parsed.reasoning:
        deltas.append(DeltaMessage(content=parsed.content or None,
                                   reasoning_content=parsed.reasoning or None))
    deltas.extend(DeltaMessage(tool_calls=[call]) for call in _delta_tool_calls(parsed.tool_calls))
    return deltas


def _delta_tool_calls(deltas: list[ToolCallDelta]) -> list[DeltaToolCall]:
    """Wire deltas, as OpenAI streams them: a call's first piece carries only its index, id, type,
    name and `arguments: ""`; argument text follows in later pieces (fragments of the same call
    that arrive in one step are joined)."""
    result: list[DeltaToolCall] = []
    for delta in deltas:
        previous = result[-1] if result else None
        if delta.id is not None:
            function = DeltaFunctionCall(name=delta.name, arguments="")
            result.append(
                DeltaToolCall(index=delta.index, id=delta.id, type="function", function=function)
            )
            if delta.arguments:  # a call parsed whole: its arguments come next
                result.append(DeltaToolCall(index=delta.index,
                                            function=DeltaFunctionCall(arguments=delta.arguments)))
        elif previous is not None and previous.index == delta.index and previous.id is None:
            previous.function.arguments = (previous.function.arguments or "") + delta.arguments
        else:
            function = DeltaFunctionCall(arguments=delta.arguments)
            result.append(DeltaToolCall(index=delta.index, function=function))
    return result
