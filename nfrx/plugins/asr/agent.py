"""The ASR plugin, agent side: an OpenAI-compatible transcription backend behind ``ASR_BASE_URL``
(faster-whisper-server, speaches, a whisper.cpp server with an OpenAI shim, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nfrx.agent.probe import openai_models, probe_get
from nfrx.agent.proxy import Outcome, forward
from nfrx.agent.runtime import BackendState

if TYPE_CHECKING:
    import httpx

    from nfrx.config.model import AsrAgentConfig
    from nfrx.transport.streams import IncomingStream

PROBE_INTERVAL = 20.0
"""Seconds between re-reads of the backend's models while it answers (the original's interval)."""


class AsrBackend:
    kind = "asr"

    def __init__(self, config: AsrAgentConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.base_url = config.asr_base_url.rstrip("/")
        self.poll_interval = PROBE_INTERVAL

    def _auth(self) -> dict[str, str]:
        key = self.config.asr_api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    async def probe(self) -> BackendState:
        """GET ``<base>/models``; the ids of ``data[]`` are the models this agent serves.

        With ``ASR_MODELS`` set, those ids are announced instead and any HTTP answer below 500
        (a 404 from a server without the route included) counts as the backend being up.
        """
        configured = self.config.asr_models
        if configured:
            await probe_get(self.client, f"{self.base_url}/models", self._auth(), ok_below=500)
            return BackendState(models=configured)
        return BackendState(models=await openai_models(self.client, self.base_url, self._auth()))

    async def handle(self, stream: IncomingStream) -> Outcome:
        return await forward(self.client, self.base_url, stream, api_key=self.config.asr_api_key)
