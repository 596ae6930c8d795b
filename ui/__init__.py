"""The Gradio playground, mounted at `/` of the server's FastAPI app.

Gradio is imported only inside `mount_ui`, so the rest of the server (and `import ui.conversation`)
works where gradio is not installed; `gradio_available()` tells the app whether to try. With an API
key the playground sits behind Gradio's login, the key as the password (`ui.auth`).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from fastapi import FastAPI
from starlette.routing import Mount

# Nothing leaves the machine: Gradio's usage analytics and the Hub's telemetry stay off.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}


def gradio_available() -> bool:
    return importlib.util.find_spec("gradio") is not None


def mount_ui(app: FastAPI, engine: Any, settings: Any) -> None:
    """Build the playground on `engine` and mount it at `/` of `app`."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    from .auth import LOGIN_MESSAGE, MAX_UPLOAD_BYTES, PlaygroundGuard, key_login
    from .blocks import build_blocks
    from .playground import Playground
    from .theme import CSS, build_theme

    playground = Playground(
        engine,
        api_key=bool(settings.api_key),
        root_path=settings.root_path,
        host=f"{settings.host}:{settings.port}",
    )
    blocks = build_blocks(playground)
    # The engine schedules fairly and queues the excess itself, so Gradio must not serialise users.
    blocks.queue(default_concurrency_limit=None)
    # With a key, Gradio's own login asks for it; ui.auth explains what the guard adds.
    login = {}
    if settings.api_key:
        login = dict(auth=key_login(settings.api_key), auth_message=LOGIN_MESSAGE)
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        theme=build_theme(),
        css=CSS,
        footer_links=["settings"],
        run_history=False,
        ssr_mode=False,
        show_error=False,
        server_name=settings.host,
        server_port=settings.port,
        max_file_size=MAX_UPLOAD_BYTES,  # the playground uploads nothing
        **login,
    )
    gradio_app = _mounted_gradio_app(app, gr.routes.App)
    gradio_app.add_middleware(PlaygroundGuard,
                              gradio_app=gradio_app if settings.api_key else None)


def _mounted_gradio_app(app: FastAPI, app_type: type) -> Any:
    """The Gradio app that `gr.mount_gradio_app` mounted last on `app`."""
    for route in reversed(app.routes):
        if isinstance(route, Mount) and isinstance(route.app, app_type):
            return route.app
    raise RuntimeError("the Gradio app is not mounted")
