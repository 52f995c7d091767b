"""The LLM plugin, agent side: an OpenAI-compatible backend behind ``COMPLETION_BASE_URL``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nfrx.agent.probe import openai_models
from nfrx.agent.proxy import Outcome, forward
from nfrx.agent.runtime import BackendState

if TYPE_CHECKING:
    import httpx

    from nfrx.config.model import LlmAgentConfig
    from nfrx.transport.streams import IncomingStream


class LlmBackend:
    kind = "llm"

    def __init__(self, config: LlmAgentConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.base_url = config.completion_base_url.rstrip("/")
        self.poll_interval = config.model_poll_interval
        self.embedding_batch_size = config.embedding_batch_size

    def _auth(self) -> dict[str, str]:
        key = self.config.completion_api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    async def probe(self) -> BackendState:
        """GET ``<base>/models``; the ids of ``data[]`` are the models this agent serves (an empty
        list is a valid answer). Anything but a 200 with an OpenAI model list means not ready."""
        models = await openai_models(self.client, self.base_url, self._auth())
        return BackendState(models=models, embedding_batch_size=self.embedding_batch_size)

    async def handle(self, stream: IncomingStream) -> Outcome:
        return await forward(
            self.client, self.base_url, stream, api_key=self.config.completion_api_key
        )
