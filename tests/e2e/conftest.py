"""A live server for end-to-end tests: `python app.py --model builtin` in a subprocess on a free
port, exactly as a user starts it. Yields the base URL (the API is under /api/v1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, env: dict[str, str] | None = None, timeout: float = 180.0):
    """Start app.py with the given flags; return (process, base_url) once /api/v1/health answers
    (200, or 503 with status error, which the caller may expect)."""
    port = free_port()
    log = open(ROOT / ".cache" / f"server-{port}.log", "w")  # noqa: SIM115 (closed with process)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"server exited with {proc.returncode}: "
                               + (ROOT / ".cache" / f"server-{port}.log").read_text()[-3000:])
        try:
            r = httpx.get(f"{base}/api/v1/health", timeout=2)
            if r.status_code == 200 or r.json().get("status") == "error":
                proc.log_file = log  # type: ignore[attr-defined]
                return proc, base
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become healthy in time")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log = getattr(proc, "log_file", None)
    if log:
        log.close()


@pytest.fixture(scope="session")
def live_server(builtin_dir):
    """Base URL of a live server on the built-in model (shared by the session)."""
    proc, base = start_server("--model", "builtin", "--no-fallback")
    yield base
    stop_server(proc)


@pytest.fixture(scope="session")
def server_factory(builtin_dir):
    """Start extra servers with their own flags; all are stopped at the end of the session."""
    procs = []

    def start(*args: str, env: dict[str, str] | None = None) -> str:
        proc, base = start_server(*args, env=env)
        procs.append(proc)
        return base

    yield start
    for proc in procs:
        stop_server(proc)


# -- the browser (tests/e2e/playground_page.py has the steps) -----------------------------------

@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, one per test module."""
    import playwright.sync_api as playwright

    from tests.e2e.playground_page import CHROMIUM, CHROMIUM_ARGS

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    """Open pages at a size and colour scheme; after the test, none may have asked for a URL on
    another machine."""
    from tests.e2e.playground_page import offline_violations

    contexts, pages = [], []

    def make(size: tuple[int, int] = (1400, 1000), scheme: str = "light"):
        context = browser.new_context(viewport={"width": size[0], "height": size[1]},
                                      color_scheme=scheme, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.requests = []  # every URL the page asks for, for the offline check
        page.on("request", lambda r: page.requests.append(r.url))
        contexts.append(context)
        pages.append(page)
        return page

    yield make
    for context in contexts:
        context.close()
    away = [url for page in pages for url in offline_violations(page.requests)]
    assert not away, f"requests left the machine: {away}"


@pytest.fixture
def page(new_page):
    """A desktop-sized page in the light theme."""
    return new_page()
