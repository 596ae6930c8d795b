"""GET /models, /models/{id}, /model/info, /health, and the OpenAPI document, on the real app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_models_list_the_served_model(api_client, builtin_engine):
    body = (await api_client.get("/models")).json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["id"] == builtin_engine.model_name and card["object"] == "model"
    assert isinstance(card["created"], int) and card["owned_by"]
    assert (await api_client.get(f"/models/{card['id']}")).json() == card


async def test_unknown_model_is_404(api_client):
    response = await api_client.get("/models/gpt-5")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_model_info_reports_quantization_and_window(api_client):
    response = await api_client.get("/model/info")
    assert response.status_code == 200
    info = response.json()
    assert info["builtin"] is True and info["fallback"] is False
    assert info["quantization"]["quant_type"] == "nf4"
    assert info["quantization"]["linear_4bit_layers"] > 0
    assert info["context_window"] == 262144
    assert {"requests", "tokens_generated"} <= set(info["counters"])


async def test_health_ok(api_client):
    response = await api_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert {"uptime_s", "memory", "queue_depth", "active_requests"} <= set(body)


async def test_health_is_200_but_degraded_while_the_fallback_serves():
    from api import create_api
    from tests.api.conftest import asgi_client
    from tests.api.test_http_layer import ScriptedEngine

    class FallbackEngine(ScriptedEngine):
        is_fallback = True

        def health(self):
            return {**super().health(), "status": "degraded", "fallback": True,
                    "reason": "fallback: the default model is not cached"}

    async with asgi_client(create_api(FallbackEngine())) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded" and "not cached" in body["reason"] and body["fallback"]


async def test_unknown_route_has_an_openai_error_body(api_client):
    response = await api_client.get("/completions/nope")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_openapi_documents_every_route_with_its_models(api_client):
    spec = (await api_client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths) == {"/chat/completions", "/completions", "/generate", "/tokenize",
                          "/detokenize", "/models", "/models/{model_id}", "/model/info", "/health"}
    schemas = spec["components"]["schemas"]
    for name in ("ChatCompletionRequest", "ChatCompletionResponse", "ChatCompletionChunk",
                 "CompletionRequest", "CompletionResponse", "CompletionChunk", "TokenizeRequest",
                 "TokenizeResponse", "DetokenizeRequest", "DetokenizeResponse",
                 "GenerateRequest", "GenerateResponse", "GenerateChunk", "ErrorResponse",
                 "ModelList", "ModelInfo", "HealthResponse"):
        assert name in schemas, name
    chat = paths["/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletionRequest")
    assert {"200", "400", "401", "413", "500", "503"} <= set(chat["responses"])
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    temperature = schemas["ChatCompletionRequest"]["properties"]["temperature"]
    assert temperature["anyOf"][0]["maximum"] == 2.0 and temperature["description"]
    assert (await api_client.get("/docs")).status_code == 200
    refs: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                refs.add(value.rsplit("/", 1)[-1]) if key == "$ref" else walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs <= set(schemas), "every $ref resolves"


def test_the_api_never_imports_gradio():
    """The API must run where gradio is not installed (`--no-ui`)."""
    code = "import sys, api; assert 'gradio' not in sys.modules, 'api imported gradio'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
