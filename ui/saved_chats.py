"""Conversations kept in the browser: the shape of the store that `gr.BrowserState` holds in the
page's localStorage, and the pure functions that read and change it.

The store is `{"current": id, "conversations": [...]}`, newest first; each conversation is
`{"id", "title", "updated", "system", "messages"}` with the messages as the Chatbot shows them
(side notes included, content as plain text). A conversation with no messages is not kept. Nothing
here reaches the server's disk: the server only transforms what the page sends.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .conversation import Message, content_text

MAX_CONVERSATIONS = 50  # localStorage holds about 5 MB per site; the oldest go first
TITLE_CHARS = 48
NEW_TITLE = "New chat"

Store = dict[str, Any]


def empty_store() -> Store:
    return {"current": None, "conversations": []}


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def valid_store(store: Any) -> Store:
    """The store as saved, or an empty one when it is missing or not of this shape."""
    if not isinstance(store, dict) or not isinstance(store.get("conversations"), list):
        return empty_store()
    kept = [c for c in store["conversations"]
            if isinstance(c, dict) and isinstance(c.get("id"), str)
            and isinstance(c.get("messages"), list)]
    return {"current": store.get("current"), "conversations": kept}


def plain_messages(history: list[Message]) -> list[Message]:
    """The Chatbot's messages with content as plain text and only the keys worth keeping."""
    result = []
    for message in history or []:
        kept: Message = {"role": message.get("role"), "content": content_text(message.get("content"))}
        if message.get("metadata"):
            kept["metadata"] = {k: v for k, v in message["metadata"].items()
                                if k in ("title", "status") and v is not None}
        result.append(kept)
    return result


def title_of(messages: list[Message]) -> str:
    """The first user message, on one line and shortened."""
    for message in messages:
        if message.get("role") == "user":
            text = " ".join(content_text(message.get("content")).split())
            if text:
                return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"
    return NEW_TITLE


def find(store: Store, conversation_id: str | None) -> dict[str, Any] | None:
    for conversation in store["conversations"]:
        if conversation["id"] == conversation_id:
            return conversation
    return None


def save(store: Any, conversation_id: str | None, history: list[Message],
         system_prompt: str = "", now: float | None = None) -> tuple[Store, str]:
    """Put a conversation first in the store (replacing its older copy) and make it current;
    with no messages it is dropped. Returns the store and the conversation's id."""
    store = valid_store(store)
    conversation_id = conversation_id or new_id()
    others = [c for c in store["conversations"] if c["id"] != conversation_id]
    messages = plain_messages(history)
    if messages:
        conversation = {"id": conversation_id, "title": title_of(messages),
                        "updated": time.time() if now is None else now,
                        "system": system_prompt or "", "messages": messages}
        others.insert(0, conversation)
    return {"current": conversation_id, "conversations": others[:MAX_CONVERSATIONS]}, \
        conversation_id


def delete(store: Any, conversation_id: str | None) -> Store:
    """The store without that conversation; none is current afterwards."""
    store = valid_store(store)
    kept = [c for c in store["conversations"] if c["id"] != conversation_id]
    return {"current": None, "conversations": kept}


def choices(store: Any) -> list[tuple[str, str]]:
    """(label, id) pairs for the conversation list, newest first."""
    return [(c.get("title") or NEW_TITLE, c["id"]) for c in valid_store(store)["conversations"]]
