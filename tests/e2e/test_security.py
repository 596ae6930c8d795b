"""A live server started with `--api-key`: the playground's Gradio routes refuse a caller without
the key and work after logging in with it, a browser logs in through the playground and chats, and
the API takes the key as a bearer token or in `X-API-Key` (behind a private Space's proxy)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e.test_browser_playground import (
    send,
    set_slider,
    wait_stats,
)

KEY = "e2e-s3cret"
COMPLETE = ["Once upon a time", 0.7, 0.8, 20, 4]  # prompt, temperature, top p, top k, max tokens
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def keyed_url(server_factory):
    return server_factory("--model", "builtin", "--no-fallback", "--api-key", KEY)


@pytest.fixture
def anonymous(keyed_url):
    with httpx.Client(base_url=keyed_url, timeout=60) as client:
        yield client


@pytest.fixture
def logged_in(keyed_url):
    with httpx.Client(base_url=keyed_url, timeout=60) as client:
        assert client.post("/login", data={"username": "me", "password": KEY}).status_code == 200
        yield client


# -- Gradio's HTTP routes -------------------------------------------------------------------------

@pytest.mark.parametrize("path, body", [
    ("/gradio_api/call/complete", {"data": COMPLETE}),
    ("/gradio_api/queue/join", {"data": COMPLETE, "fn_index": 0, "session_hash": "x"}),
    ("/gradio_api/queue/join", {"data": COMPLETE, "fn_index": 7, "session_hash": "x"}),
    ("/gradio_api/run/complete", {"data": COMPLETE}),
    ("/gradio_api/cancel", {"event_id": "e", "session_hash": "x", "fn_index": 0}),
])
def test_gradio_routes_refuse_a_caller_without_the_key(anonymous, path, body):
    assert anonymous.post(path, json=body).status_code == 401
    assert anonymous.get("/config").status_code == 401


def test_uploads_refuse_a_caller_without_the_key(anonymous):
    response = anonymous.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")})
    assert response.status_code == 401


def test_a_wrong_key_does_not_log_in(anonymous):
    assert anonymous.post("/login", data={"username": "me", "password": "nope"}).status_code == 400
    assert anonymous.post("/gradio_api/call/complete", json={"data": COMPLETE}).status_code == 401


def test_after_logging_in_with_the_key_the_routes_work(logged_in):
    started = logged_in.post("/gradio_api/call/complete", json={"data": COMPLETE})
    assert started.status_code == 200, started.text
    result = logged_in.get(f"/gradio_api/call/complete/{started.json()['event_id']}").text
    final = [b for b in result.split("\n\n") if b.startswith("event: complete")]
    assert final, result
    text, stats = json.loads(final[0].split("data: ", 1)[1])
    assert text and "4 completion tokens" in stats

    dependencies = logged_in.get("/config").json()["dependencies"]
    fn_index = next(d["id"] for d in dependencies if d.get("api_name") == "complete")
    joined = logged_in.post("/gradio_api/queue/join", json={
        "data": COMPLETE, "fn_index": fn_index, "session_hash": "e2e"})
    assert joined.status_code == 200, joined.text
    with logged_in.stream("GET", "/gradio_api/queue/data", params={"session_hash": "e2e"}) as data:
        messages = (json.loads(line[6:]) for line in data.iter_lines() if line.startswith("data: "))
        done = next(m for m in messages if m.get("msg") == "process_completed")
    assert done["success"], done


def test_uploads_are_bounded(logged_in):
    small = logged_in.post("/gradio_api/upload", files={"files": ("a.txt", b"hello")})
    assert small.status_code == 200
    large = logged_in.post("/gradio_api/upload", files={"files": ("b.txt", b"x" * 2 * MiB)})
    assert large.status_code == 413


# -- the API --------------------------------------------------------------------------------------

def test_the_api_takes_the_key_in_x_api_key_behind_a_private_spaces_proxy(keyed_url):
    # On a private Space `Authorization` carries the Hugging Face token; the key rides beside it.
    client = openai.OpenAI(base_url=f"{keyed_url}/api/v1", api_key="hf_the_spaces_token",
                           default_headers={"X-API-Key": KEY})
    reply = client.chat.completions.create(
        model="builtin", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
    stranger = openai.OpenAI(base_url=f"{keyed_url}/api/v1", api_key="hf_the_spaces_token")
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    assert httpx.get(f"{keyed_url}/api/v1/health").status_code == 200


# -- the browser ----------------------------------------------------------------------------------

@pytest.fixture
def page(new_page):
    """The shared desktop page (tests/e2e/conftest.py), also recording the URLs answered 401."""
    page = new_page()
    page.refused = []
    page.on("response", lambda r: r.status == 401 and page.refused.append(r.url))
    return page


def fill_login(page, url: str, password: str) -> None:
    page.goto(url + "/")
    page.get_by_text("This server has an API key").wait_for()
    page.get_by_label("Username").fill("me")
    page.get_by_label("Password").fill(password)


def test_the_browser_logs_in_with_the_key_and_chats(page, keyed_url):
    fill_login(page, keyed_url, KEY)
    with page.expect_navigation():  # a successful login reloads the page
        page.get_by_role("button", name="Login").click()
    page.wait_for_function(
        "document.querySelector('#model-status')?.innerText.includes('· ready')")
    set_slider(page, "max-tokens", 8)
    send(page, "Hello behind a key")
    assert "8 completion tokens" in wait_stats(page)
    assert page.refused == []  # the login page itself needs no refused route


def test_the_browser_stays_out_with_a_wrong_key(page, keyed_url):
    fill_login(page, keyed_url, "nope")
    page.get_by_role("button", name="Login").click()
    page.get_by_text("Incorrect Credentials", exact=False).wait_for()
    assert page.locator("#chatbot").count() == 0
