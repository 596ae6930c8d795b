"""The one server: the API (at /v1 and /api/v1) and the playground mounted on one engine, the
engine's life in the lifespan, `--no-ui`, a server without gradio, the fallback rules (the default
model only; a named model that cannot be loaded stops the start-up, its cause logged once and no
traceback) and the start-up log's last line."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.routing import Mount
from starlette.testclient import TestClient

from app import STARTUP_FAILURE, StartupFailure, create_app, ready_line, settle_heap
from settings import Settings
from tests.conftest import CACHE_DIR
from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
MISSING = "nf4serve-test/does-not-exist"
# The default model at a revision no cache holds: unavailable offline on every machine.
MISSING_REVISION = "nf4serve-test-no-such-revision"


def api_available() -> bool:
    try:
        from api import create_api  # noqa: F401
    except ImportError:
        return False
    return True


def mounts(app) -> list[str]:
    return [route.path for route in app.routes if isinstance(route, Mount)]


def wait_ready(engine, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.state == "ready", engine.error


def test_one_app_serves_the_playground_and_the_api(builtin_engine):
    app = create_app(Settings(model="builtin", cache_dir=CACHE_DIR), engine=builtin_engine)
    assert app.state.engine is builtin_engine
    assert mounts(app)[-1] == ""  # the playground last, so /v1 and /api/v1 are matched first
    assert {"/v1", "/api/v1"} <= set(mounts(app))
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<gradio-app" in page.text
        config = client.get("/config").json()
        assert config["title"] == "nf4serve playground"
        ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert {"chatbot", "chat-input", "max-tokens", "model-info", "fallback-banner"} <= ids
        if api_available():
            health = client.get("/api/v1/health")
            assert health.status_code == 200 and health.json()["model"] == "builtin"
            assert client.get("/v1/health").json()["model"] == "builtin"
            bare = client.post("/chat/completions", json={})  # not the playground's 404
            assert bare.status_code == 404 and "/v1/chat/completions" in bare.json()[
                "error"]["message"]
    assert builtin_engine.state == "ready"  # an engine passed in is left to its owner


def test_no_ui_serves_the_api_alone(builtin_engine):
    app = create_app(Settings(model="builtin", ui=False), engine=builtin_engine)
    assert "" not in mounts(app)
    with TestClient(app) as client:
        assert client.get("/").status_code == 404


def test_the_api_starts_where_gradio_is_not_installed():
    script = (
        "import sys; sys.modules['gradio'] = None\n"  # `import gradio` now fails
        "from app import create_app; from settings import Settings\n"
        "app = create_app(Settings(model='builtin'))\n"
        "from starlette.routing import Mount\n"
        "print(sorted(r.path for r in app.routes if isinstance(r, Mount)))\n"
        "print(sys.modules['gradio'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    mounted, gradio = out.stdout.strip().splitlines()
    assert "''" not in mounted and gradio == "None"
    assert "gradio is not installed: serving the API alone" in out.stderr


def test_the_lifespan_loads_the_engine_once_and_shuts_it_down():
    app = create_app(Settings(model="builtin", cache_dir=CACHE_DIR, ui=False))
    engine = app.state.engine
    assert engine.state == "loading" and engine.loaded is None  # nothing loads at create time
    with TestClient(app):
        wait_ready(engine)
        assert engine.is_builtin and not engine.is_fallback
    assert engine.state == "stopped"


def test_the_default_model_falls_back_to_the_builtin_one_and_health_says_so():
    app = create_app(Settings(revision=MISSING_REVISION, cache_dir=CACHE_DIR, offline=True,
                              ui=False))
    with TestClient(app) as client:
        wait_ready(app.state.engine)
        assert app.state.engine.is_fallback
        health = client.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert "not in the local Hugging Face cache" in health.json()["reason"]


def test_no_fallback_makes_an_unavailable_default_model_fatal():
    settings = Settings(revision=MISSING_REVISION, cache_dir=CACHE_DIR, offline=True,
                        fallback=False, ui=False)
    with pytest.raises(StartupFailure, match="offline"):
        with TestClient(create_app(settings)):
            pass


@pytest.mark.parametrize("model", [MISSING, "/no/such/model-folder"])
def test_a_named_model_that_cannot_be_loaded_stops_the_start_up(model):
    settings = Settings(model=model, cache_dir=CACHE_DIR, offline=True, ui=False)
    assert settings.fallback  # the default: still no fallback for a model named on purpose
    with pytest.raises(StartupFailure, match=model):
        with TestClient(create_app(settings)):
            pass


def run_app(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NF4SERVE_CACHE_DIR": str(CACHE_DIR)}
    return subprocess.run([sys.executable, "app.py", "--no-ui", "--port", str(free_port()),
                           *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flags, cause", [
    (["--model", "/no/such/model-folder"], "No model folder at /no/such/model-folder"),
    (["--revision", MISSING_REVISION, "--no-fallback"], "not in the local Hugging Face cache"),
], ids=["typo-in-a-path", "no-fallback"])
def test_a_fatal_start_up_failure_says_why_once_without_a_traceback(flags, cause):
    out = run_app(*flags)
    log = out.stdout + out.stderr
    assert out.returncode == STARTUP_FAILURE, log[-3000:]
    assert log.count(cause) == 1, log[-3000:]
    assert "Traceback" not in log and "nf4serve did not start" in log
    assert "built-in model instead" not in log  # no silent switch to noise


def fake_engine(state: str = "ready", fallback: bool = False):
    return SimpleNamespace(state=state, is_fallback=fallback, model_name="some/model")


def test_the_ready_line_says_where_everything_is():
    settings = Settings(model="some/model", host="0.0.0.0", root_path="/proxy/")
    level, line = ready_line(fake_engine(), settings, 8123)
    assert level == logging.INFO and "ready, serving some/model" in line
    for part in ("playground http://127.0.0.1:8123/proxy/ ", "API http://127.0.0.1:8123/proxy/v1 ",
                 "http://127.0.0.1:8123/proxy/api/v1", "docs http://127.0.0.1:8123/proxy/v1/docs"):
        assert part in line, part
    level, line = ready_line(fake_engine(fallback=True), Settings(ui=False), 7860)
    assert level == logging.WARNING and "FALLBACK" in line and "no playground" in line
    level, line = ready_line(fake_engine(state="error"), Settings(), 7860)
    assert level == logging.ERROR and "without a model" in line


def test_settling_the_heap_freezes_what_start_up_left_alive():
    gc.unfreeze()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 10_000  # this process's modules, at least
        assert gc.get_count()[0] < 100  # and the young generation starts empty
    finally:
        gc.unfreeze()
