"""The Docling plugin, agent side: a docling-serve instance behind ``DOC_BASE_URL``.

docling-serve has no models: the agent announces the one pseudo-model :data:`MODEL` so that the
server's routing, queueing and state work unchanged, and it is ready while ``GET /health``
answers 200.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nfrx.agent.probe import probe_get
from nfrx.agent.proxy import Outcome, forward
from nfrx.agent.runtime import BackendState

if TYPE_CHECKING:
    import httpx

    from nfrx.config.model import DoclingAgentConfig
    from nfrx.transport.streams import IncomingStream

MODEL = "docling"
"""The pseudo-model every Docling agent announces (the server routes on it)."""

PROBE_INTERVAL = 20.0
"""Seconds between health probes while the backend is healthy (the original's interval)."""


class DoclingBackend:
    kind = "docling"

    def __init__(self, config: DoclingAgentConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.base_url = config.doc_base_url.rstrip("/")
        self.poll_interval = PROBE_INTERVAL

    def _auth(self) -> tuple[tuple[str, str], ...]:
        key = self.config.doc_api_key
        return (("x-api-key", key),) if key else ()

    async def probe(self) -> BackendState:
        """GET ``<base>/health``: any 200 means ready."""
        await probe_get(self.client, f"{self.base_url}/health", dict(self._auth()), ok_below=201)
        return BackendState(models=(MODEL,))

    async def handle(self, stream: IncomingStream) -> Outcome:
        return await forward(self.client, self.base_url, stream, auth=self._auth())
