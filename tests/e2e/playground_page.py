"""The browser side of the playground tests: Debian's Chromium through Playwright, pages that record
every URL they ask for (a test fails if one leaves the machine), and the steps a user takes.

The fixtures that open pages (`browser`, `new_page`, `page`) are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
DESKTOP = (1440, 900)
PHONE = (390, 844)

# The answer bubbles (not reasoning, statistics or error notes, which are "thought" groups).
ANSWER = "#chatbot [data-testid=bot]:not(:has(.thought-group))"
USER = "#chatbot [data-testid=user]"
NOTE_TITLES = "#chatbot .thought-group > .title"
# A finished reply's statistics line names its completion tokens; the live readout does not.
STATS_JS = (f"[...document.querySelectorAll('{NOTE_TITLES}')]"
            ".filter(e => e.innerText.includes('completion token'))")
LIVE_JS = (f"[...document.querySelectorAll('{NOTE_TITLES}')]"
           ".filter(e => e.innerText.startsWith('Generating'))")


def offline_violations(urls: list[str]) -> list[str]:
    """The URLs that went to another machine (data: and blob: URLs stay in the page)."""
    return sorted(u for u in urls if not u.startswith(("data:", "blob:"))
                  and urlparse(u).hostname not in LOCAL_HOSTS)


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
    """The statistics line of the `count`-th finished reply, once the run is over (Send is back)."""
    page.wait_for_function(f"{STATS_JS}.length >= {count}")
    page.locator("#chat-send").wait_for(state="visible")
    return page.evaluate(f"{STATS_JS}[{count - 1}].innerText")


def screenshot(page, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
