"""Load a model folder through the project's 4-bit loader and print what model info reports.

    python -m inference.builtin export /tmp/builtin && python bench/load_folder.py /tmp/builtin
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import Engine, EngineSettings, GenerationRequest, SamplingParams  # noqa: E402


async def main(folder: str) -> None:
    engine = Engine(EngineSettings(model=folder, fallback=False))
    await engine.start()
    if engine.state != "ready":
        raise SystemExit(f"load failed: {engine.error}")
    result = await engine.generate(GenerationRequest(
        messages=[{"role": "user", "content": "Hello"}], sampling=SamplingParams(max_tokens=16)))
    info = engine.info()
    report = {k: info[k] for k in ("model", "builtin", "quantization", "parameters",
                                   "weight_memory_bytes", "device_map", "memory", "max_context")}
    report["sample"] = {"text": result.text, "finish_reason": result.finish_reason,
                        "usage": vars(result.usage), "timings": result.timings.as_dict()}
    print(json.dumps(report, indent=2))  # noqa: T201 (a script's report)
    await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
