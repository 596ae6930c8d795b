"""The playground's layout and event wiring in Gradio 6 Blocks: Chat, Completion, Model and API tabs
beside one set of sampling sliders, under a banner that warns when the built-in model stands in.

Every element a test or a user may need to find has a stable `elem_id`. Handlers live in
`ui.playground`; this module only places components and connects events. Generation events run
without a Gradio concurrency limit, because the engine itself interleaves requests fairly and
queues the excess; a Stop (or a new Clear) cancels the event, which cancels the engine request.
"""

from __future__ import annotations

import gradio as gr

from .conversation import content_text, for_retry, for_undo
from .playground import MAX_TOKENS_SLIDER, Playground

TITLE = "nf4serve playground"
EXAMPLES = [
    "Explain 4-bit NF4 quantization in two sentences.",
    "Write a haiku about a GPU running out of memory.",
    "What is the capital of Australia? Answer in one word.",
]
CSS = """
#fallback-banner { border: 1px solid #f59e0b; background: #fffbeb; color: #78350f;
  border-radius: 8px; padding: 8px 14px; }
#fallback-banner p { margin: 0; }
#model-status p { margin: 0; }
#header h1 { margin-bottom: 0; }
"""


def _sampling_sliders() -> tuple[gr.Slider, gr.Slider, gr.Slider, gr.Slider]:
    # Values here are placeholders; the page's load event sets the model's own defaults.
    temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature", elem_id="temperature",
                            info="0 is greedy")
    top_p = gr.Slider(0.05, 1, value=0.8, step=0.05, label="Top p", elem_id="top-p")
    top_k = gr.Slider(0, 200, value=20, step=1, label="Top k", elem_id="top-k", info="0 is off")
    max_tokens = gr.Slider(1, MAX_TOKENS_SLIDER, value=2048, step=1, label="Max new tokens",
                           elem_id="max-tokens")
    return temperature, top_p, top_k, max_tokens


def build_blocks(playground: Playground) -> gr.Blocks:
    """The whole page, wired to `playground`."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown(f"# {TITLE}", elem_id="header")
            status = gr.Markdown("**Model:** loading…", elem_id="model-status")
        banner = gr.Markdown(visible=False, elem_id="fallback-banner")

        with gr.Row():
            with gr.Column(scale=4):
                with gr.Tabs(elem_id="tabs"):
                    with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                        chatbot = gr.Chatbot(
                            elem_id="chatbot",
                            label="Chat",
                            height=460,
                            buttons=["copy", "copy_all"],
                            examples=[{"text": text} for text in EXAMPLES],
                            placeholder="Ask anything. Replies stream in as the model writes.",
                        )
                        with gr.Row():
                            message = gr.Textbox(
                                placeholder="Message (Enter sends, Shift+Enter adds a line)",
                                show_label=False, lines=1, max_lines=8, scale=6,
                                elem_id="chat-input",
                            )
                            send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                            stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
                        with gr.Row():
                            retry = gr.Button("Retry", size="sm", elem_id="chat-retry")
                            undo = gr.Button("Undo", size="sm", elem_id="chat-undo")
                            clear = gr.Button("Clear", size="sm", elem_id="chat-clear")
                        with gr.Accordion("System prompt", open=False):
                            system_prompt = gr.Textbox(
                                placeholder="You are a helpful assistant.", show_label=False,
                                lines=3, elem_id="system-prompt",
                            )

                    with gr.Tab("Completion", id="completion", elem_id="tab-completion"):
                        gr.Markdown("Raw text in, continuation out: no chat template "
                                    "(the API's `/generate`).")
                        prompt = gr.Textbox(label="Prompt", lines=6, elem_id="completion-prompt",
                                            value="Once upon a time,")
                        with gr.Row():
                            run = gr.Button("Generate", variant="primary",
                                            elem_id="completion-run")
                            run_stop = gr.Button("Stop", variant="stop",
                                                 elem_id="completion-stop")
                        output = gr.Textbox(label="Output", lines=10, interactive=False,
                                            elem_id="completion-output")
                        completion_stats = gr.Markdown(elem_id="completion-stats")

                    with gr.Tab("Model", id="model", elem_id="tab-model") as model_tab:
                        model_md = gr.Markdown(elem_id="model-info")
                        refresh = gr.Button("Refresh", size="sm", elem_id="model-refresh")

                    with gr.Tab("API", id="api", elem_id="tab-api"):
                        api_intro = gr.Markdown(elem_id="api-intro")
                        curl_chat = gr.Code(language="shell", label="curl: chat completion",
                                            interactive=False, elem_id="api-curl")
                        openai_py = gr.Code(language="python", label="Python: openai client",
                                            interactive=False, elem_id="api-openai")
                        curl_generate = gr.Code(language="shell", label="curl: raw completion, "
                                                "streamed", interactive=False,
                                                elem_id="api-generate")

            with gr.Column(scale=1, min_width=240):
                gr.Markdown("### Sampling")
                temperature, top_p, top_k, max_tokens = _sampling_sliders()

        sampling = [temperature, top_p, top_k, max_tokens]
        # While the model loads, poll every 2 s; the tick stops itself once it is ready.
        poll = gr.Timer(2.0, active=False)

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
                gr.Timer(active=loading),
            )

        page_outputs = [status, banner, model_md, api_intro, curl_chat, openai_py, curl_generate,
                        *sampling, poll]
        demo.load(load, None, page_outputs, queue=False, api_visibility="private")
        poll.tick(load, None, page_outputs, queue=False, api_visibility="private")
        for trigger in (refresh.click, model_tab.select):
            trigger(playground.model_report, None, model_md, queue=False,
                    api_visibility="private")

        # -- chat ---------------------------------------------------------------------------------
        def add_user_message(text: str, history: list):
            if not (text or "").strip():
                return gr.update(), history
            return "", list(history or []) + [{"role": "user", "content": text}]

        def pick_example(evt: gr.SelectData, history: list):
            return list(history or []) + [{"role": "user", "content": content_text(evt.value)}]

        chat_inputs = [chatbot, system_prompt, *sampling]
        chat = dict(fn=playground.chat, inputs=chat_inputs, outputs=chatbot,
                    concurrency_limit=None, api_visibility="private")
        quick = dict(queue=False, api_visibility="private")

        runs = [
            message.submit(add_user_message, [message, chatbot], [message, chatbot],
                           **quick).then(**chat),
            send.click(add_user_message, [message, chatbot], [message, chatbot],
                       **quick).then(**chat),
            chatbot.example_select(pick_example, [chatbot], chatbot, **quick).then(**chat),
        ]
        for trigger in (retry.click, chatbot.retry):
            runs.append(trigger(for_retry, chatbot, chatbot, **quick).then(**chat))
        stop.click(None, None, None, cancels=runs, **quick)
        for trigger in (undo.click, chatbot.undo):
            trigger(for_undo, chatbot, [chatbot, message], cancels=runs, **quick)
        clear.click(lambda: [], None, chatbot, cancels=runs, **quick)
        chatbot.clear(None, None, None, cancels=runs, **quick)

        # -- completion ---------------------------------------------------------------------------
        completion = run.click(playground.complete, [prompt, *sampling],
                               [output, completion_stats], concurrency_limit=None,
                               api_visibility="private")
        run_stop.click(None, None, None, cancels=[completion], **quick)
    return demo
