"""Export of a conversation: OpenAI chat messages (a request body the API accepts as it is) and
Markdown, files named after the conversation."""

from __future__ import annotations

import json

from api.protocol.chat import ChatCompletionRequest
from ui.export import file_stem, openai_messages, to_json, to_markdown, write_files

HISTORY = [
    {"role": "user", "content": "What is $e^{i\\pi}$?"},
    {"role": "assistant", "content": "e to the i pi...",
     "metadata": {"title": "Reasoning", "status": "done"}},
    {"role": "assistant", "content": "It is $-1$."},
    {"role": "assistant", "content": "queue 1 ms",
     "metadata": {"title": "9 prompt · 5 completion tokens · finish: stop", "status": "done"}},
    {"role": "user", "content": "Why?"},
    {"role": "assistant", "content": "The server is busy", "metadata": {"title": "⚠️ Error"}},
]


def test_openai_messages_keep_the_turns_and_the_reasoning():
    assert openai_messages(HISTORY, " Be exact. ") == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "What is $e^{i\\pi}$?"},
        {"role": "assistant", "content": "It is $-1$.", "reasoning_content": "e to the i pi..."},
        {"role": "user", "content": "Why?"},
    ]


def test_a_reply_cut_off_while_reasoning_keeps_its_reasoning():
    history = [{"role": "user", "content": "q"},
               {"role": "assistant", "content": "hmm", "metadata": {"title": "Reasoning"}}]
    assert openai_messages(history)[-1] == {"role": "assistant", "content": "",
                                            "reasoning_content": "hmm"}


def test_the_json_is_a_chat_completion_request():
    body = json.loads(to_json(HISTORY, "Be exact.", model="builtin"))
    assert body["model"] == "builtin"
    request = ChatCompletionRequest.model_validate(body)
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]


def test_markdown_has_a_heading_per_turn_and_every_note():
    text = to_markdown(HISTORY, "Be exact.", title="What is e^(i pi)?", model="builtin")
    assert text.startswith("# What is e^(i pi)?\n\n*Exported from the nf4serve playground")
    assert text.count("## User") == 2 and text.count("## Assistant") == 2
    assert "## System\n\nBe exact." in text
    assert "<details><summary>Reasoning</summary>\n\ne to the i pi...\n\n</details>" in text
    assert "It is $-1$." in text
    assert "*9 prompt · 5 completion tokens · finish: stop*" in text
    assert "> ⚠️ Error: The server is busy" in text


def test_files_are_named_after_the_title_and_replace_the_previous_ones(tmp_path):
    assert file_stem("What is $e^{i\\pi}$?") == "what-is-e-i-pi"
    assert file_stem("日本語") == "conversation"
    folder = tmp_path / "session"
    write_files(folder, HISTORY, "", "Old title")
    json_path, md_path = write_files(folder, HISTORY, "", "What is NF4?")
    assert sorted(p.name for p in folder.iterdir()) == ["what-is-nf4.json", "what-is-nf4.md"]
    assert json.loads(json_path.read_text())["messages"][0]["role"] == "user"
    assert md_path.read_text().startswith("# What is NF4?")
