"""Chat prompts: rendering messages with the model's chat template, and the optional policy that
drops the oldest turns until a conversation fits the context window.

A request's `chat_template_kwargs` become variables of the model's template (`enable_thinking`). A
template of the request's own (`chat_template`) is code the server would run, a loop of a million
steps in a few bytes, so it is refused unless the operator trusts requests with it; the template
call's other parameters (`tokenize`, `return_dict`...) are no template variables and always refused.

Text with a lone surrogate (`"\\ud800"` in JSON) is refused before rendering, naming where it is.
The trimming policy counts each try only as far as the window (`prompt_bounds.encode_prompt`) and
bisects the number of turns to drop, so a long history costs a few renders, not one per turn.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ContextLengthError, InvalidRequestError
from .prompt_bounds import encode_prompt, surrogate_at


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make OpenAI-shaped messages what Qwen3's template expects: text parts joined into one
    string, null content as "", tool-call arguments as objects rather than JSON strings."""
    result = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise InvalidRequestError(f"messages[{index}] must be an object with a role",
                                      f"messages[{index}]")
        msg = dict(message)
        content = msg.get("content")
        if content is None:
            msg["content"] = ""
        elif isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif isinstance(part, str):
                    parts.append(part)
                else:
                    raise InvalidRequestError(
                        f"messages[{index}].content: only text parts are supported",
                        f"messages[{index}].content",
                    )
            msg["content"] = "".join(parts)
        if msg.get("tool_calls"):
            msg["tool_calls"] = [_normalize_tool_call(c, index) for c in msg["tool_calls"]]
        result.append(msg)
    return result


def _normalize_tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    call = dict(call)
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # the template writes a string as is
    call["function"] = function
    return call


TEMPLATE_KWARG = "chat_template"
# The parameters of `apply_chat_template` and of the renderer behind it: given as template kwargs
# they would not fill a variable but change which template runs or what comes back.
CALL_PARAMETERS = frozenset({
    "conversation", "conversations", "tools", "documents", "add_generation_prompt",
    "continue_final_message", "tokenize", "sanitize_control_tokens", "padding", "truncation",
    "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask",
    "tokenizer_kwargs",
})


def check_template_kwargs(kwargs: dict[str, Any] | None, trust_template: bool = False) -> None:
    """Raise `InvalidRequestError` for a kwarg that is no template variable: the template call's
    own parameters, and `chat_template` unless `trust_template` (--trust-request-chat-template)."""
    for name in kwargs or {}:
        if name == TEMPLATE_KWARG and not trust_template:
            raise InvalidRequestError(
                "chat_template_kwargs.chat_template: this server does not run chat templates sent "
                "with a request (it would need --trust-request-chat-template)",
                "chat_template_kwargs",
            )
        if name in CALL_PARAMETERS:
            raise InvalidRequestError(
                f"chat_template_kwargs.{name} is not a template variable; the server sets it",
                "chat_template_kwargs",
            )


def render_chat(tokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                chat_template_kwargs: dict[str, Any] | None = None, assistant_prefix: str = "",
                trust_template: bool = False) -> str:
    """The prompt text for a conversation, ending with the assistant's generation prompt.
    `trust_template` lets `chat_template_kwargs` replace the template (`check_template_kwargs`)."""
    check_template_kwargs(chat_template_kwargs, trust_template)
    if not messages:
        raise InvalidRequestError("messages must contain at least one message", "messages")
    check_text(messages=messages, tools=tools, chat_template_kwargs=chat_template_kwargs)
    try:
        text = tokenizer.apply_chat_template(
            normalize_messages(messages),
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=True,
            **(chat_template_kwargs or {}),
        )
    except InvalidRequestError:
        raise
    except Exception as exc:  # jinja errors from malformed input
        raise InvalidRequestError(f"could not render the chat template: {exc}", "messages") from exc
    return text + assistant_prefix


def check_text(**values: Any) -> None:
    """`InvalidRequestError` for a lone surrogate anywhere in these request values (nested lists and
    dicts), naming the first place: `messages[0].content`. Such a string is no Unicode text."""
    for param, value in values.items():
        stack = [(param, value)]
        while stack:
            where, item = stack.pop()
            if isinstance(item, str):
                if surrogate_at(item) is not None:
                    raise InvalidRequestError(
                        f"{where} is not valid Unicode: it holds a lone surrogate (an unpaired "
                        "\\ud800-\\udfff escape).", param)
            elif isinstance(item, dict):  # keys are checked too, and named ASCII-safe
                entries = [(f"{where}.{_key(key)}", part) for key, value in item.items()
                           for part in (key, value)]
                stack.extend(reversed(entries))
            elif isinstance(item, list | tuple):
                stack.extend(reversed([(f"{where}[{i}]", v) for i, v in enumerate(item)]))


def _key(key: Any) -> str:
    return ascii(key) if isinstance(key, str) and surrogate_at(key) is not None else str(key)


def trim_starts(messages: list[dict[str, Any]]) -> list[int]:
    """Where the kept turns start after dropping 0, 1, 2... of the oldest non-system turns (each with
    the tool results right after it); the system messages before that point and the last message
    always stay."""
    last = len(messages) - 1
    starts, i = [0], 0
    while True:
        while i < last and messages[i].get("role") == "system":
            i += 1
        if i >= last:
            return starts
        i += 1
        while i < last and messages[i].get("role") == "tool":
            i += 1
        starts.append(i)


def trim_to_fit(tokenizer, messages: list[dict[str, Any]], max_context: int,
                **render_kwargs) -> tuple[list[dict[str, Any]], list[int], str]:
    """Drop the fewest oldest non-system turns that make the prompt leave room for an output token
    (fewer than `max_context` tokens): the kept messages, the prompt's token ids and its text.

    The last message always stays; an assistant turn's tool results go with it. The number of turns
    to drop is bisected (the prompt shrinks as turns go). Raises `ContextLengthError` when the
    prompt does not fit even with every droppable turn gone.
    """

    def attempt(start: int) -> tuple[list[dict[str, Any]], list[int], str]:
        kept = [m for m in messages[:start] if m.get("role") == "system"] + list(messages[start:])
        text = render_chat(tokenizer, kept, **render_kwargs)
        return kept, encode_prompt(tokenizer, text, max_context, "messages"), text

    try:
        return attempt(0)  # renders (and so validates) every message first
    except ContextLengthError:
        starts = trim_starts(messages)
        if len(starts) == 1:
            raise
    fits, low, high = attempt(starts[-1]), 0, len(starts) - 1  # starts[low] does not fit
    while high - low > 1:
        middle = (low + high) // 2
        try:
            fits, high = attempt(starts[middle]), middle
        except ContextLengthError:
            low = middle
    return fits
