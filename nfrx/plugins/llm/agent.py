"""The LLM plugin, agent side: an OpenAI-compatible backend behind ``COMPLETION_BASE_URL``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from nfrx.agent.proxy import Outcome, forward
from nfrx.agent.runtime import BackendState, BackendUnavailable

if TYPE_CHECKING:
    from nfrx.config.model import LlmAgentConfig
    from nfrx.transport.streams import IncomingStream

PROBE_TIMEOUT = 10.0


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
        url = f"{self.base_url}/models"
        try:
            response = await self.client.get(url, headers=self._auth(), timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise BackendUnavailable(f"GET {url}: HTTP {response.status_code}")
        try:
            payload: Any = response.json()
            models = tuple(str(item["id"]) for item in payload["data"])
        except (ValueError, KeyError, TypeError):
            raise BackendUnavailable(f"GET {url}: not an OpenAI model list") from None
        return BackendState(models=models, embedding_batch_size=self.embedding_batch_size)

    async def handle(self, stream: IncomingStream) -> Outcome:
        return await forward(
            self.client, self.base_url, stream, api_key=self.config.completion_api_key
        )
