"""Shutting the engine down on the built-in model: `drain(timeout)` refuses new requests at once,
lets running ones finish until the deadline and then ends them as cancelled; cancelling the drain
ends them at once; after `shutdown()` every request is refused, never left hanging."""

from __future__ import annotations

import asyncio
import time

import pytest

from inference import Engine, EngineSettings, GenerationRequest, SamplingParams
from inference.errors import EngineStoppingError

from ..conftest import CACHE_DIR
from .contract.helpers import wait_until


def request(max_tokens: int = 100_000) -> GenerationRequest:
    return GenerationRequest(prompt="Once upon a time",
                             sampling=SamplingParams(max_tokens=max_tokens, top_k=0))


@pytest.fixture
async def engine(builtin_dir):
    """An engine of its own (each test shuts it down), running one request at a time."""
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_active_requests=1))
    await engine.start()
    assert engine.state == "ready", engine.error
    yield engine
    await engine.shutdown()


async def generating(engine: Engine, count: int = 1) -> None:
    """Wait until `count` requests are running (leaving a stream's loop would cancel it)."""
    assert await wait_until(lambda: engine.active_count == count, timeout=10)
    await asyncio.sleep(0.2)


async def assert_refused(engine: Engine) -> None:
    """A new request is refused at once, and the error says why (not "still loading")."""
    started = time.monotonic()
    with pytest.raises(EngineStoppingError) as refused:
        engine.submit(request(4))
    with pytest.raises(EngineStoppingError):
        await engine.asubmit(request(4))
    assert time.monotonic() - started < 2.0  # nothing awaited (a loaded CI machine is slow)
    assert "shutting down" in str(refused.value) and "loading" not in str(refused.value)


async def test_drain_refuses_new_requests_and_lets_running_ones_finish(engine):
    short = engine.submit(request(8))
    drain = asyncio.create_task(engine.drain(timeout=30))
    await asyncio.sleep(0)
    assert engine.state == "stopping"
    await assert_refused(engine)
    health = engine.health()
    assert health["status"] != "ok" and "shutting down" in health["error"]
    result = await short.collect()
    assert result.finish_reason == "length" and result.error is None
    await asyncio.wait_for(drain, 5)  # returns once idle, long before the 30 s


async def test_drain_ends_what_is_left_at_the_deadline(engine):
    long, queued = engine.submit(request()), engine.submit(request())
    await generating(engine)
    assert engine.queue_depth == 1
    started = time.monotonic()
    await engine.drain(timeout=1.0)
    assert 1.0 <= time.monotonic() - started < 4.0  # the deadline, not the requests' end
    for stream in (long, queued):
        result = await asyncio.wait_for(stream.collect(), 5)
        assert result.finish_reason == "cancelled"
        assert result.error == "the server is shutting down"
    assert await wait_until(lambda: engine.active_count == 0 and engine.queue_depth == 0)
    await assert_refused(engine)


async def test_cancelling_the_drain_ends_requests_at_once(engine):
    long = engine.submit(request())
    await generating(engine)
    drain = asyncio.create_task(engine.drain(timeout=600))
    await asyncio.sleep(0.2)
    assert not long.finished
    drain.cancel()  # a second signal
    started = time.monotonic()
    result = await asyncio.wait_for(long.collect(), 5)
    assert time.monotonic() - started < 3.0  # not the drain's 600 s
    assert result.finish_reason == "cancelled" and result.error == "the server is shutting down"


async def test_after_shutdown_requests_are_refused_and_cancel_is_harmless(engine):
    long = engine.submit(request())
    await generating(engine)
    await engine.shutdown()
    assert engine.state == "stopped"
    result = await asyncio.wait_for(long.collect(), 5)  # ended by the shutdown, not left hanging
    assert result.finish_reason == "cancelled"
    long.cancel()  # the scheduler is gone: nothing to wake, and no error
    await assert_refused(engine)
    assert "shut down" in engine.health()["error"]


async def test_a_drain_while_loading_keeps_the_engine_from_serving(builtin_dir):
    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR))
    await engine.drain(timeout=30)  # nothing loaded, nothing to wait for
    assert engine.state == "stopping"
    await assert_refused(engine)
    await engine.start()  # the load that was under way completes...
    assert engine.state == "stopping"  # ...but the engine does not become ready
    await assert_refused(engine)
    await engine.shutdown()
    assert engine.state == "stopped"
