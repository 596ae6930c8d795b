"""Dependencies shared by the routes: the engine, the API key check, and a client that may leave.

`create_api()` stores the engine and the key on `app.state`; routes receive them through the
`Annotated` aliases below instead of reaching for globals.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import APIError

if TYPE_CHECKING:
    from inference.interface import InferenceEngine

logger = logging.getLogger(__name__)

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25

_bearer = HTTPBearer(auto_error=False, description="The server's API key.")
# For clients whose `Authorization` header is taken: a private Space's proxy reads it for the
# Hugging Face token, so the server's key goes in its own header.
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                           description="The server's API key, when `Authorization` is taken.")


async def get_engine(request: Request) -> InferenceEngine:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a round trip through a
    # worker thread on every request for an attribute read
    return request.app.state.engine


EngineDep = Annotated["InferenceEngine", Depends(get_engine)]


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    key_header: Annotated[str | None, Depends(_key_header)],
) -> None:
    """401 unless `Authorization: Bearer <key>` or `X-API-Key: <key>` carries the server's key
    (when it has one). Either may match: behind a private Space, `Authorization` holds the
    Hugging Face token and `X-API-Key` this server's key."""
    expected: str | None = request.app.state.api_key
    if not expected:
        return
    given = [key for key in (credentials.credentials if credentials else "", key_header) if key]
    if not given:
        raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer "
                       "<key>' or 'X-API-Key: <key>'.", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    if not any(secrets.compare_digest(key.encode(), expected.encode()) for key in given):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


async def _wait_for_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def unless_disconnected(
    request: Request, work: Awaitable[T], on_disconnect: Callable[[], None]
) -> T:
    """Await `work`; if the client goes away first, call `on_disconnect()` (cancel generation)
    and answer 499 to nobody. A non-streaming request must free the engine too."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        logger.info("Client disconnected; cancelling its generation")
        on_disconnect()
        task.cancel()
        raise APIError(499, "The client closed the request.", code="client_disconnected")
    finally:
        watcher.cancel()
        if not task.done():
            on_disconnect()
            task.cancel()
            task.add_done_callback(_discard)  # nobody awaits it any more


def _discard(future: asyncio.Future) -> None:
    """Retrieve an abandoned future's outcome. A cancelled `gather` keeps a CancelledError as its
    exception, which asyncio would log as "exception was never retrieved", with a traceback."""
    if not future.cancelled():
        future.exception()
