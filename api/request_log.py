"""Request ids and the request log: one `X-Request-Id` on every answer of the API and one log line
per finished request (logger `nf4serve.requests`).

`RequestLogMiddleware` is the API app's outermost middleware, so errors, CORS preflights and body
size refusals carry the id too. A valid incoming `X-Request-Id` (1-128 characters of
`[A-Za-z0-9._-]`) is echoed; otherwise a new one is made. Routes may read it as
`request.state.request_id`.

The log line's tokens, time to first token and finish reason come from the engine: `record_finished`
is an engine listener, and the engine calls it in the context of whoever submitted the request, so
a `ContextVar` set by the middleware tells it which HTTP request a `FinishedRequest` belongs to.
The engine calls listeners before the last chunk is delivered, so a request that finished has its
records when its line is written. A client that left is logged as `cancelled`, at INFO.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import from_engine_error
from inference.types import FinishedRequest

logger = logging.getLogger("nf4serve.requests")

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
CLIENT_CLOSED = 499  # nginx's status for a request whose client left before the answer
QUIET_PATHS = ("/health",)  # probes: logged at DEBUG, so that they do not drown the log


def request_id(given: str | None) -> str:
    """The id of a request: `given` when it is a valid id, else a new one."""
    if given is not None and _VALID_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


@dataclass
class RequestLog:
    """One HTTP request while it is served: what its log line will say."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    complete: bool = False  # the last byte of the answer was sent
    records: list[FinishedRequest] = field(default_factory=list)

    @property
    def finish_reason(self) -> str | None:
        if self.status == CLIENT_CLOSED or (self.status is not None and not self.complete):
            return "cancelled"  # the client left before it had the whole answer
        reasons = list(dict.fromkeys(r.finish_reason for r in self.records))
        return ",".join(reasons) or None

    def fields(self) -> dict[str, Any]:
        """The line's fields: what JSON logs show as keys (choices of one request share a prompt)."""
        ttfts = [r.time_to_first_token_s for r in self.records if r.time_to_first_token_s is not None]
        return {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.path,
            "status": self.status if self.status is not None else CLIENT_CLOSED,
            "finish_reason": self.finish_reason,
            "prompt_tokens": max((r.prompt_tokens for r in self.records), default=None),
            "completion_tokens": sum(r.completion_tokens for r in self.records)
            if self.records else None,
            "time_to_first_token_s": round(min(ttfts), 4) if ttfts else None,
            "total_s": round(time.perf_counter() - self.started, 4),
        }

    def write(self) -> None:
        fields = self.fields()
        status = fields["status"]
        if self.path.endswith(QUIET_PATHS):
            level = logging.DEBUG
        else:
            level = logging.WARNING if status >= 500 else logging.INFO
        text = f"{self.request_id} {self.method} {self.path} {status}"
        for key, label in (("finish_reason", ""), ("prompt_tokens", "prompt_tokens="),
                           ("completion_tokens", "completion_tokens="),
                           ("time_to_first_token_s", "ttft_s="), ("total_s", "total_s=")):
            if fields[key] is not None:
                text += f" {label}{fields[key]}"
        logger.log(level, text, extra=fields)


_current: ContextVar[RequestLog | None] = ContextVar("nf4serve_request_log", default=None)


def record_finished(record: FinishedRequest) -> None:
    """Engine listener: file an ended generation under the HTTP request that submitted it."""
    entry = _current.get()
    if entry is not None:
        entry.records.append(record)


class RequestLogMiddleware:
    """ASGI middleware: a request id on every answer and one log line per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                      if k == b"x-request-id"), None)
        entry = RequestLog(request_id(given), scope["method"], scope["path"])
        scope.setdefault("state", {})["request_id"] = entry.request_id
        header = (REQUEST_ID_HEADER.lower().encode(), entry.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                entry.complete = True
            await send(message)

        token = _current.set(entry)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if entry.status is not None:  # the answer had begun (a stream): nothing more to send
                raise
            # Answered here rather than by Starlette's outermost handler, so the 500 has the id.
            await from_engine_error(exc).response()(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            entry.write()
