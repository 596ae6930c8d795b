"""The contract suite runs twice: on an engine whose steps wait for their tokens before the next
is decided, and on one with async scheduling (each decode step queued before the previous one's
tokens are read back). Both must keep every promise; on the CPU the second is the only place the
overlapping loop runs in CI."""

from __future__ import annotations

import pytest

from ...conftest import CACHE_DIR


@pytest.fixture(scope="session", params=["sync", "async"], ids=["sync", "async-scheduling"])
async def builtin_engine(request, builtin_engine):
    """The shared engine when its scheduling is the one asked for, else a second one like it."""
    wanted = request.param == "async"
    if builtin_engine.info()["step"]["async_scheduling"] == wanted:
        yield builtin_engine
        return
    from inference import Engine, EngineSettings

    engine = Engine(EngineSettings(model="builtin", cache_dir=CACHE_DIR, max_active_requests=16,
                                   compute_dtype="float32", async_scheduling=wanted))
    await engine.start()
    assert engine.state == "ready", engine.error
    yield engine
    await engine.shutdown()
