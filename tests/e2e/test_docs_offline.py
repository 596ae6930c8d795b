"""The API reference in a real browser (Debian's Chromium) against a live server: Swagger UI at
/v1/docs and /api/v1/docs (the playground's link) and ReDoc at /v1/redoc render, and no request the
pages make leaves this machine: their scripts, styles and icon come from the server itself.

Every request is recorded with its outcome. ReDoc's sidebar asks for Redocly's logo on their CDN;
the page's Content-Security-Policy makes the browser refuse it before it is sent (Playwright
reports it as a request that failed with `csp`), so that one is checked to have been blocked.
"""

from __future__ import annotations

import pytest

from tests.e2e.playground_page import offline_violations


@pytest.fixture
def docs_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.requests, page.blocked = [], []  # every URL asked for; those the browser refused (CSP)
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("requestfailed", lambda r: r.failure == "csp" and page.blocked.append(r.url))
    yield page
    context.close()


def sent_away(page) -> list[str]:
    """The requests that went to another machine: not local, and not refused by the browser."""
    return [url for url in offline_violations(page.requests) if url not in page.blocked]


@pytest.mark.parametrize("base", ["/v1", "/api/v1"])
def test_swagger_ui_renders_offline(docs_page, live_server, base):
    page = docs_page
    page.goto(f"{live_server}{base}/docs")
    page.locator(".opblock").first.wait_for(state="visible")
    assert page.locator(".opblock-post", has_text="/chat/completions").first.is_visible()
    assert page.locator(".opblock", has_text="/tokenize").count() >= 1
    assert "nf4serve API" in page.locator(".info .title").inner_text()
    assert offline_violations(page.requests) == [], page.requests  # not even an attempt
    assert f"{live_server}{base}/openapi.json" in page.requests
    assert f"{live_server}{base}/docs-assets/swagger-ui-bundle.js" in page.requests


def test_redoc_renders_offline(docs_page, live_server):
    page = docs_page
    page.goto(f"{live_server}/v1/redoc")
    page.get_by_role("heading", name="nf4serve API").first.wait_for(state="visible")
    page.get_by_role("heading", name="Create a completion").first.wait_for(state="visible")
    page.wait_for_load_state("networkidle")
    assert sent_away(page) == [], page.requests
    assert set(page.blocked) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
    assert f"{live_server}/v1/docs-assets/redoc.standalone.js" in page.requests
