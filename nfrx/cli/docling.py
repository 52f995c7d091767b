"""``nfrx docling``."""

from __future__ import annotations

from nfrx.cli.options import run_agent, settings_command
from nfrx.config.model import DoclingAgentConfig

HELP = (
    "Run a Docling agent next to a docling-serve instance. It dials the server's "
    "/api/docling/connect, checks DOC_BASE_URL/health and relays document conversions (sync and "
    "async) to DOC_BASE_URL. SIGTERM/SIGINT drains gracefully; a second one stops at once."
)

# ``run`` is looked up when the command runs, so that tests can replace it.
command = settings_command(DoclingAgentConfig, lambda config: run(config))


def run(config: DoclingAgentConfig) -> None:
    run_agent(config, "docling")
