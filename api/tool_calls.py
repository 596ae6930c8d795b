"""Qwen3 tool calls: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` blocks in the
model's text become OpenAI `tool_calls`; the text outside the blocks is the content.

`ToolCallParser` reads a stream of text deltas and returns, per delta, the content to show and the
tool-call deltas to send, as OpenAI streams them: first `index`, `id`, `type` and `name` (as soon as
the name is complete), then `arguments` in fragments. Non-streaming is the same parser fed the whole
text at once, so both modes agree. Markup never reaches the content: text that could be the start of
a tag is held back until it is known.

Whitespace: where a block is taken out, the whitespace the model wrote around it becomes one
separator (the run before the block, else the run after it), so `text <tool_call>...</tool_call>
more` gives `text more`; the content as a whole has no leading or trailing whitespace. Trailing
whitespace is therefore held back until more content follows.

Arguments stream while they are generated; the end of the text that could still be the closing `}`
of the call object (or the start of `</tool_call>`) is held back. Arguments the model wrote as a JSON
string (`"arguments": "{...}"`) are held until the block ends and sent unquoted, as the whole-block
parse gives them. A block that does not start like a Qwen3 call is parsed whole at `</tool_call>`
as JSON, and if that fails its text becomes content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from inference.reasoning import partial_tag_length

CALL_START = "<tool_call>"
CALL_END = "</tool_call>"
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallDelta:
    """A piece of one tool call: the header (id, name) once, then argument fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON string, as the model wrote it


@dataclass
class ToolCallParse:
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __iadd__(self, other: ToolCallParse) -> ToolCallParse:
        self.content += other.content
        self.tool_calls.extend(other.tool_calls)
        return self


def strip_call_end(text: str) -> str:
    """The arguments of a call body: without the call object's closing `}` and whitespace."""
    text = text.rstrip()
    if text.endswith("}"):
        text = text[:-1]
    return text.rstrip()


def string_arguments(body: str) -> str:
    """The arguments of a call body that starts with a JSON string (`"{\\"city\\": ...}"}`): the
    string's value. A string cut off by max_tokens is closed first; if nothing decodes, the text."""
    text = body.strip()
    decoder = json.JSONDecoder()
    for candidate in (text, text + '"'):
        try:
            value, _ = decoder.raw_decode(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, str):
            return value
    return strip_call_end(text)


