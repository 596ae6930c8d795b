"""CORS on the API (`--cors-allow-origins`): a preflight from an allowed origin is answered, with
no API key; any other origin gets no `Access-Control-Allow-Origin` (its preflight a 400); and by
default no origin is allowed."""

from __future__ import annotations

import pytest

from api import create_api
from app import create_app
from settings import Settings
from tests.api.conftest import asgi_client
from tests.conftest import CACHE_DIR

ALLOWED = "https://chat.example"
SECOND = "https://other.example:8443"
EVIL = "https://evil.example"
ALLOW_ORIGIN = "access-control-allow-origin"


def preflight(client, origin: str, path: str = "/api/v1/chat/completions"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-request-id"})


@pytest.fixture(scope="module")
async def client(builtin_engine):
    settings = Settings(model="builtin", cache_dir=CACHE_DIR, ui=False, api_key="k",
                        cors_allow_origins=f" {ALLOWED}, {SECOND} ,")
    async with asgi_client(create_app(settings, engine=builtin_engine)) as client:
        yield client


@pytest.mark.parametrize("origin", [ALLOWED, SECOND])
async def test_a_preflight_from_an_allowed_origin_is_answered(client, origin):
    response = await preflight(client, origin)  # no API key: browsers send none in a preflight
    assert response.status_code == 200
    assert response.headers[ALLOW_ORIGIN] == origin
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "x-request-id"} <= {
        h.strip() for h in allowed.split(",")}
    assert response.headers["x-request-id"]


async def test_a_preflight_from_another_origin_is_refused(client):
    response = await preflight(client, EVIL)
    assert response.status_code == 400
    assert ALLOW_ORIGIN not in response.headers


async def test_answers_carry_the_headers_for_allowed_origins_only(client):
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    allowed = await client.post("/api/v1/chat/completions", json=chat, headers={
        "Origin": ALLOWED, "Authorization": "Bearer k"})
    assert allowed.status_code == 200 and allowed.headers[ALLOW_ORIGIN] == ALLOWED
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    refused_key = await client.post("/api/v1/chat/completions", json=chat,
                                    headers={"Origin": ALLOWED})
    assert refused_key.status_code == 401 and refused_key.headers[ALLOW_ORIGIN] == ALLOWED
    evil = await client.get("/api/v1/health", headers={"Origin": EVIL})
    assert evil.status_code == 200 and ALLOW_ORIGIN not in evil.headers


async def test_no_origin_is_allowed_by_default(builtin_engine):
    settings = Settings(model="builtin", cache_dir=CACHE_DIR, ui=False)
    async with asgi_client(create_app(settings, engine=builtin_engine)) as client:
        response = await preflight(client, ALLOWED)
        assert response.status_code == 405 and ALLOW_ORIGIN not in response.headers
        health = await client.get("/api/v1/health", headers={"Origin": ALLOWED})
        assert ALLOW_ORIGIN not in health.headers


async def test_a_wildcard_allows_any_origin(builtin_engine):
    async with asgi_client(create_api(builtin_engine, cors_allow_origins=["*"])) as client:
        response = await preflight(client, EVIL, path="/generate")
        assert response.status_code == 200 and response.headers[ALLOW_ORIGIN] == "*"
