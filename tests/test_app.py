"""The one server: the API and the playground mounted on one engine, the engine's life in the
lifespan, `--no-ui`, a server without gradio, and the fallback rules."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from starlette.routing import Mount
from starlette.testclient import TestClient

from app import create_app
from settings import Settings
from tests.conftest import CACHE_DIR

ROOT = Path(__file__).resolve().parent.parent
MISSING = "nf4serve-test/does-not-exist"


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
    assert mounts(app)[-1] == ""  # the playground last, so /api/v1 is matched first
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


def test_an_unavailable_model_falls_back_to_the_builtin_one():
    app = create_app(Settings(model=MISSING, cache_dir=CACHE_DIR, offline=True, ui=False))
    with TestClient(app):
        wait_ready(app.state.engine)
        assert app.state.engine.is_fallback and MISSING in app.state.engine.fallback_reason


def test_no_fallback_makes_an_unavailable_model_fatal():
    settings = Settings(model=MISSING, cache_dir=CACHE_DIR, offline=True, fallback=False, ui=False)
    with pytest.raises(RuntimeError, match="--no-fallback"):
        with TestClient(create_app(settings)):
            pass
