"""The playground behind the server's API key, and its uploads bounded.

With `--api-key`, Gradio's own login asks for the key (as the password; the user name is not
checked) and sets a session cookie. Gradio checks that login on the routes that run events
(`/gradio_api/queue/join`, `/gradio_api/call/...`, `/gradio_api/upload`), not on all of them
(`/cancel`, `/heartbeat`, `/reset`, `/stream`...), so `PlaygroundGuard` refuses every
`/gradio_api/` route to a caller without that session. The page itself, its static files and the
login stay open: they are how a browser gets in. Without a key the guard checks no session.

The playground has no upload, yet Gradio serves `/gradio_api/upload` (up to 1,000 files a
request): the guard caps a whole upload request at `MAX_UPLOAD_BYTES`, as `max_file_size` caps
each file. No gradio import here: the guard reads the Gradio app's session table by duck typing.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger(__name__)

GRADIO_API = "/gradio_api"
UPLOAD_PATH = f"{GRADIO_API}/upload"
MAX_UPLOAD_BYTES = 1024 * 1024
LOGIN_MESSAGE = ("This server has an API key: enter it as the password. The user name can be "
                 "anything.")


def key_login(api_key: str) -> Callable[[str, str], bool]:
    """Gradio's `auth` callable: any user name, the server's key as the password."""
    expected = api_key.encode()

    def check(username: str, password: str) -> bool:  # noqa: ARG001 (Gradio passes both)
        return secrets.compare_digest(password.encode(), expected)

    return check


def _route_path(scope: Scope) -> str:
    """The request's path below the app's root path (a reverse proxy's prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class PlaygroundGuard:
    """ASGI middleware of the mounted Gradio app: 401 on `/gradio_api/` without a login session
    (when `gradio_app` is given, i.e. the server has a key); 413 for an upload over the cap."""

    def __init__(self, app: ASGIApp, *, gradio_app: Any = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES):
        self.app = app
        self.gradio_app = gradio_app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        refusal = None
        if self.gradio_app is not None and (path == GRADIO_API or path.startswith(GRADIO_API + "/")):
            if self._user(scope) is None:
                refusal = JSONResponse({"detail": {"error": "Not authenticated"}}, 401)
        if refusal is None and path.rstrip("/") == UPLOAD_PATH and scope["type"] == "http":
            # A browser always sends the length of a form upload; no length, no upload.
            length = _content_length(scope)
            if length is None:
                refusal = JSONResponse({"detail": "An upload needs a Content-Length."}, 411)
            elif length > self.max_upload_bytes:
                refusal = JSONResponse(
                    {"detail": f"An upload may be at most {self.max_upload_bytes} bytes."}, 413)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        logger.debug("Playground: refused %s (%d)", path, refusal.status_code)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await refusal(scope, receive, send)

    def _user(self, scope: Scope) -> str | None:
        """The user of Gradio's login cookie, as Gradio's own `login_check` reads it."""
        cookies = HTTPConnection(scope).cookies
        cookie_id = self.gradio_app.cookie_id
        token = (cookies.get(f"access-token-{cookie_id}")
                 or cookies.get(f"access-token-unsecure-{cookie_id}"))
        return self.gradio_app.tokens.get(token) if token else None
