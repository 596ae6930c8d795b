"""The README's API examples work as written: its curl commands and its openai-client program run
against a live server (only the address is changed to the test server's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:7860"


def api_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index("\n## API\n"):text.index("\n## Hardware\n")]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", api_section(), flags=re.S)


def test_curl_examples(live_server):
    script = blocks("sh")[0].replace(README_URL, live_server)
    commands = [c for c in script.split("\n\n") if "curl" in c]
    assert len(commands) >= 4
    for command in commands:
        run = subprocess.run(["bash", "-c", command.replace("curl ", "curl -sS --fail-with-body ", 1)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (command, run.stdout, run.stderr)
        assert run.stdout.strip(), command


def test_openai_client_example(live_server):
    program = blocks("python")[0].replace(README_URL, live_server)
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "get_weather" in run.stdout
