"""The API's key and template rules on the real app and the built-in model: the key as a bearer
token or in `X-API-Key`, security in the OpenAPI document only with a key, and templates sent with
a request refused unless the operator trusts them."""

from __future__ import annotations

import pytest

from api import create_api
from tests.api.conftest import asgi_client

KEY = "s3cret"
USER = [{"role": "user", "content": "Name a colour."}]
# A few hundred bytes of template that would keep the server busy for a long time.
LOOP_TEMPLATE = ("{%- for i in range(1000) %}{%- for j in range(1000) %}{%- endfor %}{%- endfor %}"
                 "{{ messages[0]['content'] }}")


def chat_body(**fields) -> dict:
    return {"messages": USER, "max_tokens": 1, **fields}


# -- API key ----------------------------------------------------------------------------------------

@pytest.fixture
async def keyed_client(builtin_engine):
    async with asgi_client(create_api(builtin_engine, api_key=KEY)) as client:
        yield client


async def test_the_key_is_accepted_in_x_api_key(keyed_client):
    response = await keyed_client.get("/models", headers={"X-API-Key": KEY})
    assert response.status_code == 200
    chat = await keyed_client.post("/chat/completions", json=chat_body(),
                                   headers={"X-API-Key": KEY})
    assert chat.status_code == 200, chat.text


async def test_behind_a_private_space_authorization_holds_another_token(keyed_client):
    # The Space's proxy takes `Authorization` for the Hugging Face token; the key comes alongside.
    headers = {"Authorization": "Bearer hf_not_this_servers_key", "X-API-Key": KEY}
    assert (await keyed_client.get("/models", headers=headers)).status_code == 200


@pytest.mark.parametrize("headers", [
    {},
    {"X-API-Key": "nope"},
    {"X-API-Key": ""},
    {"Authorization": "Bearer nope", "X-API-Key": "nope"},
    {"Authorization": f"Basic {KEY}"},
])
async def test_a_missing_or_wrong_key_is_401_with_openais_body(keyed_client, headers):
    response = await keyed_client.post("/chat/completions", json=chat_body(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


async def test_health_needs_no_key(keyed_client):
    assert (await keyed_client.get("/health")).status_code == 200


# -- OpenAPI --------------------------------------------------------------------------------------

def _security(document: dict) -> tuple[dict, list]:
    schemes = document.get("components", {}).get("securitySchemes", {})
    secured = [(path, method) for path, item in document["paths"].items()
               for method, operation in item.items() if operation.get("security")]
    return schemes, secured


async def test_openapi_declares_no_security_without_a_key(api_client):
    schemes, secured = _security((await api_client.get("/openapi.json")).json())
    assert schemes == {} and secured == []


async def test_openapi_declares_bearer_and_x_api_key_with_a_key(keyed_client):
    document = (await keyed_client.get("/openapi.json")).json()
    schemes, secured = _security(document)
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyHeader"] == {**schemes["APIKeyHeader"], "in": "header",
                                       "name": "X-API-Key"}
    assert ("/chat/completions", "post") in secured and ("/generate", "post") in secured
    assert not any(path == "/health" for path, _ in secured)
    operation = document["paths"]["/chat/completions"]["post"]
    assert {name for requirement in operation["security"] for name in requirement} == {
        "HTTPBearer", "APIKeyHeader"}


# -- request-supplied chat templates --------------------------------------------------------------

async def test_a_template_sent_with_the_request_is_400_before_anything_runs(api_client):
    # Refused before rendering: the template would first run a million loop iterations.
    response = await api_client.post("/chat/completions", json=chat_body(
        chat_template_kwargs={"chat_template": LOOP_TEMPLATE}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "chat_template_kwargs" and error["type"] == "invalid_request_error"
    assert "--trust-request-chat-template" in error["message"]


@pytest.mark.parametrize("name, value", [
    ("tokenize", True), ("return_dict", True), ("tokenizer_kwargs", {}), ("tools", []),
    ("add_generation_prompt", False), ("continue_final_message", True), ("documents", []),
])
async def test_template_call_parameters_are_400(api_client, name, value):
    response = await api_client.post("/chat/completions", json=chat_body(
        chat_template_kwargs={name: value}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "chat_template_kwargs" and name in error["message"]


async def test_enable_thinking_is_still_a_template_variable(api_client):
    for value in (True, False):
        response = await api_client.post("/chat/completions", json=chat_body(
            chat_template_kwargs={"enable_thinking": value}))
        assert response.status_code == 200, response.text


@pytest.fixture
def trusting_engine(builtin_engine, monkeypatch):
    """The session's engine as started with --trust-request-chat-template."""
    trusted = builtin_engine.settings.model_copy(update={"trust_request_chat_template": True})
    monkeypatch.setattr(builtin_engine, "settings", trusted)
    return builtin_engine


async def test_with_trust_request_chat_template_the_template_is_used(trusting_engine):
    template = ("{%- for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{%- endfor %}"
                "[assistant]")
    async with asgi_client(create_api(trusting_engine)) as client:
        response = await client.post("/chat/completions", json=chat_body(
            chat_template_kwargs={"chat_template": template}))
        assert response.status_code == 200, response.text
        tokens = len(trusting_engine.tokenizer.encode("[user] Name a colour.[assistant]"))
        assert response.json()["usage"]["prompt_tokens"] == tokens
        # Trust covers the template, not the call's own parameters.
        refused = await client.post("/chat/completions", json=chat_body(
            chat_template_kwargs={"chat_template": template, "tokenize": True}))
        assert refused.status_code == 400
