"""The chat features of the playground in Chromium against a live server on the built-in model: the
thinking switch reaching the chat template and filling the reasoning block, the live tokens/s
readout, conversations kept across a reload and switched back to, export as JSON (a request the API
takes as it is) and Markdown, and LaTeX rendered without a CDN. No page may fetch from the web
(`new_page` checks every request).

Forced reasoning: the built-in model's chat template opens `<think>` when `enable_thinking` is true
(as Qwen3's thinking templates do), so its reply, noise as it is, starts inside the reasoning.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.e2e.playground_page import (
    ANSWER,
    NOTE_TITLES,
    USER,
    open_playground,
    record_values,
    send,
    set_slider,
    wait_stats,
)

LIVE = re.compile(r"^Generating · (\d+) tokens? · ([\d.]+) tok/s$")


@pytest.fixture(scope="module")
def server_url(live_server):
    return live_server


def notes(page, title_start: str):
    """The side notes (reasoning, statistics) whose title starts with `title_start`."""
    starts = re.compile(r"^\s*" + re.escape(title_start))
    return page.locator(NOTE_TITLES).filter(has_text=starts)


def note_details(page, title_start: str) -> str:
    """Open the last note whose title starts with `title_start` and read what it holds."""
    title = notes(page, title_start).last
    title.click()
    content = title.locator("xpath=..").locator(".content")
    content.wait_for()
    return content.inner_text()


def test_the_thinking_switch_reaches_the_template_and_fills_the_reasoning_block(page,
                                                                                 server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 12)
    switch = page.locator("#thinking input")
    switch.check()
    send(page, "Think about it.")
    stats = wait_stats(page)
    assert "12 completion tokens" in stats
    # The whole reply is reasoning: shown in the collapsible block, no answer bubble.
    assert notes(page, 'Reasoning').count() == 1 and page.locator(ANSWER).count() == 0
    reasoning = note_details(page, "Reasoning")
    assert reasoning.strip()
    assert "reply continues <|im_start|>assistant\\n<think>\\n" in note_details(page, stats[:10])

    switch.uncheck()
    send(page, "Now answer directly.")
    stats = wait_stats(page, 2)
    assert ("reply continues <|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n"
            in note_details(page, stats[:10]))
    assert notes(page, 'Reasoning').count() == 1  # the second reply has none
    assert page.locator(ANSWER).count() == 1


def test_the_live_speed_readout_changes_while_streaming(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 400)  # several paced updates (ui/pacing.py: one per 50 ms)
    record_values(page, NOTE_TITLES)
    send(page, "Count to a hundred.")
    stats = wait_stats(page)
    live = [m.groups() for m in map(LIVE.match, page.evaluate("window.__seen")) if m]
    assert len(live) >= 3, live
    tokens = [int(n) for n, _ in live]
    assert tokens == sorted(tokens) and tokens[-1] > tokens[0]
    assert len({rate for _, rate in live}) >= 2  # the speed itself is measured as it streams
    assert "400 completion tokens" in stats and "tok/s" in stats


def test_a_conversation_survives_a_reload_and_can_be_switched_back_to(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 4)
    send(page, "The first conversation")
    wait_stats(page)
    first_reply = page.locator(ANSWER).inner_text()
    page.click("#new-chat")
    page.wait_for_function(f"document.querySelectorAll('{USER}').length === 0")
    send(page, "The second conversation")
    wait_stats(page)

    open_playground(page, server_url)  # the page loaded anew
    page.wait_for_function(
        f"document.querySelector('{USER}')?.innerText === 'The second conversation'")
    listed = page.locator("#conversations label")
    assert listed.all_inner_texts() == ["The second conversation", "The first conversation"]
    page.get_by_label("The first conversation").check()
    page.wait_for_function(
        f"document.querySelector('{USER}')?.innerText === 'The first conversation'")
    assert page.locator(ANSWER).inner_text() == first_reply
    assert "4 completion tokens" in wait_stats(page)


def test_export_downloads_openai_json_and_markdown(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 4)
    page.get_by_text("System prompt").click()  # the accordion opens
    page.fill("#system-prompt textarea", "Be brief.")
    send(page, "Export me")
    wait_stats(page)
    with page.expect_download() as download:
        page.click("#export-json")
    assert download.value.suggested_filename == "export-me.json"
    body = json.loads(open(download.value.path(), encoding="utf-8").read())
    roles = [(m["role"], m["content"]) for m in body["messages"]]
    assert roles[:2] == [("system", "Be brief."), ("user", "Export me")]
    assert roles[2][0] == "assistant" and roles[2][1].strip()  # the reply as generated
    assert len(roles) == 3
    # The export is a request body the API takes as it is.
    answer = httpx.post(f"{server_url}/api/v1/chat/completions",
                        json={**body, "max_tokens": 2}, timeout=60)
    assert answer.status_code == 200, answer.text

    with page.expect_download() as download:
        page.click("#export-md")
    assert download.value.suggested_filename == "export-me.md"
    # newline="": the file as written (the noise in a reply may hold a "\r\n" of its own).
    with open(download.value.path(), encoding="utf-8", newline="") as f:
        markdown = f.read()
    assert markdown.startswith("# Export me\n")
    assert "## System\n\nBe brief." in markdown and "## User\n\nExport me" in markdown
    assert f"## Assistant\n\n{roles[2][1].strip()}\n" in markdown
    assert "4 completion tokens" in markdown


def test_latex_is_rendered_in_the_page(page, server_url):
    open_playground(page, server_url)
    set_slider(page, "max-tokens", 1)
    send(page, "Euler: $e^{i\\pi} + 1 = 0$ and $$\\int_0^1 x\\,dx = \\frac{1}{2}$$")
    wait_stats(page)
    bubble = page.locator(USER)
    assert bubble.locator(".katex").count() >= 2
    assert bubble.locator(".katex-display").count() == 1  # $$...$$ is display maths
    assert "$" not in bubble.inner_text()