class ToolCallParser:
    """Splits a stream of text into content and tool calls. `in_call=True` when the prompt already
    ends with `<tool_call>\\n` (a forced call): the output starts inside the first block."""

    def __init__(self, *, in_call: bool = False):
        self._state = "header" if in_call else "text"
        self._buffer = ""
        self._space = ""  # whitespace after the content so far: sent only if more content follows
        self._skip_space = True  # at the start, and after a block that already has a separator
        self._sent = 0  # characters of the current call's arguments already sent
        self._string_arguments = False  # the current call's arguments are a JSON string
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> ToolCallParse:
        self._buffer += text
        return self._drain(final=False)

    def finish(self) -> ToolCallParse:
        """Everything held back, at the end of generation (an unclosed call is closed here)."""
        return self._drain(final=True)

    @classmethod
    def parse(cls, text: str, *, in_call: bool = False) -> tuple[str | None, list[ToolCall]]:
        """Non-streaming: (content, calls) of a whole text; content is None when only calls."""
        parser = cls(in_call=in_call)
        result = parser.feed(text)
        result += parser.finish()
        return parser.final_content(result.content), parser.calls

    def final_content(self, content: str) -> str | None:
        return None if self.calls and not content.strip() else content

    def _drain(self, *, final: bool) -> ToolCallParse:
        out = ToolCallParse()
        while True:
            step = {"text": self._text, "header": self._header, "arguments": self._arguments}
            if not step[self._state](out, final):
                return out

    # Each state handler returns True when it changed state and the buffer must be read again.

    def _emit_content(self, out: ToolCallParse, text: str) -> None:
        """Add text from outside the blocks; the same however the text is split."""
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return
            self._skip_space = False
        core = text.rstrip()
        if not core:
            self._space += text
            return
        out.content += self._space + core
        self._space = text[len(core) :]

    def _end_block(self) -> None:
        """A block was taken out: whitespace after it is dropped if there was some before it."""
        self._skip_space = self._skip_space or bool(self._space)

    def _text(self, out: ToolCallParse, final: bool) -> bool:
        found = [(i, tag) for tag in (CALL_START, CALL_END) if (i := self._buffer.find(tag)) >= 0]
        if found:
            index, tag = min(found)
            self._emit_content(out, self._buffer[:index])
            self._buffer = self._buffer[index + len(tag) :]
            if tag == CALL_START:
                self._state = "header"
            else:  # a stray closing tag: markup, dropped
                self._end_block()
            return True
        if final:
            self._emit_content(out, self._buffer)
            self._buffer = ""
            return False
        keep = len(self._buffer) - partial_tag_length(self._buffer, (CALL_START, CALL_END))
        self._emit_content(out, self._buffer[:keep])
        self._buffer = self._buffer[keep:]
        return False

    def _header(self, out: ToolCallParse, final: bool) -> bool:
        match = _HEADER.match(self._buffer)
        # The header is complete once something follows its whitespace (or the text ended).
        complete = match and (match.end() < len(self._buffer) or final)
        if complete and CALL_END not in self._buffer[: match.end()]:
            try:
                name = json.loads(f'"{match.group(1)}"')
            except json.JSONDecodeError:
                name = match.group(1)
            call = ToolCall(new_call_id(), name, "")
            self.calls.append(call)
            out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, call.id, name))
            self._buffer = self._buffer[match.end() :]
            self._state, self._sent = "arguments", 0
            self._string_arguments = self._buffer.startswith('"')
            return True
        end = self._buffer.find(CALL_END)
        if end < 0 and not final:
            return False  # wait for the name, or for the end of the block
        body = self._buffer if end < 0 else self._buffer[:end]
        self._buffer = "" if end < 0 else self._buffer[end + len(CALL_END) :]
        self._state = "text"
        if not (end < 0 and body.lstrip().startswith("{")):  # else: cut off before its name
            self._parse_whole_block(out, body)
        self._end_block()
        return True

    def _parse_whole_block(self, out: ToolCallParse, body: str) -> None:
        """A block not in Qwen3's key order: a call if it is JSON with a name, else its text is
        content."""
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            arguments = data.get("arguments", data.get("parameters", {}))
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            call = ToolCall(new_call_id(), data["name"], arguments)
            self.calls.append(call)
            out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, call.id, call.name, arguments))
            return
        self._emit_content(out, body.strip())

    def _arguments(self, out: ToolCallParse, final: bool) -> bool:
        end = self._buffer.find(CALL_END)
        if end >= 0 or final:
            body = self._buffer if end < 0 else self._buffer[:end]
            self._buffer = "" if end < 0 else self._buffer[end + len(CALL_END) :]
            unquote = string_arguments if self._string_arguments else strip_call_end
            self._send_arguments(out, unquote(body))
            self._state = "text"
            self._end_block()
            return True
        if not self._string_arguments:  # a string is sent whole, once the block has ended
            held = len(self._buffer) - partial_tag_length(self._buffer, (CALL_END,))
            self._send_arguments(out, strip_call_end(self._buffer[:held]))
        return False

    def _send_arguments(self, out: ToolCallParse, arguments: str) -> None:
        call = self.calls[-1]
        if len(arguments) > self._sent:
            fragment = arguments[self._sent :]
            call.arguments += fragment
            self._sent = len(arguments)
            out.tool_calls.append(ToolCallDelta(len(self.calls) - 1, arguments=fragment))
