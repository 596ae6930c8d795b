"""The one server: the REST API at `/v1` (and `/api/v1`) and the Gradio playground at `/`, on one
shared engine.

`create_app(settings)` wires them; the model loads in the lifespan, never at import. `python app.py
[flags]` runs it with uvicorn (`--help` lists every flag; each is also an `NF4SERVE_*` variable).
Without gradio, or with `--no-ui`, the API is served alone. SIGTERM (or Ctrl+C) drains the server
within `--shutdown-timeout` seconds (`DrainingServer`), and the process exits 0.

Loading: when the built-in model may stand in (no model named, fallback on), the model loads in the
background and `/v1/health` answers "loading" meanwhile; otherwise (a model named with `--model`, or
`--no-fallback`) it loads before the server listens, and if it cannot be loaded the process exits
with status 3, the cause logged once and no traceback. The start-up log ends with one line that
says the server is ready and where: playground, API base URL and docs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.config import fallback_allowed
from logs import configure_logging
from settings import Settings

logger = logging.getLogger("nf4serve")
STARTUP_FAILURE = 3  # uvicorn's exit status when the app could not start
API_PREFIXES = ("/v1", "/api/v1")  # one API app at both: OpenAI clients' base URLs end in /v1
# OpenAI's endpoints asked for without the API's prefix (a base URL missing its /v1): a 404 that
# says where the API is, rather than the playground's.
BARE_API_PATHS = ("/chat/completions", "/completions", "/models", "/embeddings", "/tokenize",
                  "/detokenize")


class StartupFailure(RuntimeError):
    """The model that must be served could not be loaded; its cause is already in the log."""


def _mount_api(app: FastAPI, engine: Any, settings: Settings) -> None:
    try:
        from api import create_api
        from api.errors import unknown_path
    except ImportError as exc:
        if exc.name != "api":  # a dependency of api/ is missing: that is a real error
            raise
        logger.error("The REST API (api.create_api) is not available; serving without /v1.")
        return
    origins = [origin.strip() for origin in settings.cors_allow_origins.split(",") if origin.strip()]
    api = create_api(engine, api_key=settings.api_key, cors_allow_origins=origins,
                     context_error_status=settings.context_error_status)
    for prefix in API_PREFIXES:
        app.mount(prefix, api)

    async def not_here(request: Request, exc: Exception | None = None) -> Any:
        base = request.scope.get("root_path", "").rstrip("/") + API_PREFIXES[0]
        return unknown_path(request.method, request.url.path, base).response()

    for path in BARE_API_PATHS:
        app.add_route(path, not_here, methods=["GET", "POST"], include_in_schema=False)
    app.add_exception_handler(404, not_here)  # without the playground, every unknown path


def _mount_metrics(app: FastAPI, engine: Any) -> None:
    """Prometheus at /metrics: on the root app, beside the API, and like health without a key."""
    from api.metrics import Metrics

    app.state.metrics = Metrics(engine)
    app.add_route("/metrics", app.state.metrics.endpoint, methods=["GET"], include_in_schema=False)


async def _start(engine: Any, settings: Settings) -> None:
    """Load the model. The engine logs why when it cannot; a model that must be served (no
    fallback) then stops the start-up with `StartupFailure`."""
    await engine.start()
    if engine.state == "error":
        if not fallback_allowed(settings):
            raise StartupFailure(engine.error)
        logger.error("Serving without a model: /v1/health answers 503 until it is restarted.")
    elif engine.is_fallback:
        # The engine explains why in its own log; this names what the user will see.
        logger.warning("FALLBACK: %s could not be loaded; the playground and the API serve the "
                       "built-in test model, whose output is random noise.", settings.model)


class QuietStartupFailure:
    """ASGI middleware: a start-up that failed with `StartupFailure` reaches uvicorn without the
    traceback Starlette attaches, since the engine has logged the cause already (once is enough)."""

    def __init__(self, app: ASGIApp, state: Any):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_quietly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.state.startup_failure:
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, send_quietly)


def create_app(settings: Settings, engine: Any = None) -> FastAPI:
    """The root app. Without `engine`, it creates one, loads it at startup and shuts it down at exit;
    an `engine` passed in is used as it is (its owner starts and stops it)."""
    owned = engine is None
    if owned:
        from inference import Engine

        engine = Engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        if owned and not fallback_allowed(settings):
            try:
                await _start(engine, settings)  # before the server listens: failure is fatal
            except StartupFailure as exc:
                app.state.startup_failure = str(exc)
                why = ("--no-fallback" if not settings.fallback else
                       "a model named with --model never falls back to the built-in one")
                logger.error("nf4serve did not start: the model could not be loaded (above); %s.",
                             why)
                await engine.shutdown()
                raise
        elif owned:
            # Load in the background: /v1/health answers 503 "loading" until it is done.
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
    app.state.startup_failure = None
    app.add_middleware(QuietStartupFailure, state=app.state)
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


def ready_line(engine: Any, settings: Settings, port: int) -> tuple[int, str]:
    """The start-up log's last line (level, text): whether the server serves, and where."""
    url = settings.url(port)
    playground = f"playground {url}/" if settings.ui else "no playground (--no-ui)"
    where = (f"{playground} · API {url}{API_PREFIXES[0]} (also {url}{API_PREFIXES[1]}) · "
             f"docs {url}{API_PREFIXES[0]}/docs")
    if engine.state != "ready":
        return logging.ERROR, f"nf4serve is up without a model (see above): {where}"
    if engine.is_fallback:
        return logging.WARNING, (f"nf4serve is ready, serving the built-in model (FALLBACK: its "
                                 f"output is noise): {where}")
    return logging.INFO, f"nf4serve is ready, serving {engine.model_name}: {where}"


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a bounded drain. The first SIGTERM or SIGINT starts `engine.drain()`:
    the server keeps listening but answers new requests 503 (`server_shutting_down`), while running
    ones have `drain_timeout` seconds to finish; those left then end with an error event and
    `[DONE]`. Only then does uvicorn's own shutdown start (it waits for the connections, which
    are closing). A second signal ends the drain at once; one more stops waiting for connections.
    uvicorn re-raises a caught signal when it is done, which would make the exit status -15; a
    drained server exits 0."""

    GRACE_S = 5.0  # after the drain: for the last events to go out before connections are cut

    def __init__(self, config: uvicorn.Config, engine: Any, drain_timeout: float,
                 on_ready: Callable[[int], None] | None = None):
        super().__init__(config)
        config.timeout_graceful_shutdown = self.GRACE_S
        self.engine = engine
        self.drain_timeout = drain_timeout
        self.on_ready = on_ready  # called once with the bound port when the model has loaded
        self.signals = 0
        self._drain: asyncio.Task | None = None

    def _announce_when_loaded(self) -> None:
        state = self.engine.state
        if self.on_ready is None or state == "loading":
            return
        on_ready, self.on_ready = self.on_ready, None
        if state in ("ready", "error"):  # not once a signal came first: the drain says so
            sockets = [sock for server in self.servers for sock in server.sockets]
            on_ready(sockets[0].getsockname()[1] if sockets else self.config.port)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # A signal handler: count only; on_tick acts on the loop within 0.1 s.
        self.signals += 1
        if self.should_exit or self.signals > 2:
            self.should_exit = self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        self._announce_when_loaded()
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


def settle_heap() -> None:
    """Once the server is up: collect, then freeze what is alive (model, tokenizer, app, libraries:
    about half a million objects) out of the collector's reach. A full collection would otherwise
    scan them all, holding the GIL for a quarter of a second and stalling every stream; now it
    scans only what serving allocated."""
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings.from_cli(argv)
    except ValidationError as exc:  # a readable message, not a traceback
        sys.exit(f"app.py: invalid settings\n{exc}")
    uvicorn_logging = configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    logger.info("Starting nf4serve on %s with %s", settings.url(settings.port), settings.model)
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, root_path=settings.root_path,
                            **uvicorn_logging)
    engine = app.state.engine

    def announce(port: int) -> None:
        settle_heap()
        logger.log(*ready_line(engine, settings, port))

    server = DrainingServer(config, engine, settings.shutdown_timeout, on_ready=announce)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main(sys.argv[1:])
