"""`TextTemplate`: an event rendered from a template of the model's own dump is the same bytes as
the model dumped, for every kind of text (control characters, quotes, non-ASCII, astral
characters, a lone surrogate)."""

from __future__ import annotations

import random

from api.protocol.chat import ChatCompletionChunk, ChunkChoice, DeltaMessage
from api.sse import TextTemplate, sse


def make(text: str) -> ChatCompletionChunk:
    return ChatCompletionChunk(id="chatcmpl-1", created=1, model='q"wen\u00e9',
                               choices=[ChunkChoice(index=2, delta=DeltaMessage(content=text))])


def rendered(render, text: str) -> str:
    try:
        return render(text)
    except Exception as exc:  # noqa: BLE001 -- both sides must fail alike
        return f"{type(exc).__name__}"


def texts() -> list[str]:
    rng = random.Random(0)
    found = [chr(c) for c in range(0, 0x800)] + ["", " word", 'a"b\\c', "\u2028\u2029", "\x7f",
                                                 "\U0001f600 ok", "\ud800x", "x\udfff"]
    for _ in range(500):
        found.append("".join(chr(rng.choice([rng.randrange(0, 128), rng.randrange(128, 0xd800),
                                              rng.randrange(0x10000, 0x10ffff)]))
                             for _ in range(rng.randrange(1, 10))))
    return found


def test_a_template_renders_what_the_model_dumps():
    template = TextTemplate(make)
    assert template.parts is not None
    differ = [text for text in texts()
              if rendered(template.render, text) != rendered(lambda t: sse(make(t)), text)]
    assert not differ, [ascii(text) for text in differ[:5]]


def test_a_model_that_dumps_the_mark_twice_is_always_dumped():
    def twice(text: str) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=text, created=1, model="m",
                                   choices=[ChunkChoice(index=0, delta=DeltaMessage(content=text))])

    template = TextTemplate(twice)
    assert template.parts is None
    assert template.render("hi") == sse(twice("hi"))
