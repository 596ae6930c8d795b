"""Prometheus metrics of the engine, served at `/metrics` on the root app (no API key, like health).

The quantities vLLM's and TGI's dashboards read, named as vLLM names them with the `nf4serve_`
prefix, every series labelled with `model_name`:

- per request, observed when it ends (an engine listener, `Engine.add_listener`): outcomes by
  finish reason, prompt and generation tokens, and histograms of queue time, time to first token,
  mean inter-token latency, end-to-end latency and prompt/output lengths;
- read from `engine.info()` at scrape time: requests running and waiting, KV-cache blocks used and
  total, usage fraction, preemptions, prefix-cache queries and hits.

Each `Metrics` has its own `CollectorRegistry`, so several apps in one process (the tests) never
share or clash over series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from inference.types import FinishedRequest

logger = logging.getLogger(__name__)

PREFIX = "nf4serve_"
LABEL = "model_name"

# Buckets as vLLM's: seconds from milliseconds to the longest generations; tokens up to the window.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
INTER_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                       5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000,
                 100_000, 200_000)


class EngineCollector(Collector):
    """Gauges and cumulative counters read from the engine at each scrape."""

    def __init__(self, engine: Any):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        model = self.engine.model_name
        try:
            info = self.engine.info()
        except Exception:  # noqa: BLE001  (loading, failed or stopped: only the health gauge)
            info = {}
        counters = info.get("counters") or {}
        kv = info.get("kv_cache") or {}

        def gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(PREFIX + name, help_text, labels=[LABEL])
            family.add_metric([model], value)
            return family

        def counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(PREFIX + name, help_text, labels=[LABEL])
            family.add_metric([model], value)
            return family

        yield gauge("model_loaded", "1 when the model is loaded and serving, else 0.",
                    1.0 if self.engine.state == "ready" else 0.0)
        if not info:
            return
        yield gauge("num_requests_running", "Requests in the running batch.",
                    counters.get("active_requests", 0))
        yield gauge("num_requests_waiting", "Requests queued, waiting to be admitted.",
                    counters.get("queue_depth", 0))
        if not kv:
            return
        total, used = kv.get("blocks_total", 0), kv.get("blocks_used", 0)
        yield gauge("kv_cache_blocks_total", "Blocks of the paged KV cache.", total)
        yield gauge("kv_cache_blocks_used", "Blocks of the paged KV cache in use.", used)
        yield gauge("kv_cache_usage_perc", "Fraction of the KV cache in use (0 to 1).",
                    used / total if total else 0.0)
        yield counter("num_preemptions", "Running requests preempted because the KV cache was "
                      "full (recomputed later).", kv.get("preemptions", 0))
        yield counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                      kv.get("prefix_cache_query_tokens", 0))
        yield counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                      kv.get("prefix_cache_hit_tokens", 0))


class Metrics:
    """The metrics of one app serving `engine`: its registry, and the `/metrics` endpoint."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.registry = CollectorRegistry()
        r, labels = self.registry, [LABEL]
        self.finished = Counter(PREFIX + "request_finished", "Requests ended, by finish reason "
                                "(stop, length, cancelled, error).", [LABEL, "finish_reason"],
                                registry=r)
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens of ended requests.",
                                     labels, registry=r)
        self.generation_tokens = Counter(PREFIX + "generation_tokens",
                                         "Tokens generated by ended requests.", labels, registry=r)
        self.queue_time = Histogram(PREFIX + "request_queue_time_seconds", "Seconds from "
                                    "submission to admission into the batch.", labels,
                                    buckets=TTFT_BUCKETS, registry=r)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Seconds from submission "
                              "to the first generated token.", labels, buckets=TTFT_BUCKETS,
                              registry=r)
        self.inter_token = Histogram(PREFIX + "request_inter_token_latency_seconds", "Mean "
                                     "seconds between output tokens, one observation per request "
                                     "of two tokens or more.", labels,
                                     buckets=INTER_TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Seconds from submission to "
                             "the last token.", labels, buckets=REQUEST_BUCKETS, registry=r)
        self.prompt_lengths = Histogram(PREFIX + "request_prompt_tokens", "Prompt tokens per "
                                        "request.", labels, buckets=TOKEN_BUCKETS, registry=r)
        self.output_lengths = Histogram(PREFIX + "request_generation_tokens", "Generated tokens "
                                        "per request.", labels, buckets=TOKEN_BUCKETS, registry=r)
        r.register(EngineCollector(engine))
        self.remove_listener = engine.add_listener(self.observe)

    def observe(self, record: FinishedRequest) -> None:
        """Count one ended request (an engine listener: runs on the event loop, must be quick)."""
        model = self.engine.model_name
        self.finished.labels(model, record.finish_reason).inc()
        self.prompt_tokens.labels(model).inc(record.prompt_tokens)
        self.generation_tokens.labels(model).inc(record.completion_tokens)
        self.queue_time.labels(model).observe(record.queue_s)
        self.e2e.labels(model).observe(record.total_s)
        self.prompt_lengths.labels(model).observe(record.prompt_tokens)
        self.output_lengths.labels(model).observe(record.completion_tokens)
        if record.time_to_first_token_s is not None:
            self.ttft.labels(model).observe(record.time_to_first_token_s)
        if record.inter_token_s is not None:
            self.inter_token.labels(model).observe(record.inter_token_s)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def endpoint(self, request: Request) -> Response:
        """GET /metrics. Synchronous, so Starlette runs it off the event loop."""
        return Response(self.render(), media_type=CONTENT_TYPE_LATEST)
