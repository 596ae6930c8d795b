"""The API app factory: `create_api(engine, api_key=...)` builds the FastAPI sub-app that app.py
mounts at /api/v1. It registers the routers, every exception handler, the body size cap, CORS
(for the origins given) and the request log with its ids, and nothing else: the engine is created,
started and shut down by the root app's lifespan, never here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel

from api import chat, generate, service
from api.body_limit import MAX_BODY_BYTES, BodySizeLimit
from api.deps import require_api_key
from api.errors import install_error_handlers
from api.protocol import ChatCompletionChunk, GenerateChunk
from api.request_log import REQUEST_ID_HEADER, RequestLogMiddleware, record_finished

# Streamed bodies are documented under `text/event-stream`; FastAPI only collects the schemas of
# JSON bodies, so these are added to the document's components by hand.
STREAM_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionChunk, GenerateChunk)

API_TITLE = "nf4serve API"
API_VERSION = "1.0.0"
API_DESCRIPTION = """\
Qwen3 in bitsandbytes 4-bit, served three ways: `/chat/completions` (OpenAI-compatible: the official
`openai` clients work with `base_url` set to this API's URL), `/generate` (raw text) and the service
endpoints (`/models`, `/model/info`, `/health`).

Errors always have OpenAI's body `{"error": {"message", "type", "param", "code"}}`. When the server has
an API key, send it as `Authorization: Bearer <key>` or `X-API-Key: <key>` (`/health` never
needs it).
"""


def create_api(
    engine: Any, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
    cors_allow_origins: Sequence[str] = (),
) -> FastAPI:
    """The /api/v1 app, serving `engine` (an `inference.Engine`, started or not). Browsers on
    `cors_allow_origins` (`*`: any) may call it; other origins get no CORS headers."""
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description=API_DESCRIPTION,
        openapi_tags=[
            {"name": "chat", "description": "OpenAI-compatible chat completions."},
            {"name": "generate", "description": "Raw-text completion."},
            {"name": "models", "description": "The served model."},
            {"name": "health", "description": "Readiness; no API key needed."},
        ],
    )
    app.state.engine = engine
    app.state.api_key = api_key or None
    app.state.created = int(time.time())
    # Without a key there is nothing to check, and the OpenAPI document declares no security.
    secured = [Depends(require_api_key)] if app.state.api_key else []
    app.include_router(chat.router, dependencies=secured)
    app.include_router(generate.router, dependencies=secured)
    app.include_router(service.router, dependencies=secured)
    app.include_router(service.health_router)
    install_error_handlers(app)
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
