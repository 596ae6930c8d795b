"""Server settings: CLI flags over environment variables over defaults, the Space defaults, `--help`
(readable defaults, each flag's variable, `--x/--no-x` booleans), and the README's configuration
table generated from the same fields."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from inference.config import DEFAULT_MODEL, EngineSettings
from settings import Settings, markdown_table

ROOT = Path(__file__).resolve().parent.parent
TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("NF4SERVE_") or name == "SPACE_ID":
            monkeypatch.delenv(name)


def test_defaults():
    settings = Settings.from_cli([])
    assert isinstance(settings, EngineSettings)
    assert (settings.model, settings.host, settings.port) == (DEFAULT_MODEL, "127.0.0.1", 7860)
    assert settings.ui and settings.fallback and settings.api_key is None


def test_cli_flags_in_kebab_case():
    settings = Settings.from_cli([
        "--model", "builtin", "--host", "0.0.0.0", "--port", "8123", "--api-key", "sk-1",
        "--no-ui", "--no-fallback", "--max-context", "4096", "--offline", "--quant-type", "fp4",
        "--max-active-requests", "2", "--log-level", "debug",
    ])
    assert settings.model == "builtin" and settings.host == "0.0.0.0" and settings.port == 8123
    assert settings.api_key == "sk-1" and settings.max_context == 4096
    assert not settings.ui and not settings.fallback and settings.offline
    assert settings.quant_type == "fp4" and settings.max_active_requests == 2
    assert settings.log_level == "debug"


def test_environment_variables_and_cli_precedence(monkeypatch):
    monkeypatch.setenv("NF4SERVE_PORT", "9001")
    monkeypatch.setenv("NF4SERVE_API_KEY", "from-env")
    monkeypatch.setenv("NF4SERVE_UI", "false")
    settings = Settings.from_cli([])
    assert settings.port == 9001 and settings.api_key == "from-env" and not settings.ui
    assert Settings.from_cli(["--port", "9002"]).port == 9002


def test_a_space_listens_on_all_interfaces_at_7860(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/nf4serve")
    settings = Settings.from_cli([])
    assert (settings.host, settings.port) == ("0.0.0.0", 7860) and settings.on_space


def test_invalid_values_are_refused():
    with pytest.raises(ValidationError):
        Settings.from_cli(["--max-context", "3"])
    with pytest.raises(ValidationError):
        Settings.from_cli(["--port", "70000"])
    with pytest.raises(ValidationError):
        Settings.from_cli(["--quant-type", "int3"])
    with pytest.raises(SystemExit):
        Settings.from_cli(["--no-such-flag"])


def test_keyword_arguments_never_read_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app.py", "--port", "1"])
    assert Settings(model="builtin").port == 7860


def test_markdown_table_has_one_row_per_setting():
    table = markdown_table()
    rows = table.strip().splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
    assert "| `--ui/--no-ui` | `NF4SERVE_UI` | `true` |" in table
    assert "| `--offline/--no-offline` | `NF4SERVE_OFFLINE` | `false` |" in table
    assert "| `--context-error-status` | `NF4SERVE_CONTEXT_ERROR_STATUS` | `413` |" in table
    assert "| `--port` | `NF4SERVE_PORT` | `7860` |" in table
    assert f"| `--model` | `NF4SERVE_MODEL` | `{DEFAULT_MODEL}` |" in table


def app_help() -> str:
    return subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def test_every_flag_in_the_table_is_accepted():
    flags = [flag for cell in re.findall(r"^\| `(--[a-z/-]+)`", markdown_table(), re.M)
             for flag in cell.split("/")]
    assert "--no-ui" in flags and "--ui" in flags
    help_text = app_help()
    for flag in flags:
        assert flag in help_text, flag


def test_help_shows_readable_defaults_and_every_variable():
    help_text = " ".join(app_help().split())  # argparse wraps lines
    assert "default factory" not in help_text and "(default:" not in help_text
    for name in Settings.model_fields:
        assert f"Env: NF4SERVE_{name.upper()}." in help_text, name
    assert "--ui, --no-ui" in help_text and "--fallback, --no-fallback" in help_text
    assert "installed). Default: true. Env: NF4SERVE_UI." in help_text
    assert "Default: 127.0.0.1 (0.0.0.0 on a Space). Env: NF4SERVE_HOST." in help_text
    assert "~/.cache/nf4serve. Env: NF4SERVE_CACHE_DIR." in help_text
    assert "Default: 7860. Env: NF4SERVE_PORT." in help_text


def test_boolean_flags_have_both_forms():
    assert Settings.from_cli(["--no-ui"]).ui is False and Settings.from_cli(["--ui"]).ui is True
    assert Settings.from_cli(["--offline"]).offline and not Settings.from_cli(["--no-offline"]).offline


def test_context_error_status_is_413_or_400(monkeypatch):
    assert Settings.from_cli([]).context_error_status == 413
    assert Settings.from_cli(["--context-error-status", "400"]).context_error_status == 400
    monkeypatch.setenv("NF4SERVE_CONTEXT_ERROR_STATUS", "400")
    assert Settings.from_cli([]).context_error_status == 400
    with pytest.raises(ValidationError):
        Settings.from_cli(["--context-error-status", "422"])


def test_the_url_for_a_browser(monkeypatch):
    assert Settings(host="0.0.0.0").url(8000) == "http://127.0.0.1:8000"
    assert Settings(host="::1", root_path="/p/").url(1) == "http://[::1]:1/p"
    monkeypatch.setenv("SPACE_ID", "someone/nf4serve")
    monkeypatch.setenv("SPACE_HOST", "someone-nf4serve.hf.space")
    assert Settings().url(7860) == "https://someone-nf4serve.hf.space"


def test_python_m_settings_prints_the_table():
    out = subprocess.run(
        [sys.executable, "-m", "settings", "--markdown"], cwd=ROOT, capture_output=True,
        text=True, check=True,
    ).stdout
    assert out == markdown_table()


def test_readme_table_matches_the_settings():
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not written yet")
    text = readme.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text, "README.md lacks the settings-table markers"
    region = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    assert region.strip() == markdown_table().strip(), (
        "README.md's configuration table is stale: paste the output of "
        "`python -m settings --markdown` between the markers"
    )
