"""The playground in a real browser (Debian's Chromium through Playwright) against a live server on
the built-in model: replies stream, sliders reach the engine, Stop (shown only while a reply
streams) frees the request and leaves a reply marked as stopped with its statistics, Retry, Undo and
Clear, the completion, model and API tabs work. No page may fetch from the web (`new_page`).

A screenshot of the page goes to test-artifacts/playground.png; tests/e2e/test_browser_layout.py
takes the others (phone, dark mode) and the README's.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.e2e.playground_page import (  # noqa: F401 (CHROMIUM...: test_security imports them)
    ANSWER,
    CHROMIUM,
    CHROMIUM_ARGS,
    STATS_JS,
    USER,
    offline_violations,
    open_playground,
    record_values,
    screenshot,
    send,
    set_slider,
    wait_stats,
)


@pytest.fixture(scope="module")
def server_url(live_server):
    """The shared live server on the built-in model (tests/e2e/conftest.py)."""
    return live_server


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
    assert offline_violations(page.requests) == []  # `new_page` checks it after every test too
    screenshot(page, "playground")


def test_a_chat_message_gets_a_streamed_reply(page, server_url):
    open_playground(page, server_url)
    # Long enough for several paced updates (ui/pacing.py: at most one per 50 ms) even where the
    # built-in model writes a thousand tokens a second.
    set_slider(page, "max-tokens", 400)
    record_values(page, ANSWER)
    send(page, "Tell me about quantization.")
    assert page.locator(USER).inner_text() == "Tell me about quantization."
    stats = wait_stats(page)
    assert "400 completion tokens" in stats and "tok/s" in stats
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


def test_stop_shows_while_streaming_and_leaves_a_stopped_reply_with_stats(page, server_url):
    open_playground(page, server_url)
    assert page.locator("#chat-send").is_visible() and not page.locator("#chat-stop").is_visible()
    set_slider(page, "max-tokens", 4000)
    send(page, "Write a very long story.")
    page.wait_for_function(f"(document.querySelector('{ANSWER}')?.innerText || '').length > 20")
    assert page.locator("#chat-stop").is_visible() and not page.locator("#chat-send").is_visible()
    for control in ("#chat-retry", "#chat-undo", "#chat-clear", "#new-chat"):
        assert page.locator(control).is_disabled(), control  # Stop ends the reply first
    send_box = page.locator("#chat-input textarea")
    send_box.fill("A second message meanwhile")
    send_box.press("Enter")  # refused while the reply streams: it stays in the box
    page.get_by_text("A reply is still being written").wait_for()
    assert page.locator(USER).count() == 1 and send_box.input_value().startswith("A second")
    page.click("#chat-stop")
    stats = wait_stats(page)
    assert stats.startswith("■ Stopped") and "completion tokens" in stats and "tok/s" in stats
    stopped = page.locator(ANSWER).inner_text()
    completion = int(re.search(r"(\d+) completion tokens", stats).group(1))
    assert 0 < completion < 4000
    time.sleep(1.0)
    assert page.locator(ANSWER).inner_text() == stopped  # nothing more arrives
    page.wait_for_function("document.querySelector('#chat-send').offsetParent !== null")
    assert not page.locator("#chat-stop").is_visible() and page.locator("#chat-undo").is_enabled()
    page.get_by_role("tab", name="Model").click()
    page.click("#model-refresh")
    page.wait_for_function("/Active requests\\s+0\\b/.test("
                           "document.querySelector('#model-info').innerText)")


def test_two_users_are_answered_together_not_one_after_the_other(new_page, page, server_url):
    other = new_page()
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
    assert [p.evaluate(f"{STATS_JS}.length") for p in (page, other)] == [0, 0]  # none finished
    for p in (page, other):
        p.click("#chat-stop")
    deadline = time.monotonic() + 10
    while httpx.get(f"{server_url}/api/v1/health").json()["active_requests"]:
        assert time.monotonic() < deadline, "Stop did not free the engine"
        time.sleep(0.1)


def test_retry_undo_and_clear(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 4)
    send(page, "First question")
    wait_stats(page)
    first = page.locator(ANSWER).inner_text()
    page.click("#chat-retry")
    page.wait_for_function(f"""first => {STATS_JS}.length === 1
        && document.querySelector('{ANSWER}').innerText !== first""", arg=first)
    assert page.locator(USER).count() == 1
    page.click("#chat-undo")
    page.wait_for_function(f"document.querySelectorAll('{USER}').length === 0")
    assert page.input_value("#chat-input textarea") == "First question"
    page.click("#chat-send")
    wait_stats(page)
    page.click("#chat-clear")
    page.wait_for_function("document.querySelectorAll("
                           "'#chatbot [data-testid=user], #chatbot [data-testid=bot]').length === 0")
    page.wait_for_function("!document.querySelector('#conversations').innerText"
                           ".includes('First question')")  # a cleared chat is not kept


def test_the_completion_tab_streams(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 400)  # several paced updates (see the chat test above)
    page.get_by_role("tab", name="Completion").click()
    page.fill("#completion-prompt textarea", "The quick brown fox")
    record_values(page, "#completion-output textarea", "value")
    page.click("#completion-run")
    page.wait_for_function(
        "document.querySelector('#completion-stats').innerText.includes('completion tokens')")
    assert "400 completion tokens" in page.inner_text("#completion-stats")
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
