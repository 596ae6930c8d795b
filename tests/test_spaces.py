"""The Space's configuration: spaces.yaml is complete and consistent with the project, and README.md
starts with the same YAML front matter (which is what Hugging Face Spaces actually read)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from inference.config import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
# GPUs a Space can ask for that hold the default model (about 3 GB of 4-bit weights) plus its cache.
GPU_HARDWARE = {"t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large", "a100-large"}


def spaces() -> dict:
    return yaml.safe_load((ROOT / "spaces.yaml").read_text(encoding="utf-8"))


def front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, f"{path.name} does not start with a YAML front matter block"
    return yaml.safe_load(match.group(1))


def pinned_gradio() -> str:
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    match = re.search(r"^gradio==([\w.]+)", text, re.M)
    assert match, "requirements.txt must pin gradio exactly"
    return match.group(1)


def test_spaces_yaml_describes_this_app():
    config = spaces()
    assert config["sdk"] == "gradio"
    assert config["sdk_version"] == pinned_gradio()
    assert isinstance(config["sdk_version"], str) and isinstance(config["python_version"], str)
    assert (ROOT / config["app_file"]).is_file()
    assert config["models"] == [DEFAULT_MODEL]
    assert config["suggested_hardware"] in GPU_HARDWARE
    assert config["title"] and 0 < len(config["short_description"]) <= 60


def test_the_installed_gradio_is_the_pinned_one():
    import gradio

    assert gradio.__version__ == pinned_gradio()


def test_readme_front_matter_equals_spaces_yaml():
    assert front_matter(ROOT / "README.md") == spaces()
