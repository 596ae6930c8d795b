"""API snippets carry the URL the page was opened from, and the key only when one is needed."""

from __future__ import annotations

from ui import snippets


def test_base_url_from_the_request_or_its_proxy():
    assert snippets.base_url({"host": "127.0.0.1:7860"}, "http", "x") == "http://127.0.0.1:7860"
    proxied = {"host": "10.0.0.5:7860", "x-forwarded-host": "me-app.hf.space",
               "x-forwarded-proto": "https"}
    assert snippets.base_url(proxied, "http", "x") == "https://me-app.hf.space"
    assert snippets.base_url({}, "http", "0.0.0.0:7860", "/nf4/") == "http://0.0.0.0:7860/nf4"


def test_snippets_use_the_server_url_and_model():
    url = "http://127.0.0.1:8123"
    curl = snippets.curl_chat(url, "builtin", api_key=False)
    assert curl.startswith("curl http://127.0.0.1:8123/api/v1/chat/completions")
    assert '"model": "builtin"' in curl and "Authorization" not in curl
    assert "http://127.0.0.1:8123/api/v1/generate" in snippets.curl_generate(url, api_key=False)
    code = snippets.openai_python(url, "builtin", api_key=False)
    assert 'base_url="http://127.0.0.1:8123/api/v1"' in code and 'api_key="not-needed"' in code
    compile(code, "snippet.py", "exec")


def test_snippets_with_an_api_key_read_it_from_the_environment():
    url = "http://h:1"
    assert "Bearer $NF4SERVE_API_KEY" in snippets.curl_chat(url, "m", api_key=True)
    assert "Bearer $NF4SERVE_API_KEY" in snippets.curl_generate(url, api_key=True)
    code = snippets.openai_python(url, "m", api_key=True)
    assert 'api_key=os.environ["NF4SERVE_API_KEY"]' in code and code.startswith("import os")
    compile(code, "snippet.py", "exec")
    intro = snippets.api_intro(url, api_key=True)
    assert "Authorization: Bearer <key>" in intro and "X-API-Key: <key>" in intro
