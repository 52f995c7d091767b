"""``nfrx asr``."""

from __future__ import annotations

from nfrx.cli.options import run_agent, settings_command
from nfrx.config.model import AsrAgentConfig

HELP = (
    "Run a speech-to-text agent next to an OpenAI-compatible transcription backend "
    "(faster-whisper-server, speaches, ...). It dials the server's /api/asr/connect, announces "
    "the backend's models and relays transcriptions and translations to ASR_BASE_URL. "
    "SIGTERM/SIGINT drains gracefully; a second one stops at once."
)

# ``run`` is looked up when the command runs, so that tests can replace it.
command = settings_command(AsrAgentConfig, lambda config: run(config))


def run(config: AsrAgentConfig) -> None:
    run_agent(config, "asr")
