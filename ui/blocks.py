"""The playground's layout in Gradio 6 Blocks: a sidebar of kept conversations, the Chat,
Completion, Model and API tabs, and the sampling sliders beside the two tabs that use them, under a
banner that warns when the built-in model stands in.

Every element a test or a user may need to find has a stable `elem_id`. This module places the
components and wires the page-level events (load, tabs, completion); the chat's events are wired in
`ui.chat_events`, the handlers live in `ui.playground`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from . import chat_events
from .playground import MAX_TOKENS_SLIDER, Playground

TITLE = "nf4serve playground"
EXAMPLES = [
    "Explain 4-bit NF4 quantization in two sentences.",
    "Write a haiku about a GPU running out of memory.",
    "What is the capital of Australia? Answer in one word.",
]
# KaTeX ships inside Gradio's front end (no CDN): $...$ and \(...\) inline, $$...$$ and \[...\]
# as display maths, the delimiters chat-ui and Open WebUI render.
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
]
# The chat fills the window below the header, tabs and input rows (at least 320 px).
CHAT_HEIGHT = "calc(100dvh - 330px)"
# Gradio opens the sidebar at any width; on a phone it would cover the whole page.
CLOSE_SIDEBAR_ON_PHONES = """() => {
  if (window.innerWidth < 768) document.querySelector('#sidebar.open .toggle-button')?.click();
}"""


@dataclass
class Sampling:
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    max_tokens: gr.Slider

    def all(self) -> list[gr.Slider]:
        return [self.temperature, self.top_p, self.top_k, self.max_tokens]


def _sampling_sliders() -> Sampling:
    # Values here are placeholders; the page's load event sets the model's own defaults.
    return Sampling(
        gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature", elem_id="temperature",
                  info="0 is greedy"),
        gr.Slider(0.05, 1, value=0.8, step=0.05, label="Top p", elem_id="top-p"),
        gr.Slider(0, 200, value=20, step=1, label="Top k", elem_id="top-k", info="0 is off"),
        gr.Slider(1, MAX_TOKENS_SLIDER, value=2048, step=1, label="Max new tokens",
                  elem_id="max-tokens"),
    )


def _sidebar() -> chat_events.Sidebar:
    with gr.Sidebar(label="Conversations", open=True, elem_id="sidebar", width=280):
        gr.Markdown("### Conversations")
        new_chat = gr.Button("New chat", variant="primary", elem_id="new-chat")
        conversations = gr.Radio(choices=[], value=None, show_label=False, container=False,
                                 elem_id="conversations")
        gr.Markdown("Kept in this browser only. Export the open chat:", elem_id="saved-note")
        with gr.Row(elem_id="export-row"):
            export_json = gr.DownloadButton("JSON", size="sm", visible=False, min_width=0,
                                            elem_id="export-json")
            export_md = gr.DownloadButton("Markdown", size="sm", visible=False, min_width=0,
                                          elem_id="export-md")
    return chat_events.Sidebar(new_chat, conversations, export_json, export_md)


def _chat_tab() -> chat_events.ChatTab:
    chatbot = gr.Chatbot(
        elem_id="chatbot",
        label="Chat",
        height=CHAT_HEIGHT,
        min_height=320,
        buttons=["copy", "copy_all"],
        latex_delimiters=LATEX_DELIMITERS,
        examples=[{"text": text} for text in EXAMPLES],
        placeholder="Ask anything. Replies stream in as the model writes.",
    )
    with gr.Row(elem_id="chat-input-row"):
        message = gr.Textbox(placeholder="Message (Enter sends, Shift+Enter adds a line)",
                             show_label=False, lines=1, max_lines=8, scale=6,
                             elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=0, min_width=80, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=0, min_width=80, visible=False,
                         elem_id="chat-stop")
    with gr.Row(elem_id="chat-actions"):
        thinking = gr.Checkbox(False, label="Think", visible=False, min_width=0,
                               container=False, elem_id="thinking")
        retry = gr.Button("Retry", size="sm", min_width=0, elem_id="chat-retry")
        undo = gr.Button("Undo", size="sm", min_width=0, elem_id="chat-undo")
        clear = gr.Button("Clear", size="sm", min_width=0, elem_id="chat-clear")
    with gr.Accordion("System prompt", open=False, elem_id="system-prompt-box"):
        system_prompt = gr.Textbox(placeholder="You are a helpful assistant.", show_label=False,
                                   lines=3, elem_id="system-prompt")
    return chat_events.ChatTab(chatbot, message, send, stop, thinking, retry, undo, clear,
                               system_prompt)


def build_blocks(playground: Playground) -> gr.Blocks:
    """The whole page, wired to `playground`."""
    # delete_cache: the export files Gradio copied for each page go after an hour.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        sidebar = _sidebar()
        with gr.Row(equal_height=True, elem_id="header-row"):
            gr.Markdown(f"# {TITLE}", elem_id="header")
            status = gr.Markdown("**Model:** loading…", elem_id="model-status")
        banner = gr.HTML(visible=False, elem_id="fallback-banner")

        with gr.Row(elem_id="main-row"):
            with gr.Column(scale=4, min_width=300):
                with gr.Tabs(elem_id="tabs"):
                    with gr.Tab("Chat", id="chat", elem_id="tab-chat") as chat_tab_:
                        chat = _chat_tab()

                    with gr.Tab("Completion", id="completion",
                                elem_id="tab-completion") as completion_tab:
                        gr.Markdown("Raw text in, continuation out: no chat template "
                                    "(the API's `/generate`).")
                        prompt = gr.Textbox(label="Prompt", lines=6, elem_id="completion-prompt",
                                            value="Once upon a time,")
                        with gr.Row():
                            run = gr.Button("Generate", variant="primary",
                                            elem_id="completion-run")
                            run_stop = gr.Button("Stop", variant="stop", visible=False,
                                                 elem_id="completion-stop")
                        output = gr.Textbox(label="Output", lines=10, interactive=False,
                                            elem_id="completion-output")
                        completion_stats = gr.Markdown(elem_id="completion-stats")

                    with gr.Tab("Model", id="model", elem_id="tab-model") as model_tab:
                        model_md = gr.Markdown(elem_id="model-info")
                        refresh = gr.Button("Refresh", size="sm", elem_id="model-refresh")

                    with gr.Tab("API", id="api", elem_id="tab-api") as api_tab:
                        api_intro = gr.Markdown(elem_id="api-intro")
                        curl_chat = gr.Code(language="shell", label="curl: chat completion",
                                            interactive=False, elem_id="api-curl")
                        openai_py = gr.Code(language="python", label="Python: openai client",
                                            interactive=False, elem_id="api-openai")
                        curl_generate = gr.Code(language="shell", label="curl: raw completion, "
                                                "streamed", interactive=False,
                                                elem_id="api-generate")

            with gr.Column(scale=1, min_width=240, elem_id="sampling") as sampling_column:
                gr.Markdown("### Sampling")
                sampling = _sampling_sliders()

        # While the model loads, poll every 2 s; the tick stops itself once it is ready.
        poll = gr.Timer(2.0, active=False)
        quick = chat_events.QUICK

        # -- page state ---------------------------------------------------------------------------
        def load(request: gr.Request):
            scheme = request.request.url.scheme if request.request is not None else "http"
            state = playground.page_state(request.headers or {}, scheme)
            loading = playground.engine.state not in ("ready", "error")
            d = state.defaults
            return (
                state.status,
                gr.update(value=state.banner, visible=bool(state.banner)),
                state.model,
                state.api_intro,
                state.curl_chat,
                state.openai_python,
                state.curl_generate,
                d.temperature,
                d.top_p,
                d.top_k,
                gr.update(value=min(d.max_tokens, state.max_tokens_limit),
                          maximum=state.max_tokens_limit),
                gr.update(visible=state.thinking),
                gr.Timer(active=loading),
            )

        page_outputs = [status, banner, model_md, api_intro, curl_chat, openai_py, curl_generate,
                        *sampling.all(), chat.thinking, poll]
        demo.load(load, None, page_outputs, **quick)
        demo.load(None, None, None, js=CLOSE_SIDEBAR_ON_PHONES, **quick)
        poll.tick(load, None, page_outputs, **quick)
        for trigger in (refresh.click, model_tab.select):
            trigger(playground.model_report, None, model_md, **quick)
        # The sliders only where they apply: beside Chat and Completion.
        for tab, shown in ((chat_tab_, True), (completion_tab, True), (model_tab, False),
                           (api_tab, False)):
            tab.select(lambda shown=shown: gr.update(visible=shown), None, sampling_column,
                       **quick)

        chat_events.wire(demo, playground, chat, sidebar, sampling.all())

        # -- completion ---------------------------------------------------------------------------
        async def complete(text, temperature, top_p, top_k, max_tokens, request: gr.Request):
            async for update in playground.complete(text, temperature, top_p, top_k, max_tokens,
                                                    session=request.session_hash or ""):
                yield update

        def stop_completion(request: gr.Request):
            playground.stop(request.session_hash or "", "completion")

        buttons = [run, run_stop]
        completion = run.click(chat_events.busy, None, buttons, **quick).then(
            complete, [prompt, *sampling.all()], [output, completion_stats],
            concurrency_limit=None, api_visibility="private")
        completion.then(chat_events.idle, None, buttons, **quick)
        run_stop.click(stop_completion, None, None, **quick)
    return demo
