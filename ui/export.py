"""A conversation exported from the playground: as JSON in OpenAI's chat format (a request body
that `POST /api/v1/chat/completions` accepts as it is) and as Markdown to read or paste.

The JSON holds the system prompt and the user and assistant turns; an assistant turn's reasoning
goes in `reasoning_content`, as this server's API returns it. Statistics and error notes are left
out of the JSON and kept in the Markdown, in italics. Pure functions, plus one that writes both
files for Gradio's download buttons.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .conversation import Message, content_text, is_side_note
from .reply import ERROR_TITLE, REASONING_TITLE

NAME_CHARS = 40


def openai_messages(history: list[Message], system_prompt: str = "") -> list[dict[str, Any]]:
    """The conversation as OpenAI chat messages, reasoning as `reasoning_content`."""
    messages: list[dict[str, Any]] = []
    if system_prompt.strip():
        messages.append({"role": "system", "content": system_prompt.strip()})
    reasoning = ""
    for message in history:
        role = message.get("role")
        text = content_text(message.get("content"))
        title = (message.get("metadata") or {}).get("title")
        if role == "assistant" and title == REASONING_TITLE:
            reasoning += text
            continue
        if role not in ("user", "assistant") or is_side_note(message):
            continue
        last = messages[-1] if messages else None
        if last is not None and last["role"] == role and role == "user":
            last["content"] += "\n\n" + text  # one turn, as the model saw it
            continue
        entry: dict[str, Any] = {"role": role, "content": text}
        if role == "assistant" and reasoning:
            entry["reasoning_content"] = reasoning
        reasoning = ""
        messages.append(entry)
    if reasoning:  # a reply cut off while still reasoning: no answer, only its reasoning
        messages.append({"role": "assistant", "content": "", "reasoning_content": reasoning})
    return messages


def to_json(history: list[Message], system_prompt: str = "", model: str = "") -> str:
    body: dict[str, Any] = {"model": model} if model else {}
    body["messages"] = openai_messages(history, system_prompt)
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


def to_markdown(history: list[Message], system_prompt: str = "", title: str = "",
                model: str = "") -> str:
    """The conversation as Markdown: a heading per turn, reasoning in a `<details>` block."""
    lines = [f"# {title or 'Conversation'}", ""]
    if model:
        lines += [f"*Exported from the nf4serve playground · model `{model}`*", ""]
    if system_prompt.strip():
        lines += ["## System", "", system_prompt.strip(), ""]
    previous = None
    for message in history:
        role = message.get("role")
        text = content_text(message.get("content")).strip()
        title_ = (message.get("metadata") or {}).get("title")
        if role != previous and role in ("user", "assistant"):
            lines += [f"## {'User' if role == 'user' else 'Assistant'}", ""]
            previous = role
        if title_ == REASONING_TITLE:
            lines += ["<details><summary>Reasoning</summary>", "", text, "", "</details>", ""]
        elif title_ == ERROR_TITLE:
            lines += [f"> {ERROR_TITLE}: {text}", ""]
        elif title_:
            lines += [f"*{title_}*", ""]
        elif text:
            lines += [text, ""]
    return "\n".join(lines).rstrip() + "\n"


def file_stem(title: str) -> str:
    """A file name from a conversation's title: lowercase words joined by dashes."""
    words = re.findall(r"[a-z0-9]+", title.lower())
    stem = "-".join(words)[:NAME_CHARS].strip("-")
    return stem or "conversation"


def write_files(folder: Path, history: list[Message], system_prompt: str, title: str,
                model: str = "") -> tuple[Path, Path]:
    """Both exports, written into `folder` (one per page, overwritten on every save: Gradio
    copies a file into its own cache as soon as a handler returns it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink(missing_ok=True)  # two saves of one page may race
    stem = file_stem(title)
    json_path = folder / f"{stem}.json"
    md_path = folder / f"{stem}.md"
    json_path.write_text(to_json(history, system_prompt, model), encoding="utf-8")
    md_path.write_text(to_markdown(history, system_prompt, title, model), encoding="utf-8")
    return json_path, md_path
