"""The agent -> backend leg alone: httpx (the pool path ``forward`` used before issue 16) against
the lean h11 client (:mod:`nfrx.agent.backend_http`), in this process, one request at a time.

    python bench/backend_leg.py URL [COUNT]    # URL: a POST endpoint answering small JSON

run.py calls :func:`measure` against the canned nginx backend. Reports CPU µs of this process per
request (``time.process_time``: what the agent would spend) and requests/s, per client.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import TYPE_CHECKING

import attrs
import httpx
import trio

from nfrx.agent.proxy import BackendClient, backend_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BODY = b'{"model":"canned","messages":[{"role":"user","content":"Say hello"}]}'
HEADERS = [("content-type", "application/json"), ("accept-encoding", "identity")]


@attrs.frozen
class LegResult:
    client: str
    count: int
    cpu_us: float
    """CPU µs of this process per request."""
    rps: float


async def _httpx_once(client: BackendClient, url: str) -> None:
    request = httpx.Request(
        "POST", url, headers=HEADERS, content=BODY, extensions={"timeout": client.request_timeouts}
    )
    response = await client.pool.handle_async_request(request)
    try:
        async for _ in response.aiter_raw():
            pass
    finally:
        await response.aclose()


async def _lean_once(client: BackendClient, base: str, path: str) -> None:
    pool = client.origin(base)
    assert pool is not None
    response = await pool.send("POST", pool.origin.target(path), list(HEADERS), BODY)
    try:
        while await response.receive_some():
            pass
    finally:
        response.close()


async def measure(url: str, count: int = 2000) -> list[LegResult]:
    """Both clients, ``count`` sequential requests each after a warm-up, httpx first."""
    base, _, rest = url.partition("/v1/")
    base, path = base + "/v1", "/" + rest
    results = []
    async with backend_client(4) as client:
        assert isinstance(client, BackendClient)
        cases: dict[str, Callable[[], Awaitable[None]]] = {
            "httpx (before)": functools.partial(_httpx_once, client, url),
            "lean h11 (after)": functools.partial(_lean_once, client, base, path),
        }
        for name, once in cases.items():
            for _ in range(200):
                await once()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(count):
                await once()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            results.append(LegResult(name, count, cpu / count * 1e6, count / wall))
    return results


def main() -> None:
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    for r in trio.run(measure, sys.argv[1], count):
        print(f"{r.client:18} {r.cpu_us:7.1f} µs CPU per request, {r.rps:8.0f} requests/s")


if __name__ == "__main__":
    main()
