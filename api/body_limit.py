"""A cap on the size of request bodies: anything larger is answered 413 `request_too_large` before
FastAPI reads it as JSON, so one client cannot make the server parse (and hold) gigabytes.

A pure ASGI middleware: a declared `Content-Length` over the cap is refused at once; a body without
one (chunked) is read up to the cap and refused as soon as it passes it. A body within the cap is
handed on to the app unchanged, and later messages (the client's disconnect) still get through.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import APIError

logger = logging.getLogger(__name__)

# A prompt of the whole 262,144-token context window is about 1-2 MB of JSON; 16 MiB leaves room
# for long conversations with tools and schemas while keeping one request's memory bounded.
MAX_BODY_BYTES = 16 * 1024 * 1024


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than this server accepts ({limit} bytes).",
                    code="request_too_large")


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        body, pending = bytearray(), []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                pending.append(message)
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        pending.insert(0, {"type": "http.request", "body": bytes(body), "more_body": False})

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        logger.warning("Refused a request body over %d bytes: %s", self.max_bytes, scope["path"])
        await too_large(self.max_bytes).response()(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
