"""The request body cap: a body over `MAX_BODY_BYTES` is 413 `request_too_large` before it is parsed,
whether it declares its length or arrives in chunks; smaller bodies pass through unchanged."""

from __future__ import annotations

from api import create_api
from api.body_limit import MAX_BODY_BYTES
from tests.api.conftest import asgi_client
from tests.api.test_http_layer import CHAT, ScriptedEngine, good_stream

HEADERS = {"content-type": "application/json"}


def check_too_large(response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error == {"message": error["message"], "type": "invalid_request_error", "param": None,
                     "code": "request_too_large"}
    assert str(MAX_BODY_BYTES) in error["message"]


async def test_a_body_over_the_cap_is_413_before_parsing():
    engine = ScriptedEngine()  # any submit would fail: nothing is scripted
    body = b'{"messages": [{"role": "user", "content": "' + b"x" * MAX_BODY_BYTES + b'"}]}'
    async with asgi_client(create_api(engine)) as client:
        check_too_large(await client.post("/chat/completions", content=body, headers=HEADERS))
        check_too_large(await client.post("/generate", content=b"not even json" * MAX_BODY_BYTES,
                                          headers=HEADERS))


async def test_a_chunked_body_is_cut_off_at_the_cap():
    async def chunks():
        piece = b" " * (1024 * 1024)
        for _ in range(MAX_BODY_BYTES // len(piece) + 1):
            yield piece

    async with asgi_client(create_api(ScriptedEngine())) as client:
        response = await client.post("/chat/completions", content=chunks(), headers=HEADERS)
    check_too_large(response)


async def test_a_body_within_the_cap_reaches_the_route():
    async def chunks():
        text = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'
        for i in range(0, len(text), 7):
            yield text[i : i + 7]

    engine = ScriptedEngine(good_stream(), good_stream())
    async with asgi_client(create_api(engine, max_body_bytes=1024)) as client:
        assert (await client.post("/chat/completions", json=CHAT)).status_code == 200
        chunked = await client.post("/chat/completions", content=chunks(), headers=HEADERS)
        assert chunked.status_code == 200, chunked.text
        assert chunked.json()["choices"][0]["message"]["content"] == "ok"
        over = await client.post("/chat/completions", json={**CHAT, "user": "u" * 1024})
    assert over.status_code == 413 and over.json()["error"]["code"] == "request_too_large"
