"""The playground in a real browser (Debian's Chromium through Playwright) against a live server on
the built-in model: nothing leaves the machine, replies stream, sliders reach the engine, Stop
frees the request, the completion, model and API tabs work, and the fallback banner shows.

A screenshot of the page goes to test-artifacts/playground.png (docs/playground.png is a copy).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import playwright.sync_api as playwright
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
ANSWER = "#chatbot .message:not(.thought) > [data-testid=bot]"
STATS = "#chatbot .thought .title"



# -- servers and browser -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server_url(live_server):
    """The shared live server on the built-in model (tests/e2e/conftest.py)."""
    return live_server


@pytest.fixture(scope="module")
def fallback_url(server_factory):
    """A server asked for a model that cannot be had offline: it falls back to the built-in one."""
    return server_factory("--model", "nf4serve-test/does-not-exist", env={"HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.requests = []  # every URL the page asks for, for the offline check
    page.on("request", lambda r: page.requests.append(r.url))
    yield page
    context.close()


def open_playground(page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_function(
        "document.querySelector('#model-status')?.innerText.includes('· ready')")


def set_slider(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_function(
        f"Number(document.querySelector('#{elem_id} input[type=range]').value) === {value}")


def record_values(page, selector: str, prop: str = "innerText") -> None:
    """Collect every distinct value an element shows, sampled every 5 ms, in window.__seen."""
    page.evaluate("""([selector, prop]) => {
        window.__seen = [];
        setInterval(() => {
            const els = document.querySelectorAll(selector);
            const v = els.length ? els[els.length - 1][prop] : '';
            if (v && window.__seen[window.__seen.length - 1] !== v) window.__seen.push(v);
        }, 5);
    }""", [selector, prop])


def send(page, text: str) -> None:
    page.fill("#chat-input textarea", text)
    page.click("#chat-send")


def wait_stats(page, count: int = 1) -> str:
    page.wait_for_function(f"document.querySelectorAll('{STATS}').length >= {count}")
    return page.locator(STATS).nth(count - 1).inner_text()


# -- tests ---------------------------------------------------------------------------------------

def test_the_page_loads_with_nothing_fetched_from_the_internet(page, server_url):
    open_playground(page, server_url)
    assert not page.locator("#fallback-banner").is_visible()  # builtin chosen on purpose
    for tab in ("Completion", "Model", "API", "Chat"):
        page.get_by_role("tab", name=tab).click()
    set_slider(page, "max-tokens", 40)
    send(page, "Hello! What can you do?")
    wait_stats(page)
    page.wait_for_load_state("networkidle")
    hosts = {urlparse(u).hostname for u in page.requests if not u.startswith(("data:", "blob:"))}
    assert hosts <= LOCAL_HOSTS, sorted(u for u in page.requests
                                        if urlparse(u).hostname not in LOCAL_HOSTS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"))


def test_a_chat_message_gets_a_streamed_reply(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 24)
    record_values(page, ANSWER)
    send(page, "Tell me about quantization.")
    assert page.locator("#chatbot [data-testid=user]").inner_text() == "Tell me about quantization."
    stats = wait_stats(page)
    assert "24 completion tokens" in stats and "tok/s" in stats
    seen = page.evaluate("window.__seen")
    assert len(seen) >= 3, seen  # it grew in steps: streamed
    assert all(seen[i + 1].startswith(seen[i][:8]) for i in range(len(seen) - 1))
    assert page.input_value("#chat-input textarea") == ""


def test_max_tokens_one_gives_a_one_token_reply(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 1)
    send(page, "Hi")
    stats = wait_stats(page)
    assert re.search(r"· 1 completion token ·", stats), stats


def test_stop_halts_a_long_generation_and_frees_the_engine(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 4000)
    send(page, "Write a very long story.")
    page.wait_for_function(f"(document.querySelector('{ANSWER}')?.innerText || '').length > 20")
    page.click("#chat-stop")
    time.sleep(1.0)
    stopped = page.locator(ANSWER).inner_text()
    time.sleep(1.5)
    assert page.locator(ANSWER).inner_text() == stopped
    assert page.locator(STATS).count() == 0  # it never finished
    page.get_by_role("tab", name="Model").click()
    page.click("#model-refresh")
    page.wait_for_function("/Active requests\\s+0\\b/.test("
                           "document.querySelector('#model-info').innerText)")


def test_two_users_are_answered_together_not_one_after_the_other(browser, page, server_url):
    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    try:
        for p in (page, other):
            open_playground(p, server_url)
            set_slider(p, "max-tokens", 4000)  # minutes of work: neither can finish first
        send(page, "First user")
        page.wait_for_function(f"(document.querySelector('{ANSWER}')?.innerText || '') !== ''")
        send(other, "Second user")
        other.wait_for_function(f"(document.querySelector('{ANSWER}')?.innerText || '') !== ''")
        # Both replies grow at the same time: the first is still being written.
        grown = [len(p.locator(ANSWER).inner_text()) for p in (page, other)]
        for p, length in zip((page, other), grown, strict=True):
            p.wait_for_function(f"document.querySelector('{ANSWER}').innerText.length > {length}")
        assert page.locator(STATS).count() == 0 and other.locator(STATS).count() == 0
        for p in (page, other):
            p.click("#chat-stop")
        deadline = time.monotonic() + 10
        while httpx.get(f"{server_url}/api/v1/health").json()["active_requests"]:
            assert time.monotonic() < deadline, "Stop did not free the engine"
            time.sleep(0.1)
    finally:
        other.context.close()


def test_retry_undo_and_clear(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 4)
    send(page, "First question")
    wait_stats(page)
    first = page.locator(ANSWER).inner_text()
    page.click("#chat-retry")
    page.wait_for_function(f"""first => document.querySelectorAll('{STATS}').length === 1
        && document.querySelector('{ANSWER}').innerText !== first""", arg=first)
    assert page.locator("#chatbot [data-testid=user]").count() == 1
    page.click("#chat-undo")
    page.wait_for_function("document.querySelectorAll('#chatbot [data-testid=user]').length === 0")
    assert page.input_value("#chat-input textarea") == "First question"
    page.click("#chat-send")
    wait_stats(page)
    page.click("#chat-clear")
    page.wait_for_function("document.querySelectorAll("
                           "'#chatbot [data-testid=user], #chatbot [data-testid=bot]').length === 0")


def test_the_completion_tab_streams(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 24)
    page.get_by_role("tab", name="Completion").click()
    page.fill("#completion-prompt textarea", "The quick brown fox")
    record_values(page, "#completion-output textarea", "value")
    page.click("#completion-run")
    page.wait_for_function(
        "document.querySelector('#completion-stats').innerText.includes('completion tokens')")
    assert "24 completion tokens" in page.inner_text("#completion-stats")
    seen = page.evaluate("window.__seen")
    assert len(seen) >= 3 and seen[-1] == page.input_value("#completion-output textarea"), seen


def test_the_model_tab_shows_quantization_and_context_window(page, server_url):
    open_playground(page, server_url)
    page.get_by_role("tab", name="Model").click()
    info = page.locator("#model-info")
    info.get_by_text("Quantization").first.wait_for()
    text = info.inner_text()
    assert "built-in test model" in text
    assert re.search(r"Quant type\s+nf4", text) and re.search(r"Bits\s+4", text)
    assert re.search(r"Context window\s+262,144 tokens", text), text


def test_the_api_tab_shows_snippets_for_this_server(page, server_url):
    open_playground(page, server_url)
    page.get_by_role("tab", name="API").click()
    curl = page.locator("#api-curl").inner_text()
    assert f"{server_url}/api/v1/chat/completions" in curl
    assert f'base_url="{server_url}/api/v1"' in page.locator("#api-openai").inner_text()


def test_the_fallback_banner_shows_when_the_builtin_model_stands_in(page, fallback_url):
    open_playground(page, fallback_url)
    banner = page.locator("#fallback-banner")
    banner.wait_for(state="visible")
    text = banner.inner_text()
    assert "built-in test model" in text and "nf4serve-test/does-not-exist" in text
