"""Settings of the whole server: the engine's settings plus where and how the server listens.

One class, three ways in: command-line flags (`python app.py --model builtin --port 8123`), environment
variables (`NF4SERVE_MODEL=builtin`) and keyword arguments (tests). Flags are generated from the fields
by pydantic-settings, in kebab case; a boolean has both forms (`--ui/--no-ui`, `--offline/--no-offline`).
`--help` shows each flag's default as the README does and its variable. The README's configuration
table is `markdown_table()`; `python -m settings --markdown` prints it.
"""

from __future__ import annotations

import os
import sys
from argparse import SUPPRESS, ArgumentParser
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import CliSettingsSource, SettingsConfigDict

from inference.config import EngineSettings

ENV_PREFIX = "NF4SERVE_"
SPACE_PORT = 7860
CONTEXT_ERROR_STATUSES = (413, 400)


def _on_space() -> bool:
    """Whether this process runs on a Hugging Face Space (which sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def _default_host() -> str:
    # A Space routes traffic to 0.0.0.0:7860; anywhere else stay on loopback unless asked.
    return "0.0.0.0" if _on_space() else "127.0.0.1"  # noqa: S104


class Settings(EngineSettings):
    """Server settings: the engine's fields plus host, port, API key and UI switch."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        protected_namespaces=(),
        cli_prog_name="app.py",
        cli_kebab_case=True,
        cli_implicit_flags="dual",  # --ui/--no-ui, --offline/--no-offline
        cli_exit_on_error=True,
        cli_hide_none_type=True,
    )

    host: str = Field(
        default_factory=_default_host,
        description="Interface to listen on; `0.0.0.0` makes the server reachable from other machines.",
    )
    port: int = Field(SPACE_PORT, ge=0, le=65535, description="TCP port to listen on.")
    api_key: str | None = Field(
        None,
        description="When set, every route that reaches the engine requires it: the API (`/v1`, "
        "`/api/v1`) as `Authorization: Bearer <key>` or `X-API-Key: <key>` (health, docs and "
        "metrics excepted), the playground through a login form.",
    )
    context_error_status: int = Field(
        413,
        description="HTTP status of a prompt that does not fit the context window (`/chat/"
        "completions`, `/completions`, `/generate`): 413, or 400 as OpenAI answers it (its "
        "clients raise `BadRequestError` only for 400). The body, code "
        "`context_length_exceeded`, is the same either way.",
    )
    shutdown_timeout: float = Field(
        30.0, ge=0.0,
        description="Seconds that running requests may take to finish after SIGTERM; then open "
        "streams end with a `server_shutting_down` error event. A second signal ends at once.",
    )
    metrics: bool = Field(
        True, description="Serve Prometheus metrics at `/metrics`; `--no-metrics` turns it off."
    )
    cors_allow_origins: str = Field(
        "",
        description="Comma-separated origins allowed to call the API from a browser (CORS); "
        "empty: none.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as JSON objects (one per line)."
    )
    ui: bool = Field(
        True,
        description="Serve the Gradio playground at `/`; `--no-ui` serves the API alone (also the "
        "case when gradio is not installed).",
    )
    root_path: str = Field(
        "", description="URL prefix under which a reverse proxy serves this app, e.g. `/nf4serve`."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Logging level of the server and the engine."
    )

    @field_validator("context_error_status")
    @classmethod
    def _status(cls, value: int) -> int:
        if value not in CONTEXT_ERROR_STATUSES:
            raise ValueError(f"must be 413 or 400, not {value}")
        return value

    @classmethod
    def from_cli(cls, argv: Sequence[str] | None = None) -> Settings:
        """Settings from command-line flags (`argv`, default `sys.argv[1:]`) over environment variables."""
        args = list(sys.argv[1:] if argv is None else argv)

        def add_argument(parser: ArgumentParser, *names: str, **kwargs: Any) -> Any:
            # Each flag's help says its default as the README does and names its variable;
            # pydantic-settings' own would show `(default factory: _default_host)`.
            field = cls.model_fields.get(kwargs.get("dest", ""))
            if field is not None and kwargs.get("help") != SUPPRESS:
                kwargs["help"] = cli_help(kwargs["dest"], field).replace("%", "%%")
            return parser.add_argument(*names, **kwargs)

        return cls(_cli_settings_source=CliSettingsSource(cls, cli_parse_args=args,
                                                          add_argument_method=add_argument))

    @property
    def on_space(self) -> bool:
        return _on_space()

    def url(self, port: int) -> str:
        """The server's address for a browser: the Space's own on a Space (SPACE_HOST), else
        this machine's (loopback when listening on every interface), with the root path."""
        space_host = os.environ.get("SPACE_HOST")
        if self.on_space and space_host:
            return f"https://{space_host}"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}{self.root_path.rstrip('/')}"


# Defaults that depend on the machine, written the way the README and --help should show them.
_DOC_DEFAULTS = {
    "host": ("`127.0.0.1` (`0.0.0.0` on a Space)", "127.0.0.1 (0.0.0.0 on a Space)"),
    "cache_dir": ("`~/.cache/nf4serve`", "$XDG_CACHE_HOME/nf4serve, else ~/.cache/nf4serve"),
    "async_scheduling": ("on with CUDA, off on CPU", "on with CUDA, off on CPU"),
}


def _flag(name: str, field) -> str:
    """The flag of a setting as the README shows it; a boolean (optional or not) has both forms,
    `--ui/--no-ui`."""
    flag = name.replace("_", "-")
    boolean = field.annotation in (bool, bool | None)
    return f"`--{flag}/--no-{flag}`" if boolean else f"`--{flag}`"


def _default_text(name: str, field) -> str:
    """A setting's default in the README's words (markdown)."""
    if name in _DOC_DEFAULTS:
        return _DOC_DEFAULTS[name][0]
    default = field.default
    if default is None:
        return "—"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, str) and default == "":
        return '`""`'
    return f"`{default}`"


def default_text(name: str, field) -> str:
    """A setting's default as plain text, for `--help`."""
    if name in _DOC_DEFAULTS:
        return _DOC_DEFAULTS[name][1]
    default = field.default
    if default is None:
        return "not set"
    if isinstance(default, str) and default == "":
        return "empty"
    return _default_text(name, field).strip("`")


def cli_help(name: str, field) -> str:
    """The `--help` text of a setting: its description, its default and its variable."""
    text = field.description or ""
    text += "" if text.endswith(".") else "."
    if field.default is not None or "default" not in text.lower():  # else the text says it
        text += f" Default: {default_text(name, field)}."
    return f"{text} Env: {ENV_PREFIX}{name.upper()}."


def markdown_table(settings_cls: type[Settings] = Settings) -> str:
    """The README's configuration table: one row per setting, with its flag, variable and default."""
    rows = [
        "| Flag | Environment variable | Default | Description |",
        "|---|---|---|---|",
    ]
    for name, field in settings_cls.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(
            f"| {_flag(name, field)} | `{ENV_PREFIX}{name.upper()}` "
            f"| {_default_text(name, field)} | {description} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(markdown_table())
    else:
        sys.stdout.write("usage: python -m settings --markdown\n")
        raise SystemExit(2)
