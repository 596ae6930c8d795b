"""Prometheus metrics at `/metrics` on the root app, with the built-in model: the text format
parses, every series names the model, counters and histograms move with traffic, gauges follow the
engine, no API key is needed, and `--no-metrics` leaves nothing at `/metrics` (404)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import Metrics
from app import create_app
from inference import Engine, EngineSettings, GenerationRequest, SamplingParams
from settings import Settings
from tests.api.conftest import asgi_client
from tests.conftest import CACHE_DIR

EXPECTED = {
    "nf4serve_request_finished", "nf4serve_prompt_tokens", "nf4serve_generation_tokens",
    "nf4serve_request_queue_time_seconds", "nf4serve_time_to_first_token_seconds",
    "nf4serve_request_inter_token_latency_seconds", "nf4serve_e2e_request_latency_seconds",
    "nf4serve_request_prompt_tokens", "nf4serve_request_generation_tokens",
    "nf4serve_model_loaded", "nf4serve_num_requests_running", "nf4serve_num_requests_waiting",
    "nf4serve_kv_cache_blocks_total", "nf4serve_kv_cache_blocks_used",
    "nf4serve_kv_cache_usage_perc", "nf4serve_num_preemptions", "nf4serve_prefix_cache_queries",
    "nf4serve_prefix_cache_hits",
}


def root_app(engine, **settings):
    settings = {"model": "builtin", "cache_dir": CACHE_DIR, "ui": False, **settings}
    return create_app(Settings(**settings), engine=engine)


@pytest.fixture
async def client(builtin_engine):
    app = root_app(builtin_engine)
    async with asgi_client(app) as client:
        yield client
    app.state.metrics.remove_listener()  # the session's engine outlives this app


async def scrape(client) -> dict[tuple[str, frozenset], float]:
    """Every sample, keyed by (name, labels other than model_name)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("model_name") == "builtin", sample
            samples[sample.name, frozenset(labels.items())] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_parse_and_every_series_names_the_model(client):
    response = await client.get("/metrics")
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert EXPECTED <= families, EXPECTED - families
    samples = await scrape(client)  # asserts model_name="builtin" on every sample
    assert value(samples, "nf4serve_model_loaded") == 1.0
    assert value(samples, "nf4serve_kv_cache_blocks_total") > 0


async def test_a_request_moves_the_counters_and_histograms(client):
    before = await scrape(client)
    response = await client.post("/api/v1/generate", json={"prompt": "Once upon a time",
                                                           "max_tokens": 5, "seed": 7})
    usage, reason = response.json()["usage"], response.json()["finish_reason"]
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("nf4serve_request_finished_total", finish_reason=reason) == 1
    assert moved("nf4serve_generation_tokens_total") == usage["completion_tokens"] >= 1
    assert moved("nf4serve_prompt_tokens_total") == usage["prompt_tokens"]
    for histogram in ("nf4serve_time_to_first_token_seconds", "nf4serve_e2e_request_latency_seconds",
                      "nf4serve_request_queue_time_seconds", "nf4serve_request_prompt_tokens"):
        assert moved(f"{histogram}_count") == 1, histogram
    assert moved("nf4serve_request_prompt_tokens_sum") == usage["prompt_tokens"]
    assert 0 < moved("nf4serve_e2e_request_latency_seconds_sum") < 60
    if usage["completion_tokens"] >= 2:
        assert moved("nf4serve_request_inter_token_latency_seconds_count") == 1
    assert moved("nf4serve_prefix_cache_queries_total") >= usage["prompt_tokens"]


async def test_every_choice_and_every_streamed_request_is_counted(client):
    before = await scrape(client)
    await client.post("/api/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "n": 2})
    await client.post("/api/v1/generate", json={"prompt": "Hi", "max_tokens": 2, "stream": True})
    after = await scrape(client)
    finished = sum(v - value(before, name, **dict(labels)) for (name, labels), v in after.items()
                   if name == "nf4serve_request_finished_total")
    assert finished == 3


async def test_gauges_follow_a_running_request_and_a_cancel_is_counted(client, builtin_engine):
    before = await scrape(client)
    stream = await builtin_engine.asubmit(GenerationRequest(
        prompt="Tell me a long story", sampling=SamplingParams(max_tokens=100_000, seed=1)))
    chunks = aiter(stream)
    await anext(chunks)  # decoding now
    during = await scrape(client)
    assert value(during, "nf4serve_num_requests_running") == 1
    assert value(during, "nf4serve_num_requests_waiting") == 0
    used = value(during, "nf4serve_kv_cache_blocks_used")
    total = value(during, "nf4serve_kv_cache_blocks_total")
    assert used >= 1 and value(during, "nf4serve_kv_cache_usage_perc") == pytest.approx(used / total)
    stream.cancel()
    async for _ in chunks:
        pass
    await asyncio.sleep(0)
    after = await scrape(client)
    assert value(after, "nf4serve_num_requests_running") == 0
    cancelled = "nf4serve_request_finished_total"
    assert value(after, cancelled, finish_reason="cancelled") == value(
        before, cancelled, finish_reason="cancelled") + 1


async def test_metrics_need_no_api_key(builtin_engine):
    app = root_app(builtin_engine, api_key="s3cret")
    async with asgi_client(app) as client:
        assert (await client.get("/api/v1/models")).status_code == 401
        assert (await client.get("/metrics")).status_code == 200
    app.state.metrics.remove_listener()


@pytest.mark.parametrize("ui", [False, True], ids=["api-only", "with-playground"])
async def test_no_metrics_leaves_nothing_at_metrics(builtin_engine, ui):
    app = root_app(builtin_engine, metrics=False, ui=ui)
    assert not hasattr(app.state, "metrics")
    async with asgi_client(app) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/api/v1/health")).status_code == 200


async def test_an_engine_that_is_not_loaded_reports_only_that():
    engine = Engine(EngineSettings(model="builtin"))
    metrics = Metrics(engine)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert families["nf4serve_model_loaded"].samples[0].value == 0.0
    assert "nf4serve_num_requests_running" not in families


def test_each_app_has_its_own_registry():
    engine = Engine(EngineSettings(model="builtin"))
    first, second = Metrics(engine), Metrics(engine)  # no "duplicated timeseries" error
    assert first.registry is not second.registry
    assert not [m for m in REGISTRY.collect() if m.name.startswith("nf4serve")]
