"""The API app factory: `create_api(engine, api_key=...)` builds the FastAPI sub-app that app.py
mounts at /v1 and at /api/v1 (one app, so one OpenAPI document, served from either base path with
that path as its server). It registers the routers, every exception handler, the body size cap,
CORS (for the origins given), the request log with its ids, and the reference pages `/docs`
(Swagger UI) and `/redoc`, whose assets it serves itself (`api.docs`), so they work with no
internet. Nothing else: the engine is created, started and shut down by the root app's lifespan,
never here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from api import chat, completions, generate, service, tokenize
from api.body_limit import MAX_BODY_BYTES, BodySizeLimit
from api.deps import require_api_key
from api.docs import DOCS_ASSETS, install_docs
from api.errors import install_error_handlers
from api.protocol import ChatCompletionChunk, CompletionChunk, GenerateChunk
from api.request_log import REQUEST_ID_HEADER, RequestLogMiddleware, record_finished

# Streamed bodies are documented under `text/event-stream`; FastAPI only collects the schemas of
# JSON bodies, so these are added to the document's components by hand.
STREAM_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionChunk, CompletionChunk, GenerateChunk)

API_TITLE = "nf4serve API"
API_VERSION = "1.0.0"
API_DESCRIPTION = """\
Qwen3 in bitsandbytes 4-bit, behind OpenAI's API: `/chat/completions`, the legacy `/completions` and
`/models` (the official `openai` clients work with `base_url` set to this API's URL, `.../v1`), plus
`/generate` (raw text), `/tokenize` and `/detokenize` (count tokens against the context window) and
the service endpoints (`/model/info`, `/health`). The same API answers under `/v1` and `/api/v1`.

Errors always have OpenAI's body `{"error": {"message", "type", "param", "code"}}`. When the server has
an API key, send it as `Authorization: Bearer <key>` or `X-API-Key: <key>` (`/health` never
needs it).
"""


def create_api(
    engine: Any, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
    cors_allow_origins: Sequence[str] = (), context_error_status: int = 413,
) -> FastAPI:
    """The API app, serving `engine` (an `inference.Engine`, started or not). Browsers on
    `cors_allow_origins` (`*`: any) may call it; other origins get no CORS headers. A prompt over
    the context window is answered `context_error_status` (413, or OpenAI's 400)."""
    app = FastAPIOffline(  # FastAPI, with Swagger UI's and ReDoc's files mounted at DOCS_ASSETS
        docs_url=None,
        redoc_url=None,
        title=API_TITLE,
        version=API_VERSION,
        description=API_DESCRIPTION,
        static_url=DOCS_ASSETS,
        openapi_tags=[
            {"name": "chat", "description": "OpenAI-compatible chat completions."},
            {"name": "completions", "description": "OpenAI's legacy completions (raw text)."},
            {"name": "generate", "description": "Raw-text completion."},
            {"name": "tokenize", "description": "Count tokens: text or chat to ids, and back."},
            {"name": "models", "description": "The served model."},
            {"name": "health", "description": "Readiness; no API key needed."},
        ],
    )
    app.state.engine = engine
    app.state.api_key = api_key or None
    app.state.created = int(time.time())
    # Without a key there is nothing to check, and the OpenAPI document declares no security.
    secured = [Depends(require_api_key)] if app.state.api_key else []
    for router in (chat.router, completions.router, generate.router, tokenize.router,
                   service.router):
        app.include_router(router, dependencies=secured)
    app.include_router(service.health_router)
    install_docs(app)
    install_error_handlers(app, context_error_status)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if cors_allow_origins:  # outside the size cap and the key check: preflights carry no body
        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_allow_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(RequestLogMiddleware)  # the outermost: every answer gets its id
    engine.add_listener(record_finished)
    _document_stream_models(app)
    return app


def _document_stream_models(app: FastAPI) -> None:
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = default_openapi()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in STREAM_MODELS:
                schema = model.model_json_schema(
                    ref_template="#/components/schemas/{model}", mode="serialization"
                )
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
