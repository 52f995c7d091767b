"""``nfrx llm``."""

from __future__ import annotations

from nfrx.cli.options import run_agent, settings_command
from nfrx.config.model import LlmAgentConfig

HELP = (
    "Run an LLM agent next to an OpenAI-compatible backend (Ollama, llama.cpp, vLLM, ...). It "
    "dials the server's /api/llm/connect, announces the backend's models and relays requests to "
    "COMPLETION_BASE_URL. SIGTERM/SIGINT drains gracefully; a second one stops at once."
)

# ``run`` is looked up when the command runs, so that tests can replace it.
command = settings_command(LlmAgentConfig, lambda config: run(config))


def run(config: LlmAgentConfig) -> None:
    run_agent(config, "llm")
