"""Probing a local service over HTTP: one GET, its failures as :class:`BackendUnavailable`.

Every probe opens a connection of its own (``Connection: close``): relayed requests use the
agent's lean pool (:mod:`nfrx.agent.backend_http`), probes httpx's, and a probe that reused an
old keep-alive connection would call a backend that no longer accepts connections ready. One
connection per poll interval costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from nfrx.agent.runtime import BackendUnavailable

if TYPE_CHECKING:
    from collections.abc import Mapping

PROBE_TIMEOUT = 10.0


async def probe_get(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], *, ok_below: int
) -> httpx.Response:
    """GET ``url``; raises :class:`BackendUnavailable` unless it answers with a status below
    ``ok_below``."""
    try:
        response = await client.get(
            url, headers={**headers, "connection": "close"}, timeout=PROBE_TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= ok_below:
        raise BackendUnavailable(f"GET {url}: HTTP {response.status_code}")
    return response


async def openai_models(
    client: httpx.AsyncClient, base_url: str, headers: Mapping[str, str]
) -> tuple[str, ...]:
    """The ids of ``GET <base_url>/models``'s ``data[]`` (an empty list is a valid answer)."""
    url = f"{base_url}/models"
    response = await probe_get(client, url, headers, ok_below=201)  # 200 only
    try:
        payload: Any = response.json()
        return tuple(str(item["id"]) for item in payload["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendUnavailable(f"GET {url}: not an OpenAI model list") from exc
