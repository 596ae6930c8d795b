"""The one server: the REST API at `/api/v1` and the Gradio playground at `/`, on one shared engine.

`create_app(settings)` wires them; the model loads in the lifespan, never at import. `python app.py
[flags]` runs it with uvicorn (`--help` lists every flag; each is also an `NF4SERVE_*` variable).
Without gradio, or with `--no-ui`, the API is served alone.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from settings import Settings

logger = logging.getLogger("nf4serve")


def _mount_api(app: FastAPI, engine: Any, settings: Settings) -> None:
    try:
        from api import create_api
    except ImportError as exc:
        if exc.name != "api":  # a dependency of api/ is missing: that is a real error
            raise
        logger.error("The REST API (api.create_api) is not available; serving without /api/v1.")
        return
    app.mount("/api/v1", create_api(engine, api_key=settings.api_key))


async def _start(engine: Any, settings: Settings) -> None:
    await engine.start()
    if engine.state == "error":
        logger.error("The model could not be loaded: %s", engine.error)
        if not settings.fallback:
            raise RuntimeError(f"--no-fallback: the model could not be loaded: {engine.error}")
    elif engine.is_fallback:
        # The engine explains why in its own log; this names what the user will see.
        logger.warning("FALLBACK: %s could not be loaded; the playground and the API serve the "
                       "built-in test model, whose output is random noise.", settings.model)


def create_app(settings: Settings, engine: Any = None) -> FastAPI:
    """The root app. Without `engine`, it creates one, loads it at startup and shuts it down at exit;
    an `engine` passed in is used as it is (its owner starts and stops it)."""
    owned = engine is None
    if owned:
        from inference import Engine

        engine = Engine(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        task = None
        if owned and not settings.fallback:
            await _start(engine, settings)  # fatal failure: uvicorn exits with an error
        elif owned:
            # Load in the background: /api/v1/health answers 503 "loading" until it is done.
            task = asyncio.create_task(_start(engine, settings))
        try:
            yield
        finally:
            if task is not None and not task.done():
                await asyncio.wait([task])
            if owned:
                await engine.shutdown()

    app = FastAPI(title="nf4serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.settings = settings
    _mount_api(app, engine, settings)

    from ui import gradio_available

    if not settings.ui:
        logger.info("--no-ui: serving the API alone.")
    elif not gradio_available():
        logger.warning("gradio is not installed: serving the API alone.")
    else:
        from ui import mount_ui

        mount_ui(app, engine, settings)
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    try:
        settings = Settings.from_cli(argv)
    except ValidationError as exc:  # a readable message, not a traceback
        sys.exit(f"app.py: invalid settings\n{exc}")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    ui = "" if settings.ui else " (API only)"
    logger.info("Serving on http://%s:%d%s", settings.host, settings.port, ui)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                root_path=settings.root_path)


if __name__ == "__main__":
    main(sys.argv[1:])
