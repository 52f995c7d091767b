"""Write the example environment files of the systemd units from the config models.

Regenerate with ``python packaging/env/generate.py`` (from the checkout, with nfrx importable);
tests/packaging/test_env_examples.py fails when a checked-in file differs from what this writes,
so a new setting cannot be forgotten here.

Every setting appears commented out with its default, so an untouched file changes nothing.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs

from nfrx.config.model import AgentConfig, LlmAgentConfig, ServerConfig

HERE = Path(__file__).resolve().parent

COMING: dict[str, tuple[tuple[str, str, str], ...]] = {
    "mcp": (
        ("PROVIDER_URL", "", "URL of the MCP server (JSON-RPC over HTTP) this agent relays to."),
    ),
    "docling": (
        ("DOC_BASE_URL", "http://127.0.0.1:5001", "Base URL of the Docling Serve backend."),
        ("DOC_API_KEY", "", "Key sent to the Docling backend."),
    ),
    "asr": (
        (
            "ASR_BASE_URL",
            "http://127.0.0.1:5002/v1",
            "Base URL of the OpenAI-compatible speech-to-text backend.",
        ),
        ("ASR_API_KEY", "", "Key sent to the speech-to-text backend."),
    ),
}
"""Kind-specific settings of the agents that do not exist yet (names from the original nfrx)."""

AGENTS: dict[str, type[Any]] = {
    "llm": LlmAgentConfig,
    "mcp": AgentConfig,
    "docling": AgentConfig,
    "asr": AgentConfig,
}


def value(default: Any) -> str:
    """``default`` as an environment value nfrx parses back to the same setting."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, width=98, initial_indent="# ", subsequent_indent="# ")


def _settings(cls: type[Any], *, kind: str) -> list[str]:
    lines: list[str] = []
    for field in attrs.fields(cls):
        env = field.metadata["env"]
        default = value(field.default)
        help_text = field.metadata["help"]
        if env == "SERVER_URL" and kind != "llm":
            default = default.replace("/api/llm/", f"/api/{kind}/")
            help_text += f" For nfrx {kind}: the /api/{kind}/connect endpoint."
        if field.metadata.get("secret"):
            help_text += " Secret: keep this file readable by root only."
        if env == "DRAIN_TIMEOUT":
            help_text += (
                " The unit's TimeoutStopSec is this plus 30 s; if you raise it, raise "
                "TimeoutStopSec too (systemctl edit)."
            )
        if env == "LOG_DIR" and kind != "server":
            help_text += (
                " The journal already has the logs; under the unit only "
                f"/var/log/nfrx/{kind}-NAME (its LogsDirectory) is writable."
            )
        if env == "RECONNECT":
            help_text += " The unit sets RECONNECT=true; this file may override it."
        lines += [*_comment(help_text), f"#{env}={default}", ""]
    return lines


def render(kind: str) -> str:
    """The example environment file of ``kind`` (``server``, ``llm``, ``mcp``, ...)."""
    if kind == "server":
        head = [
            "# /etc/nfrx/server.env: environment of nfrx.service (nfrx serve).",
            "#",
            "# Every setting, commented out, with its default: uncomment a line to change it.",
            "# Settings here override /etc/nfrx/server.yaml (read if it exists); see",
            "# docs/settings.md. This file holds secrets: keep it mode 0600, owner root.",
            "# Apply changes with: systemctl restart nfrx",
        ]
        body = _settings(ServerConfig, kind=kind)
    else:
        coming = kind in COMING
        head = [
            f"# /etc/nfrx/{kind}.env.example: example environment of nfrx-{kind}@NAME.service.",
            "#",
            "# Copy it once per agent instance:",
            f"#   install -m 600 /etc/nfrx/{kind}.env.example /etc/nfrx/{kind}-NAME.env",
            f"#   systemctl enable --now nfrx-{kind}@NAME",
            "# Every setting, commented out, with its default: uncomment a line to change it.",
            f"# Settings here override /etc/nfrx/{kind}.yaml (read if it exists, by every",
            "# instance); see docs/settings.md. Keep instance files mode 0600, owner root.",
        ]
        if coming:
            head += [
                "#",
                f"# nfrx {kind} is not released yet: the unit and this file are ready for it.",
                "# Every agent shares the settings below but the last block, which lists the",
                "# ones expected for this kind (marked 'coming': their names may change).",
            ]
        body = _settings(AGENTS[kind], kind=kind)
        for env, default, help_text in COMING.get(kind, ()):
            body += [*_comment(f"(coming) {help_text}"), f"#{env}={default}", ""]
    head += [
        "#",
        "# Generated by packaging/env/generate.py from nfrx/config/model.py: do not edit.",
        "",
    ]
    return "\n".join(head + body).rstrip("\n") + "\n"


KINDS = ("server", *AGENTS)


def main() -> None:
    for kind in KINDS:
        (HERE / f"{kind}.env").write_text(render(kind), encoding="utf-8")
    print(f"wrote {', '.join(k + '.env' for k in KINDS)} in {HERE}", file=sys.stderr)


if __name__ == "__main__":
    main()
