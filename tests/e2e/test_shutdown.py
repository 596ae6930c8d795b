"""End to end: shutting a live server down (`python app.py`, the built-in model, a real signal).

SIGTERM drains: new requests get 503 `server_shutting_down` at once, running ones may finish within
`--shutdown-timeout`, and a stream still open at the deadline ends with an error event and
`[DONE]`; then the process exits 0. A second signal (SIGTERM or Ctrl+C's SIGINT) ends the drain at
once, with the same error events.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import start_server, stop_server

LONG = {"messages": [{"role": "user", "content": "Tell me a long story."}], "stream": True,
        "max_tokens": 100_000, "top_k": 0}
SHORT = {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}


@pytest.fixture
def server(builtin_dir, request) -> Iterator[tuple[subprocess.Popen, str]]:
    """A server of its own (it is shut down by the test), started with `request.param`'s flags."""
    proc, base = start_server("--model", "builtin", "--no-fallback", "--no-ui", *request.param)
    yield proc, base + "/api/v1"
    if proc.poll() is None:
        proc.kill()
    stop_server(proc)


class Stream:
    """A streaming chat completion read event by event, kept open across the test's steps."""

    def __init__(self, client: httpx.Client, api: str, body: dict):
        self._context = client.stream("POST", f"{api}/chat/completions", json=body)
        response = self._context.__enter__()
        assert response.status_code == 200
        self._lines = response.iter_lines()
        self.events: list = []

    def next(self):
        for line in self._lines:
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                self.events.append(data if data == "[DONE]" else json.loads(data))
                return self.events[-1]
        return None

    def rest(self) -> list:
        while self.next() not in ("[DONE]", None):
            pass
        self._context.__exit__(None, None, None)
        return self.events


def generating(stream: Stream, tokens: int = 3) -> None:
    """Wait until the stream has sent the role chunk and a few content deltas."""
    for _ in range(tokens + 1):
        assert isinstance(stream.next(), dict)


def assert_ends_with_shutdown_error(events: list) -> None:
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    assert "shutting down" in error["message"]
    assert not any("error" in e for e in events[:-2] if isinstance(e, dict))


@pytest.mark.parametrize("server", [("--shutdown-timeout", "2")], indirect=True)
def test_sigterm_ends_a_long_stream_at_the_deadline_and_exits_0(server):
    proc, api = server
    with httpx.Client(timeout=30) as client:
        stream = Stream(client, api, LONG)
        generating(stream)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.5)  # the server acts on a signal within 0.1 s

        # While draining: the server still answers, but admits nothing, and says why.
        started = time.monotonic()
        refused = client.post(f"{api}/chat/completions", json=SHORT)
        assert time.monotonic() - started < 3.0  # refused, not queued behind the long stream
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "server_shutting_down"
        assert "loading" not in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        health = client.get(f"{api}/health")
        assert health.status_code == 503 and "shutting down" in health.json()["error"]
        assert proc.poll() is None  # the long stream still runs: the deadline is not there yet

        events = stream.rest()
        ended = time.monotonic() - signalled
    assert 2.0 - 0.5 <= ended <= 2.0 + 2.0, ended
    assert_ends_with_shutdown_error(events)
    assert len([e for e in events if isinstance(e, dict) and e.get("choices")]) > 4
    assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("server", [("--shutdown-timeout", "60")], indirect=True)
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_ends_the_drain_at_once(server, second):
    proc, api = server
    with httpx.Client(timeout=30) as client:
        stream = Stream(client, api, LONG)
        generating(stream)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        generating(stream, 2)  # still streaming: the first signal only drains
        proc.send_signal(second)
        signalled = time.monotonic()
        events = stream.rest()
        ended = time.monotonic() - signalled
    assert ended < 2.0, ended
    assert_ends_with_shutdown_error(events)
    assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("server", [("--shutdown-timeout", "60")], indirect=True)
def test_a_request_that_finishes_in_time_is_not_cut_and_the_drain_ends_early(server):
    proc, api = server
    with httpx.Client(timeout=30) as client:
        stream = Stream(client, api, {**LONG, "max_tokens": 40})
        generating(stream, 1)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        events = stream.rest()
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 20  # not the 60 s allowed: nothing was left to wait for
