"""Every error of /api/v1, in one place: typed engine errors and FastAPI's own errors mapped to an
HTTP status and OpenAI's body `{"error": {"message", "type", "param", "code"}}`.

- 400 `invalid_request_error` for invalid requests, malformed JSON included (FastAPI's 422 becomes
  400), with `param` naming the offending parameter (`messages[0].content`, `temperature`, ...);
  a value of the wrong type (`"stream": "yes"`: types are strict) is `invalid_type`, worded as
  OpenAI words it.
- 401 for a missing or wrong API key; 404 for unknown models, and for unknown paths with a message
  that names the API's base path (`unknown_path`).
- 413 `context_length_exceeded` when the prompt does not fit the context window (400, as OpenAI
  answers it, when the app is made with `context_error_status=400`: `--context-error-status`),
  and `request_too_large` for a body over the size cap (`api.body_limit`).
- 500 `server_error` when generation fails; only that request fails.
- 503 with `Retry-After` while the model loads, after it failed to load (`model_not_loaded`), when
  saturated (`server_overloaded`, with the scheduler's estimate of the wait), and while the server
  shuts down (`server_shutting_down`): a new request is refused at once, and a generation still
  running when the drain ends is cancelled by the server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.protocol import ErrorDetail, ErrorResponse
from inference.errors import (
    ContextLengthError,
    EngineError,
    EngineOverloadedError,
    EngineStoppingError,
    GenerationError,
    InvalidRequestError,
    ModelNotLoadedError,
)

logger = logging.getLogger(__name__)

LOADING_RETRY_AFTER_S = 5
FAILED_RETRY_AFTER_S = 30
SHUTDOWN_RETRY_AFTER_S = 5  # long enough for a restarted server or another replica to take over


class APIError(Exception):
    """An error answer: status, OpenAI error fields and extra headers (`Retry-After`)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002  (OpenAI's field name)
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return ErrorResponse(error=self.detail).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def unknown_path(method: str, path: str, base: str) -> APIError:
    """404 for a path that is no endpoint, pointing to the API's base path `base`."""
    return APIError(404, f"Unknown path: {method} {path}. This server's OpenAI-compatible API is "
                    f"at {base} (e.g. POST {base}/chat/completions, GET {base}/models); its "
                    f"reference is at {base}/docs.", code="not_found")


def from_engine_error(exc: Exception, prompt_param: str | None = None) -> APIError:
    """The API error for an exception raised by the engine (or anything else: a 500)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextLengthError):
        return APIError(413, str(exc), param=prompt_param, code=CONTEXT_LENGTH_EXCEEDED)
    if isinstance(exc, InvalidRequestError):
        return APIError(400, str(exc), param=exc.param)
    if isinstance(exc, EngineOverloadedError):
        return APIError(503, str(exc), type="server_error", code="server_overloaded",
                        headers={"Retry-After": str(max(1, exc.retry_after))})
    if isinstance(exc, EngineStoppingError):
        return APIError(503, str(exc), type="server_error", code="server_shutting_down",
                        headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER_S)})
    if isinstance(exc, ModelNotLoadedError):
        retry = FAILED_RETRY_AFTER_S if exc.state == "error" else LOADING_RETRY_AFTER_S
        return APIError(503, str(exc), type="server_error", code="model_not_loaded",
                        headers={"Retry-After": str(retry)})
    if isinstance(exc, GenerationError):
        return APIError(500, f"Generation failed: {exc}", type="server_error",
                        code="generation_failed")
    if isinstance(exc, EngineError):
        return APIError(500, str(exc), type="server_error")
    logger.exception("Unexpected error while serving a request", exc_info=exc)
    return APIError(500, "The server had an error while processing this request.",
                    type="server_error")


@contextmanager
def engine_errors(prompt_param: str) -> Iterator[None]:
    """Re-raise engine errors as API errors; `prompt_param` is named when the prompt is too long."""
    try:
        yield
    except (EngineError, APIError) as exc:
        raise from_engine_error(exc, prompt_param) from exc


def generation_failed(message: str | None) -> APIError:
    """A request whose stream ended with finish_reason "error"."""
    return APIError(500, f"Generation failed: {message or 'unknown error'}", type="server_error",
                    code="generation_failed")


def generation_cancelled(message: str | None) -> APIError:
    """A request whose stream the server ended with finish_reason "cancelled": only a shutdown
    does that (its drain timed out, or a second signal came).

    A cancel the client caused never gets here: its disconnect ends the request first."""
    reason = message or "the server is shutting down"
    return APIError(503, f"The generation was cancelled before it finished: {reason}. Retry.",
                    type="server_error", code="server_shutting_down",
                    headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER_S)})


def check_finished(finish_reason: str | None, message: str | None) -> None:
    """Raise the API error for a generation that ended without an answer (failed or cancelled)."""
    if finish_reason == "error":
        raise generation_failed(message)
    if finish_reason == "cancelled":
        raise generation_cancelled(message)


def validation_param(error: dict[str, Any], body: Any) -> str | None:
    """The request parameter a pydantic error is about, as `messages[0].content`.

    Pydantic's `loc` also holds union branches and discriminator tags (`str`, `user`); they are
    recognised by not being in the request body, and left out.
    """
    loc = list(error.get("loc", ()))
    if loc and loc[0] == "body":
        loc = loc[1:]
    path, data = "", body
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data):
            path, data = f"{path}[{part}]", data[part]
        elif isinstance(part, str) and isinstance(data, dict) and part in data:
            path, data = f"{path}.{part}" if path else part, data[part]
        elif last and isinstance(part, str) and error.get("type") == "missing":
            path = f"{path}.{part}" if path else part
    return path or None


# pydantic's type errors, with the JSON type each expects in OpenAI's words.
EXPECTED_TYPES = {
    "bool_type": "a boolean", "int_type": "an integer", "float_type": "a number",
    "string_type": "a string", "list_type": "an array", "dict_type": "an object",
    "model_type": "an object", "model_attributes_type": "an object",
}


def json_type(value: Any) -> str:
    """The JSON type of a parsed body value, as OpenAI's type errors name it."""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a decimal number"),
                       (str, "a string"), (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    # Of a union's alternatives, the error that got deepest into the body says the most.
    first = max(errors, key=lambda e: len(e.get("loc", ())), default={})
    kind = first.get("type", "")
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return APIError(400, f"The request body is not valid JSON ({reason}).".replace(" ()", ""),
                        code="invalid_json")
    if tuple(first.get("loc", ())) == ("body",):  # no body, or not a JSON object
        return APIError(400, "The request body must be a JSON object, sent with "
                        "'Content-Type: application/json'.", code="invalid_json")
    body = getattr(exc, "body", None)
    param = validation_param(first, body)
    message, code = str(first.get("msg", "Invalid request")), "invalid_value"
    if param and kind in EXPECTED_TYPES:
        message, code = (f"Invalid type for '{param}': expected {EXPECTED_TYPES[kind]}, but got "
                         f"{json_type(first.get('input'))} instead."), "invalid_type"
    elif param:
        message = f"Invalid value for '{param}': {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return APIError(400, message, param=param, code=code)


def install_error_handlers(app: FastAPI, context_error_status: int = 413) -> None:
    """Register every exception handler of the API app; a prompt over the context window is
    answered with `context_error_status` (413, or OpenAI's 400)."""

    def answer(error: APIError) -> JSONResponse:
        if error.detail.code == CONTEXT_LENGTH_EXCEEDED:
            error.status_code = context_error_status
        return error.response()

    async def on_api_error(request: Request, exc: APIError) -> JSONResponse:
        return answer(exc)

    async def on_engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return answer(from_engine_error(exc))

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":  # no such route (not a model)
            base = request.scope.get("root_path", "").rstrip("/")
            return unknown_path(request.method, request.url.path, base).response()
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        error = APIError(exc.status_code, str(exc.detail), code=code,
                         headers=dict(exc.headers or {}))
        return error.response()

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        return from_engine_error(exc).response()

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(EngineError, on_engine_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
