"""The Chat tab's events: sending, Stop, Retry, Undo, Clear, and the conversations kept in the
browser (`gr.BrowserState`), switched in the sidebar and exported as JSON and Markdown.

A run is: refuse with a message if this page's reply is still under way, add the user's message,
swap Send for Stop, stream the reply, swap back, save the conversation into the browser's store
and refresh the two export files. Stop does not cancel the Gradio event: it cancels the engine
request (`Playground.stop`), so the reply ends normally, marked as stopped, with its statistics,
and is saved like any other. Retry, Undo, Clear, New chat and the conversation list wait while a
reply streams (Stop ends it first); they, and the chatbot's own icons, also cancel a reply that may
still run. Generation events run without a Gradio concurrency limit: the engine interleaves
requests fairly itself.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from . import export, saved_chats
from .conversation import content_text, for_retry, for_undo
from .playground import Playground

# The browser's store of conversations. BrowserState encrypts it with this key, which the page
# itself receives: it keeps the value to this app, it is no secret from the browser's user.
STORAGE_KEY = "nf4serve-conversations"
STORAGE_SECRET = "nf4serve-playground-conversations"
# Bookkeeping events: no queue, and no progress overlay flashing over the sidebar on every save.
QUICK = dict(queue=False, api_visibility="private", show_progress="hidden")
# A run's first step may refuse with a message (a reply is under way): Gradio shows an error
# raised in a handler only for events that go through its queue.
CHECK = dict(QUICK, queue=True, concurrency_limit=None)


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    thinking: gr.Checkbox
    retry: gr.Button
    undo: gr.Button
    clear: gr.Button
    system_prompt: gr.Textbox


@dataclass
class Sidebar:
    new_chat: gr.Button
    conversations: gr.Radio
    export_json: gr.DownloadButton
    export_md: gr.DownloadButton


def busy(*controls: gr.Component):
    """While a reply streams: Send (or Generate) hidden, Stop shown, `controls` disabled."""
    return (gr.update(visible=False), gr.update(visible=True),
            *[gr.update(interactive=False)] * len(controls))


def idle(*controls: gr.Component):
    return (gr.update(visible=True), gr.update(visible=False),
            *[gr.update(interactive=True)] * len(controls))


BUSY = "A reply is still being written: stop it first, or wait for it."


def wire(demo: gr.Blocks, playground: Playground, chat: ChatTab, sidebar: Sidebar,
         sampling: list[gr.Slider]) -> None:
    """Connect the Chat tab and the sidebar to `playground`; call inside `demo`'s context."""
    store = gr.BrowserState(saved_chats.empty_store(), storage_key=STORAGE_KEY,
                            secret=STORAGE_SECRET)
    export_root = Path(tempfile.mkdtemp(prefix="nf4serve-exports-"))
    atexit.register(shutil.rmtree, export_root, ignore_errors=True)

    def exports(conversation: dict | None, session: str):
        """The two download buttons for a conversation (hidden without one)."""
        if conversation is None:
            return (gr.update(value=None, visible=False),) * 2
        model = getattr(playground.engine, "model_name", "") or ""
        # The session id comes from the browser: hashed, it cannot name another folder.
        folder = export_root / hashlib.sha256(session.encode()).hexdigest()[:24]
        paths = export.write_files(folder, conversation["messages"], conversation["system"],
                                   conversation["title"], model)
        return tuple(gr.update(value=str(path), visible=True) for path in paths)

    def show(store_: dict, conversation: dict | None, request: gr.Request):
        """Everything that shows one conversation (or a new, empty one)."""
        choices = saved_chats.choices(store_)
        if conversation is None:
            return [], gr.update(choices=choices, value=None), store_, *exports(None, "")
        return (conversation["messages"], gr.update(choices=choices, value=conversation["id"]),
                store_, *exports(conversation, request.session_hash or ""))

    shown = [chat.chatbot, sidebar.conversations, store, sidebar.export_json, sidebar.export_md]

    def restore(store_: dict, request: gr.Request):
        store_ = saved_chats.valid_store(store_)
        conversation = saved_chats.find(store_, store_["current"])
        system = conversation["system"] if conversation else gr.update()
        return (*show(store_, conversation, request), system)

    def open_conversation(chosen: str, store_: dict, request: gr.Request):
        store_ = saved_chats.valid_store(store_)
        conversation = saved_chats.find(store_, chosen)
        store_["current"] = conversation["id"] if conversation else None
        system = conversation["system"] if conversation else gr.update()
        return (*show(store_, conversation, request), system)

    def new_conversation(store_: dict, request: gr.Request):
        store_ = saved_chats.valid_store(store_)
        store_["current"] = None
        return show(store_, None, request)

    def persist(history: list, system: str, store_: dict, request: gr.Request):
        """Save what the chat shows; everything `show` updates but the chat itself, which may
        have changed again meanwhile (Undo while a reply was being cancelled)."""
        store_ = saved_chats.valid_store(store_)
        store_, current = saved_chats.save(store_, store_["current"], history, system)
        return show(store_, saved_chats.find(store_, current), request)[1:]

    async def respond(history, system, thinking, temperature, top_p, top_k, max_tokens,
                      request: gr.Request):
        think = bool(thinking) if playground.supports_thinking else None
        async for update in playground.chat(history, system, temperature, top_p, top_k,
                                            max_tokens, thinking=think,
                                            session=request.session_hash or ""):
            yield update

    def stop(request: gr.Request):
        playground.stop(request.session_hash or "", "chat")

    def refuse_while_replying(request: gr.Request) -> None:
        # Enter in the message box and Retry stay usable while a reply streams; a second reply
        # into the same chat would interleave with the first.
        if playground.is_running(request.session_hash or "", "chat"):
            raise gr.Error(BUSY, duration=5, print_exception=False)

    def add_user_message(text: str, history: list):
        if not (text or "").strip():
            return gr.update(), history
        return "", list(history or []) + [{"role": "user", "content": text}]

    def pick_example(evt: gr.SelectData, history: list):
        return list(history or []) + [{"role": "user", "content": content_text(evt.value)}]

    # While a reply streams, what would change the chat under it waits: Stop ends the reply first.
    # (Cancelling the stream instead races its last update, which could bring the reply back.)
    locked = [chat.retry, chat.undo, chat.clear, sidebar.new_chat, sidebar.conversations]
    buttons = [chat.send, chat.stop, *locked]

    def lock():
        return busy(*locked)

    def unlock():
        return idle(*locked)

    save = dict(fn=persist, inputs=[chat.chatbot, chat.system_prompt, store],
                outputs=shown[1:], **QUICK)

    def run(trigger, prepare, inputs, outputs, check: bool = True) -> gr.events.Dependency:
        """On `trigger`, unless a reply is under way: `prepare` the chat (add the user's message,
        or cut it for Retry), then stream a reply."""
        if check:
            event = trigger(refuse_while_replying, None, None, **CHECK).success(
                prepare, inputs, outputs, **QUICK)
        else:
            event = trigger(prepare, inputs, outputs, **QUICK)
        reply = event.success(lock, None, buttons, **QUICK).then(
            respond, [chat.chatbot, chat.system_prompt, chat.thinking, *sampling], chat.chatbot,
            concurrency_limit=None, api_visibility="private")
        # Saved before the controls unlock: a conversation picked in between would get this one's
        # messages saved under its id.
        reply.then(**save).then(unlock, None, buttons, **QUICK)
        return reply

    typed = ([chat.message, chat.chatbot], [chat.message, chat.chatbot])
    runs = [
        run(chat.message.submit, add_user_message, *typed),
        run(chat.send.click, add_user_message, *typed),
        # Examples show only in an empty chat: no reply can be under way there.
        run(chat.chatbot.example_select, pick_example, chat.chatbot, chat.chatbot, check=False),
        run(chat.retry.click, for_retry, chat.chatbot, chat.chatbot),
        run(chat.chatbot.retry, for_retry, chat.chatbot, chat.chatbot),
    ]
    chat.stop.click(stop, None, None, **QUICK)

    # The rest also cancels a reply that may still run (the chatbot's own icons are not locked),
    # then saves what the chat shows.
    for trigger in (chat.undo.click, chat.chatbot.undo):
        trigger(for_undo, chat.chatbot, [chat.chatbot, chat.message], cancels=runs,
                **QUICK).then(**save).then(unlock, None, buttons, **QUICK)
    chat.clear.click(lambda: [], None, chat.chatbot, cancels=runs, **QUICK).then(
        **save).then(unlock, None, buttons, **QUICK)
    chat.chatbot.clear(cancels=runs, **save).then(unlock, None, buttons, **QUICK)

    demo.load(restore, [store], [*shown, chat.system_prompt], **QUICK)
    sidebar.conversations.input(open_conversation, [sidebar.conversations, store],
                                [*shown, chat.system_prompt], cancels=runs, **QUICK).then(
        unlock, None, buttons, **QUICK)
    sidebar.new_chat.click(new_conversation, [store], shown, cancels=runs, **QUICK).then(
        unlock, None, buttons, **QUICK)
