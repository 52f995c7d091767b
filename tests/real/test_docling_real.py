"""The Docling plugin against a REAL docling-serve, through ``nfrx serve`` + ``nfrx docling``.

Runs only when ``NFRX_REAL_DOCLING_URL`` names a running docling-serve (e.g.
``http://127.0.0.1:5001``, the base of its ``/v1/...`` routes and ``/health``); otherwise skipped.
docling-serve needs a ~7.3 GB install and, offline, the small launcher from the backends research
note (section 4.3), so this suite was NOT run when it was written: it is checked by ruff and mypy
only, and its first real run may need adjusting to the docling-serve version at hand.

The document is a tiny HTML page sent inline (``kind: file``, base64), so no network fetch and no
layout model is needed. Covered: sync ``/v1/convert/source`` (through nfrx and direct, same
markdown), and the async path ``/v1/convert/source/async`` -> ``/v1/status/poll/{id}`` ->
``/v1/result/{id}`` through nfrx.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.e2e.harness import Server, run_plugin_agent, run_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_URL = os.environ.get("NFRX_REAL_DOCLING_URL", "").rstrip("/")
DEADLINE = 180.0
"""Seconds allowed for one conversion (sync endpoints have a ~2 s poll floor)."""

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not _URL,
        reason="real docling-serve not enabled: set NFRX_REAL_DOCLING_URL=http://HOST:PORT "
        "to a running docling-serve; see tests/real/README.md",
    ),
]

HTML = (
    b"<!doctype html><html><head><title>nfrx</title></head><body>"
    b"<h1>Relay Docling Test</h1><p>Hello <b>nfrx</b> relay.</p>"
    b"<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
    b"</body></html>"
)


def _request() -> dict[str, Any]:
    return {
        "sources": [
            {
                "kind": "file",
                "base64_string": base64.b64encode(HTML).decode(),
                "filename": "page.html",
            }
        ],
        "options": {"to_formats": ["md"]},
    }


@pytest.fixture
async def relay() -> AsyncIterator[Server]:
    async with (
        run_server() as server,
        run_plugin_agent(server, "docling", {"DOC_BASE_URL": _URL}) as agent,
    ):
        await agent.wait_for_line(r"backend ready: ")
        yield server


def _markdown(answer: dict[str, Any]) -> str:
    assert answer.get("status") == "success", answer
    md: str = answer["document"]["md_content"]
    assert "Relay Docling Test" in md
    assert "nfrx" in md
    return md


async def test_sync_convert_source_through_nfrx_matches_direct(relay: Server) -> None:
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        via_nfrx = await http.post(
            f"{relay.url}/api/docling/v1/convert/source", json=_request(), headers=relay.headers()
        )
        direct = await http.post(f"{_URL}/v1/convert/source", json=_request())
    assert via_nfrx.status_code == 200, via_nfrx.text
    assert via_nfrx.headers["content-type"].startswith("application/json")
    assert direct.status_code == 200, direct.text
    assert _markdown(via_nfrx.json()) == _markdown(direct.json())


async def test_async_convert_poll_and_result_through_nfrx(relay: Server) -> None:
    api = f"{relay.url}/api/docling/v1"
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        issued = await http.post(
            f"{api}/convert/source/async", json=_request(), headers=relay.headers()
        )
        assert issued.status_code == 200, issued.text
        task_id = issued.json()["task_id"]
        with trio.fail_after(DEADLINE):
            while True:
                poll = await http.get(
                    f"{api}/status/poll/{task_id}", params={"wait": 5}, headers=relay.headers()
                )
                assert poll.status_code == 200, poll.text
                status = poll.json()["task_status"]
                assert status not in ("failure", "revoked"), poll.text
                if status == "success":
                    break
                await trio.sleep(0.5)
        result = await http.get(f"{api}/result/{task_id}", headers=relay.headers())
    assert result.status_code == 200, result.text
    _markdown(result.json())
