"""Where the API answers, on the real root app (`app.create_app`, the built-in model): the same API
at /v1 and /api/v1 with one OpenAPI document, OpenAI-shaped 404s that name the API's base path, the
reference pages with every asset served locally, and `--context-error-status 400`."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from app import create_app
from settings import Settings
from tests.api.conftest import asgi_client
from tests.conftest import CACHE_DIR

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "seed": 1}


def settings(**kwargs) -> Settings:
    return Settings(model="builtin", cache_dir=CACHE_DIR, ui=False, metrics=False, **kwargs)


@pytest.fixture(scope="module")
async def root(builtin_engine):
    async with asgi_client(create_app(settings(), engine=builtin_engine)) as client:
        yield client


@pytest.mark.parametrize("base", ["/v1", "/api/v1"])
async def test_the_api_answers_at_both_base_paths(root, base, builtin_engine):
    models = await root.get(f"{base}/models")
    assert models.status_code == 200 and models.json()["data"][0]["id"] == builtin_engine.model_name
    chat = await root.post(f"{base}/chat/completions", json=CHAT)
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    completion = await root.post(f"{base}/completions", json={"prompt": "Hi", "max_tokens": 2})
    assert completion.status_code == 200 and completion.json()["object"] == "text_completion"
    assert (await root.get(f"{base}/health")).json()["status"] == "ok"


@pytest.mark.parametrize("method, path, base", [
    ("POST", "/v1/embeddings", "/v1"),
    ("GET", "/api/v1/no/such/thing", "/api/v1"),
    ("POST", "/chat/completions", "/v1"),  # a base URL without /v1
    ("GET", "/models", "/v1"),
    ("GET", "/nothing-here", "/v1"),  # no playground: the root answers too
])
async def test_unknown_paths_are_openai_404s_naming_the_base_path(root, method, path, base):
    response = await root.request(method, path)
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "not_found"
    assert path in error["message"] and f"{base}/chat/completions" in error["message"]


async def test_one_openapi_document_served_from_either_base(root):
    v1 = (await root.get("/v1/openapi.json")).json()
    api_v1 = (await root.get("/api/v1/openapi.json")).json()
    assert v1["servers"] == [{"url": "/v1"}] and api_v1["servers"] == [{"url": "/api/v1"}]
    assert {k: v for k, v in v1.items() if k != "servers"} == {
        k: v for k, v in api_v1.items() if k != "servers"}
    assert {"/chat/completions", "/completions", "/tokenize", "/detokenize", "/models"} <= set(
        v1["paths"])
    operation_ids = Counter(op["operationId"] for item in v1["paths"].values()
                            for op in item.values())
    assert all(count == 1 for count in operation_ids.values()), operation_ids


@pytest.mark.parametrize("page", ["/v1/docs", "/api/v1/docs", "/v1/redoc"])
async def test_the_reference_pages_load_only_local_assets(root, page):
    html = (await root.get(page)).text
    base = page.rsplit("/", 1)[0]
    assert f"{base}/openapi.json" in html
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(url.startswith(f"{base}/docs-assets/") for url in urls), urls
    assert "http://" not in html and "https://" not in html and "googleapis" not in html
    for url in urls:
        asset = await root.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url


async def test_context_overflow_is_400_when_configured(builtin_engine, monkeypatch):
    monkeypatch.setattr(builtin_engine.settings, "max_context", 16)
    long = "word " * 40
    app = create_app(settings(context_error_status=400), engine=builtin_engine)
    async with asgi_client(app) as client:
        for path, body in (("/v1/chat/completions", {"messages": [{"role": "user",
                                                                   "content": long}]}),
                           ("/v1/completions", {"prompt": long}),
                           ("/v1/generate", {"prompt": long})):
            response = await client.post(path, json=body)
            assert response.status_code == 400, path
            assert response.json()["error"]["code"] == "context_length_exceeded"
        tokenize = await client.post("/v1/tokenize", json={"prompt": long})
        assert tokenize.status_code == 200  # counting is not generating
        too_large = await client.post("/v1/generate", content=b"x" * (17 * 1024 * 1024))
        assert too_large.status_code == 413  # the body cap keeps its own status
