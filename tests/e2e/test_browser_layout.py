"""The playground's layout in Chromium at 1440x900 and 390x844, light and dark, on a server whose
requested model could not be had (the built-in one stands in, so the banner shows): text contrast of
at least 4.5:1 computed from the rendered colours, a phone width without broken words, stacked
buttons or horizontal scrolling, the chat filling the window, the sliders only beside the tabs that
use them. No page may fetch from the web (`new_page` checks every request).

Screenshots of every size and theme go to test-artifacts/; playground-readme.png is the README's
(docs/playground.png is a copy of it).
"""

from __future__ import annotations

import pytest

from inference.config import DEFAULT_MODEL
from tests.e2e.page_checks import boxes, broken_words, in_one_row, low_contrast
from tests.e2e.playground_page import (
    DESKTOP,
    LIVE_JS,
    NOTE_TITLES,
    PHONE,
    open_playground,
    screenshot,
    send,
    set_slider,
    wait_stats,
)

# Rendered markdown of every kind in a bubble: a table, code, a link, LaTeX.
RICH_MESSAGE = """Compare **NF4** and FP4 for $w \\in [-1, 1]$:

| type | levels |
|---|---|
| NF4 | 16 |

`bnb_4bit_quant_type="nf4"`, see [the paper](#qlora). $$q = \\mathrm{round}(w / s)$$"""
# What the contrast check measures by name (each must be on the page), beside the whole page.
CHECKED = ["#fallback-banner", "#chatbot [data-testid=user]", "#chatbot [data-testid=bot]",
           "#chat-send", "#chat-retry", "#chat-undo", "#chat-clear", "#thinking", "#new-chat",
           "#export-json", "#export-md", "#temperature", "#top-p", "#top-k", "#max-tokens",
           "body"]


@pytest.fixture(scope="module")
def fallback_url(server_factory, tmp_path_factory):
    """No model named and an empty Hugging Face cache offline: the built-in model stands in."""
    hub = tmp_path_factory.mktemp("hf-home")
    return server_factory(env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(hub)})


def open_with_banner(page, url: str) -> None:
    open_playground(page, url)
    page.locator("#fallback-banner summary").wait_for()


def settle(page) -> None:
    """Wait until no progress timer shows and transitions have ended."""
    page.wait_for_function("!document.querySelector('.meta-text, .progress-text, .eta-bar')")
    page.wait_for_timeout(400)


def test_the_fallback_banner_is_one_line_with_the_details_on_demand(page, fallback_url):
    open_with_banner(page, fallback_url)
    summary = page.locator("#fallback-banner summary")
    assert summary.inner_text().strip() == "⚠️ Built-in model: replies are noise"
    details = page.locator("#fallback-banner details p")
    assert not details.is_visible()
    summary.click()
    text = details.inner_text()
    assert "built-in test model" in text and DEFAULT_MODEL in text and "random weights" in text


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_at_least_4_5_in_both_themes(new_page, fallback_url, scheme):
    page = new_page(DESKTOP, scheme)
    open_with_banner(page, fallback_url)
    page.click("#fallback-banner summary")
    set_slider(page, "max-tokens", 400)
    page.locator("#thinking input").check()
    send(page, RICH_MESSAGE)
    page.wait_for_function(f"{LIVE_JS}.length > 0")
    assert low_contrast(page, ["#chat-stop"]) == []  # Stop shows only now
    page.click("#chat-stop")
    wait_stats(page)
    page.locator(NOTE_TITLES).first.click()  # the reasoning block, closed once stopped
    settle(page)
    assert page.locator("#chatbot .katex").count() >= 2
    assert low_contrast(page, CHECKED) == []
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, f"playground-desktop-{scheme}")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_phone_gets_whole_words_one_row_of_buttons_and_full_width_replies(new_page,
                                                                           fallback_url, scheme):
    page = new_page(PHONE, scheme)
    open_with_banner(page, fallback_url)
    assert broken_words(page, "#header h1") == []
    page.wait_for_function("!document.querySelector('#sidebar.open')")  # it would cover the page
    summary = page.locator("#fallback-banner summary")
    line = float(summary.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"))
    assert summary.bounding_box()["height"] < 1.5 * line  # one line, not cut short
    assert summary.evaluate("e => e.scrollWidth <= e.clientWidth")
    set_slider(page, "max-tokens", 24)
    send(page, "Hello from a phone: is this reply as wide as the screen allows?")
    wait_stats(page)
    settle(page)
    actions = ["#thinking", "#chat-retry", "#chat-undo", "#chat-clear"]
    assert in_one_row(page, actions) and in_one_row(page, ["#chat-input", "#chat-send"])
    for button in actions[1:]:  # each wide enough for its label
        assert page.locator(button).evaluate("e => e.scrollWidth <= e.clientWidth && "
                                             "e.clientWidth >= 48"), button
    reply, chat = boxes(page, ["#chatbot .bot-row .message", "#chatbot .message-wrap"])
    assert reply["width"] >= 0.97 * chat["width"], (reply, chat)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert low_contrast(page, ["body"]) == []
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, f"playground-phone-{scheme}")
    summary.click()
    assert page.locator("#fallback-banner details p").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_chat_fills_the_window_and_the_sliders_show_where_they_apply(page, fallback_url):
    page.set_viewport_size({"width": DESKTOP[0], "height": DESKTOP[1]})
    open_with_banner(page, fallback_url)
    chat, actions = boxes(page, ["#chatbot", "#chat-actions"])
    assert chat["height"] > 460
    assert DESKTOP[1] - 160 < actions["bottom"] <= DESKTOP[1]  # down to the window's bottom
    sliders = page.locator("#sampling")
    for tab, shown in (("Completion", True), ("Model", False), ("API", False), ("Chat", True)):
        page.get_by_role("tab", name=tab).click()
        sliders.wait_for(state="visible" if shown else "hidden")


def test_the_readme_screenshot(new_page, live_server):
    """The README's picture: a two-turn chat, the second with reasoning (the built-in model's text
    is noise; the README says so under the picture)."""
    page = new_page(DESKTOP)
    open_playground(page, live_server)
    set_slider(page, "max-tokens", 24)
    send(page, "What does NF4 store for a weight $w$ of a block with scale $s$?")
    wait_stats(page)
    page.locator("#thinking input").check()
    set_slider(page, "max-tokens", 20)
    send(page, "Think it through, then give the formula.")
    wait_stats(page, 2)
    page.locator(NOTE_TITLES).filter(has_text="Reasoning").click()
    settle(page)
    page.locator("#chatbot .bubble-wrap").evaluate("e => e.scrollTo(0, 0)")
    page.wait_for_timeout(200)
    screenshot(page, "playground-readme")
