"""Operations on a live server, started as a user would (`python app.py --log-format json
--cors-allow-origins ... --api-key ...`): Prometheus metrics that move with traffic and need no key,
request ids, CORS, every line of the log a JSON object, and a client that leaves logged as
cancelled at INFO, without an error or a traceback."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ROOT

ORIGIN = "https://chat.example"
KEY = "ops-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server(server_factory) -> tuple[str, Path]:
    """(base URL, log file) of a server with JSON logs, CORS for ORIGIN and an API key."""
    base = server_factory("--model", "builtin", "--no-fallback", "--no-ui", "--log-format", "json",
                          "--cors-allow-origins", ORIGIN, "--api-key", KEY)
    return base, ROOT / ".cache" / f"server-{base.rsplit(':', 1)[1]}.log"


def counters(base: str) -> dict[str, float]:
    response = httpx.get(f"{base}/metrics", timeout=10)  # no key: like health
    assert response.status_code == 200
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            assert sample.labels["model_name"] == "builtin"
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def log_entries(path: Path) -> list[dict]:
    """Every line of the server's output, each of which must be one JSON object."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_metrics_move_with_traffic(server):
    base, _ = server
    before = counters(base)
    answer = httpx.post(f"{base}/api/v1/chat/completions", json=CHAT, headers=AUTH, timeout=60)
    assert answer.status_code == 200
    after = counters(base)

    def moved(name: str) -> float:  # a labelled series appears with its first observation
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved("nf4serve_request_finished_total") == 1
    assert moved("nf4serve_generation_tokens_total") == answer.json()["usage"]["completion_tokens"]
    assert moved("nf4serve_time_to_first_token_seconds_count") == 1
    assert after["nf4serve_kv_cache_blocks_total"] > 0


def test_request_ids_and_cors(server):
    base, _ = server
    url = f"{base}/api/v1/chat/completions"
    echoed = httpx.post(url, json=CHAT, headers={**AUTH, "X-Request-Id": "ops-1"}, timeout=60)
    assert echoed.headers["x-request-id"] == "ops-1"
    with httpx.stream("POST", url, json={**CHAT, "stream": True}, headers=AUTH, timeout=60) as s:
        assert s.status_code == 200 and len(s.headers["x-request-id"]) == 32
        s.read()
    refused = httpx.post(url, json=CHAT, timeout=10)
    assert refused.status_code == 401 and refused.headers["x-request-id"]
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = httpx.options(url, headers={"Origin": ORIGIN, **preflight}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(url, headers={"Origin": "https://evil.example", **preflight}, timeout=10)
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


async def test_a_client_that_leaves_is_logged_as_cancelled_and_every_line_is_json(server):
    base, log = server
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", headers=AUTH, timeout=60) as http:

        async def active() -> int:
            return (await http.get("/health")).json()["active_requests"]

        request = asyncio.create_task(http.post("/chat/completions", headers={
            "X-Request-Id": "ops-leaver"}, json={**CHAT, "max_tokens": 100_000, "top_k": 0}))
        deadline = time.monotonic() + 30
        while not await active():
            assert time.monotonic() < deadline and not request.done()
            await asyncio.sleep(0.05)
        request.cancel()  # the client goes away without reading an answer
        while await active():
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.05)
        answered = await http.post("/generate", json={"prompt": "Hi", "max_tokens": 2},
                                   headers={"X-Request-Id": "ops-after"})
    await asyncio.sleep(0.5)  # the server writes its lines after the last byte is sent
    entries = log_entries(log)
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
    assert any(e["logger"] == "uvicorn.error" for e in entries)  # uvicorn's records too
    lines = {e["request_id"]: e for e in entries if e["logger"] == "nf4serve.requests"}
    leaver = lines["ops-leaver"]
    assert (leaver["level"], leaver["status"], leaver["finish_reason"]) == ("INFO", 499,
                                                                             "cancelled")
    after = lines["ops-after"]
    assert after["completion_tokens"] == answered.json()["usage"]["completion_tokens"]
    assert after["time_to_first_token_s"] > 0 and after["finish_reason"] in ("stop", "length")
    problems = [e for e in entries if e["level"] in ("ERROR", "CRITICAL") or "exception" in e]
    assert not problems, problems
