"""One mapping from errors to HTTP: status, OpenAI body, `param` and `Retry-After`."""

from __future__ import annotations

import pytest

from api.errors import APIError, from_engine_error, validation_param
from inference.errors import (
    ContextLengthError,
    EngineOverloadedError,
    EngineStoppingError,
    GenerationError,
    InvalidRequestError,
    ModelNotLoadedError,
)


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code"),
    [
        (ContextLengthError(300000, 262144), 413, "invalid_request_error", "context_length_exceeded"),
        (InvalidRequestError("bad", param="tools"), 400, "invalid_request_error", None),
        (EngineOverloadedError(64, 64, retry_after=2), 503, "server_error", "server_overloaded"),
        (ModelNotLoadedError(), 503, "server_error", "model_not_loaded"),
        (EngineStoppingError(), 503, "server_error", "server_shutting_down"),
        (GenerationError("boom"), 500, "server_error", "generation_failed"),
        (RuntimeError("secret internals"), 500, "server_error", None),
    ],
)
def test_engine_errors_map_to_status_and_openai_body(exc, status, type_, code):
    error = from_engine_error(exc, prompt_param="messages")
    body = error.body()
    assert error.status_code == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_ and body["error"]["code"] == code


def test_context_error_names_both_numbers_and_the_prompt_param():
    body = from_engine_error(ContextLengthError(300000, 262144), "prompt").body()["error"]
    assert "300000" in body["message"] and "262144" in body["message"]
    assert body["param"] == "prompt"


def test_invalid_request_keeps_its_param():
    assert from_engine_error(InvalidRequestError("x", param="tools")).detail.param == "tools"


def test_retry_after_headers():
    assert from_engine_error(EngineOverloadedError(1, 1, retry_after=3)).headers == {
        "Retry-After": "3"}
    assert from_engine_error(ModelNotLoadedError()).headers["Retry-After"] == "5"
    failed = ModelNotLoadedError("failed", state="error")
    assert int(from_engine_error(failed).headers["Retry-After"]) > 5
    assert int(from_engine_error(EngineStoppingError()).headers["Retry-After"]) >= 1


def test_shutting_down_says_so_not_loading():
    message = from_engine_error(EngineStoppingError()).detail.message
    assert "shutting down" in message and "loading" not in message


def test_unexpected_errors_do_not_leak_their_message():
    assert "secret" not in from_engine_error(RuntimeError("secret internals")).detail.message


def test_api_errors_pass_through():
    error = APIError(401, "no", code="invalid_api_key")
    assert from_engine_error(error) is error


@pytest.mark.parametrize(
    ("error", "body", "param"),
    [
        ({"loc": ("body", "temperature"), "type": "less_than_equal"}, {"temperature": 3},
         "temperature"),
        ({"loc": ("body", "messages", 0, "user", "content"), "type": "missing"},
         {"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"loc": ("body", "messages", 1, "user", "content", "list[TextPart]", 0, "type"),
          "type": "literal_error"},
         {"messages": [{}, {"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[1].content[0].type"),
        ({"loc": ("body", "stop", "str"), "type": "string_type"}, {"stop": 5}, "stop"),
        ({"loc": ("body",), "type": "missing"}, None, None),
    ],
)
def test_validation_param_follows_the_body(error, body, param):
    assert validation_param(error, body) == param
