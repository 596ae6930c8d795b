"""The one server: the REST API at `/api/v1` and the Gradio playground at `/`, on one shared engine.

`create_app(settings)` wires them; the model loads in the lifespan, never at import. `python app.py
[flags]` runs it with uvicorn (`--help` lists every flag; each is also an `NF4SERVE_*` variable).
Without gradio, or with `--no-ui`, the API is served alone. SIGTERM (or Ctrl+C) drains the server
within `--shutdown-timeout` seconds (`DrainingServer`), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from logs import configure_logging
from settings import Settings

logger = logging.getLogger("nf4serve")
STARTUP_FAILURE = 3  # uvicorn's exit status when the app could not start


def _mount_api(app: FastAPI, engine: Any, settings: Settings) -> None:
    try:
        from api import create_api
    except ImportError as exc:
        if exc.name != "api":  # a dependency of api/ is missing: that is a real error
            raise
        logger.error("The REST API (api.create_api) is not available; serving without /api/v1.")
        return
    origins = [origin.strip() for origin in settings.cors_allow_origins.split(",") if origin.strip()]
    app.mount("/api/v1", create_api(engine, api_key=settings.api_key, cors_allow_origins=origins))


def _mount_metrics(app: FastAPI, engine: Any) -> None:
    """Prometheus at /metrics: on the root app, beside the API, and like health without a key."""
    from api.metrics import Metrics

    app.state.metrics = Metrics(engine)
    app.add_route("/metrics", app.state.metrics.endpoint, methods=["GET"], include_in_schema=False)


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
    if settings.metrics:
        _mount_metrics(app, engine)

    from ui import gradio_available

    if not settings.ui:
        logger.info("--no-ui: serving the API alone.")
    elif not gradio_available():
        logger.warning("gradio is not installed: serving the API alone.")
    else:
        from ui import mount_ui

        mount_ui(app, engine, settings)
    return app


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a bounded drain. The first SIGTERM or SIGINT starts `engine.drain()`:
    the server keeps listening but answers new requests 503 (`server_shutting_down`), while running
    ones have `drain_timeout` seconds to finish; those left then end with an error event and
    `[DONE]`. Only then does uvicorn's own shutdown start (it waits for the connections, which
    are closing). A second signal ends the drain at once; one more stops waiting for connections.
    uvicorn re-raises a caught signal when it is done, which would make the exit status -15; a
    drained server exits 0."""

    GRACE_S = 5.0  # after the drain: for the last events to go out before connections are cut

    def __init__(self, config: uvicorn.Config, engine: Any, drain_timeout: float):
        super().__init__(config)
        config.timeout_graceful_shutdown = self.GRACE_S
        self.engine = engine
        self.drain_timeout = drain_timeout
        self.signals = 0
        self._drain: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        # A signal handler: count only; on_tick acts on the loop within 0.1 s.
        self.signals += 1
        if self.should_exit or self.signals > 2:
            self.should_exit = self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.signals and self._drain is None:
            logger.info("Shutting down: new requests are refused; running ones have %g s to "
                        "finish (a second signal ends them now).", self.drain_timeout)
            self._drain = asyncio.create_task(self.engine.drain(self.drain_timeout))
        if self._drain is not None:
            if self.signals > 1 and not self._drain.done():
                self._drain.cancel()  # the drain ends its requests as it stops
            if self._drain.done():
                if not self._drain.cancelled() and self._drain.exception() is not None:
                    logger.error("The drain failed", exc_info=self._drain.exception())
                self.should_exit = True
        return await super().on_tick(counter)


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings.from_cli(argv)
    except ValidationError as exc:  # a readable message, not a traceback
        sys.exit(f"app.py: invalid settings\n{exc}")
    uvicorn_logging = configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    ui = "" if settings.ui else " (API only)"
    logger.info("Serving on http://%s:%d%s", settings.host, settings.port, ui)
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, root_path=settings.root_path,
                            **uvicorn_logging)
    server = DrainingServer(config, app.state.engine, settings.shutdown_timeout)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main(sys.argv[1:])
