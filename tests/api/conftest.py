"""Fixtures for route tests: the real API app on the session's built-in engine, over ASGI."""

from __future__ import annotations

import httpx
import pytest

from api import create_api


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                             timeout=120)


@pytest.fixture(scope="session")
async def api_client(builtin_engine):
    """An HTTP client of `create_api(builtin_engine)`: real app, real model, no server."""
    async with asgi_client(create_api(builtin_engine)) as client:
        yield client
