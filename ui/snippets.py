"""Copy-ready API examples for the playground's API tab, filled with this server's own URL.

The base URL comes from the browser's request (behind a proxy, from its X-Forwarded headers), so the
snippets work as shown wherever the page was opened from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

API_PREFIX = "/api/v1"


def base_url(headers: Mapping[str, str], scheme: str, fallback_host: str, root_path: str = "") -> str:
    """The server's public origin plus root path, e.g. `http://127.0.0.1:7860`."""
    host = headers.get("x-forwarded-host") or headers.get("host") or fallback_host
    proto = headers.get("x-forwarded-proto") or scheme or "http"
    host = host.split(",")[0].strip()
    proto = proto.split(",")[0].strip()
    return f"{proto}://{host}{root_path.rstrip('/')}"


def curl_chat(url: str, model: str, api_key: bool) -> str:
    auth = ' \\\n  -H "Authorization: Bearer $NF4SERVE_API_KEY"' if api_key else ""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Write a haiku about 4-bit weights."}],
            "max_tokens": 64,
        },
        indent=2,
    )
    return (
        f"curl {url}{API_PREFIX}/chat/completions \\\n"
        f'  -H "Content-Type: application/json"{auth} \\\n'
        f"  -d '{body}'"
    )


def curl_generate(url: str, api_key: bool) -> str:
    auth = ' \\\n  -H "Authorization: Bearer $NF4SERVE_API_KEY"' if api_key else ""
    body = json.dumps({"prompt": "The capital of France is", "max_tokens": 16, "stream": True})
    return (
        f"curl -N {url}{API_PREFIX}/generate \\\n"
        f'  -H "Content-Type: application/json"{auth} \\\n'
        f"  -d '{body}'"
    )


def openai_python(url: str, model: str, api_key: bool) -> str:
    key = 'os.environ["NF4SERVE_API_KEY"]' if api_key else '"not-needed"'
    imports = "import os\n\n" if api_key else ""
    return f'''{imports}from openai import OpenAI

client = OpenAI(base_url="{url}{API_PREFIX}", api_key={key})

stream = client.chat.completions.create(
    model="{model}",
    messages=[{{"role": "user", "content": "Write a haiku about 4-bit weights."}}],
    max_tokens=64,
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
'''


def api_intro(url: str, api_key: bool) -> str:
    auth = (
        "Every endpoint but `/health` needs the key this server was started with, as "
        "`Authorization: Bearer <key>` or `X-API-Key: <key>` (behind a private Space, where "
        "`Authorization` carries your Hugging Face token)."
        if api_key
        else "No API key is needed on this server."
    )
    return (
        f"The REST API lives at **`{url}{API_PREFIX}`**: OpenAI-compatible "
        f"`/chat/completions`, raw-text `/generate`, `/models`, `/model/info` and `/health`. "
        f"{auth} The interactive schema is at [`{API_PREFIX}/docs`]({url}{API_PREFIX}/docs)."
    )
