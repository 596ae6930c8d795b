"""The playground behind the API key, in process (the real app, the built-in model, Gradio's queue):
without the login every Gradio API route refuses, with it the playground generates; without a key
nothing changes; uploads are bounded either way."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from app import create_app
from settings import Settings
from tests.conftest import CACHE_DIR
from ui.auth import MAX_UPLOAD_BYTES, PlaygroundGuard, key_login

KEY = "s3cret"
COMPLETE = ["Once upon a time", 0.7, 0.8, 20, 4]  # prompt, temperature, top p, top k, max tokens

REFUSED_GETS = [
    "/config",  # Gradio's own check
    "/gradio_api/info",
    "/gradio_api/heartbeat/some-session",
    "/gradio_api/queue/data?session_hash=some-session",
    "/gradio_api/upload_progress?upload_id=x",
    "/gradio_api/app_id",
    "/gradio_api/startup-events",
    "/gradio_api/call/complete/some-event",
]
REFUSED_POSTS = [
    ("/gradio_api/call/complete", {"data": COMPLETE}),
    ("/gradio_api/call/v2/complete", {"data": COMPLETE}),
    ("/gradio_api/run/complete", {"data": COMPLETE}),
    ("/gradio_api/queue/join", {"data": COMPLETE, "fn_index": 0, "session_hash": "s"}),
    ("/gradio_api/cancel", {"event_id": "e", "session_hash": "s", "fn_index": 0}),
    ("/gradio_api/reset", {"event_id": "e"}),
]


def _client(engine, **settings) -> TestClient:
    return TestClient(create_app(Settings(model="builtin", cache_dir=CACHE_DIR, **settings),
                                 engine=engine))


@pytest.fixture(scope="module")
def keyed_app(builtin_engine):
    with _client(builtin_engine, api_key=KEY) as client:
        yield client


@pytest.fixture
def keyed(keyed_app):
    """The keyed server's client, logged out."""
    keyed_app.cookies.clear()
    yield keyed_app
    keyed_app.cookies.clear()


@pytest.fixture(scope="module")
def open_app(builtin_engine):
    with _client(builtin_engine) as client:
        yield client


def login(client: TestClient, password: str = KEY) -> int:
    return client.post("/login", data={"username": "anyone", "password": password}).status_code


def complete(client: TestClient) -> str:
    """Run the Completion tab's event over Gradio's HTTP API; the final event's data."""
    started = client.post("/gradio_api/call/complete", json={"data": COMPLETE})
    assert started.status_code == 200, started.text
    result = client.get(f"/gradio_api/call/complete/{started.json()['event_id']}")
    assert result.status_code == 200
    blocks = [b for b in result.text.split("\n\n") if b.startswith("event: complete")]
    assert blocks, result.text
    return json.loads(blocks[0].split("data: ", 1)[1])


def upload(client: TestClient, size: int):
    return client.post("/gradio_api/upload", files={"files": ("a.txt", b"x" * size)})


# -- with a key -------------------------------------------------------------------------------------

def test_the_page_opens_on_the_login_form(keyed):
    page = keyed.get("/")
    assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
    assert keyed.get("/theme.css").status_code == 200


@pytest.mark.parametrize("path", REFUSED_GETS)
def test_every_gradio_route_refuses_a_caller_without_the_login(keyed, path):
    assert keyed.get(path).status_code == 401


@pytest.mark.parametrize("path, body", REFUSED_POSTS, ids=[p for p, _ in REFUSED_POSTS])
def test_no_event_runs_without_the_login(keyed, path, body):
    assert keyed.post(path, json=body).status_code == 401


def test_uploads_need_the_login(keyed):
    assert upload(keyed, 10).status_code == 401


def test_the_wrong_key_does_not_log_in(keyed):
    assert login(keyed, "nope") == 400
    assert keyed.post("/gradio_api/call/complete", json={"data": COMPLETE}).status_code == 401


def test_with_the_key_the_playground_generates(keyed):
    assert login(keyed) == 200
    assert keyed.get("/config").status_code == 200
    text, stats = complete(keyed)
    assert text and "4 completion tokens" in stats


def test_with_the_key_the_queue_runs_events(keyed):
    assert login(keyed) == 200
    dependencies = keyed.get("/config").json()["dependencies"]
    fn_index = next(d["id"] for d in dependencies if d.get("api_name") == "complete")
    joined = keyed.post("/gradio_api/queue/join",
                        json={"data": COMPLETE, "fn_index": fn_index, "session_hash": "s1"})
    assert joined.status_code == 200, joined.text
    with keyed.stream("GET", "/gradio_api/queue/data?session_hash=s1") as events:
        for line in events.iter_lines():
            message = json.loads(line[len("data: "):]) if line.startswith("data: ") else {}
            if message.get("msg") == "process_completed":
                assert message["success"], message
                break
        else:
            pytest.fail("the event never completed")


def test_the_api_key_does_not_replace_the_login(keyed):
    # The playground's session is its own: the API's header does not open Gradio's routes.
    headers = {"X-API-Key": KEY, "Authorization": f"Bearer {KEY}"}
    assert keyed.post("/gradio_api/call/complete", json={"data": COMPLETE},
                      headers=headers).status_code == 401
    assert keyed.get("/api/v1/models", headers=headers).status_code == 200
    assert keyed.get("/api/v1/health").status_code == 200


def test_uploads_are_bounded_after_the_login(keyed):
    assert login(keyed) == 200
    assert upload(keyed, 10).status_code == 200
    assert upload(keyed, MAX_UPLOAD_BYTES + 1).status_code == 413


# -- without a key ----------------------------------------------------------------------------------

def test_without_a_key_nothing_changes(open_app):
    assert "auth_required" not in open_app.get("/").text
    assert open_app.get("/config").status_code == 200
    assert open_app.get("/gradio_api/info").status_code == 200
    text, _ = complete(open_app)
    assert text


def test_without_a_key_uploads_are_still_bounded(open_app):
    assert upload(open_app, 10).status_code == 200
    assert upload(open_app, MAX_UPLOAD_BYTES + 1).status_code == 413
    many = [("files", (f"{i}.txt", b"x" * (MAX_UPLOAD_BYTES // 4))) for i in range(8)]
    assert open_app.post("/gradio_api/upload", files=many).status_code == 413

    def chunks():
        yield b"x" * 10

    unsized = open_app.post("/gradio_api/upload", content=chunks(),
                            headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert unsized.status_code == 411


# -- pieces -----------------------------------------------------------------------------------------

def test_key_login_takes_any_user_name_and_only_the_key():
    check = key_login(KEY)
    assert check("anyone", KEY) and check("", KEY)
    assert not check("anyone", "nope") and not check(KEY, "")


async def test_the_guard_sees_paths_below_a_proxy_prefix():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])

    class NoSessions:
        cookie_id, tokens = "c", {}

    guard = PlaygroundGuard(app, gradio_app=NoSessions())
    sent = []

    async def send(message):
        sent.append(message)

    for path in ("/nf4serve/gradio_api/info", "/nf4serve/", "/nf4serve/gradio_apiary"):
        scope = {"type": "http", "path": path, "root_path": "/nf4serve", "headers": [],
                 "method": "GET", "query_string": b""}
        await guard(scope, None, send)
    assert seen == ["/nf4serve/", "/nf4serve/gradio_apiary"]
    assert sent[0]["status"] == 401
