"""The stack's ceiling: hypercorn's trio worker serving a bare ASGI app that answers every request
with the canned chat completion, or under ``/sse/`` with the canned 4-event stream, in one body
message (no Quart, no tunnel, no agent, no backend).

    python bench/ceiling_app.py PORT

Whatever nfrx does per request comes on top of this, so its requests/s bound what ``nfrx
serve`` can reach on the machine, whatever the relay costs. run.py measures it next to nginx.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from stack import CANNED_JSON, CANNED_SSE

BODY = CANNED_JSON.encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
SSE_BODY = CANNED_SSE.encode()
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    sse = scope["path"].startswith("/sse/")
    headers = SSE_HEADERS if sse else HEADERS
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": SSE_BODY if sse else BODY})


def main() -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{int(sys.argv[1])}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    trio.run(functools.partial(serve, app, config, mode="asgi"))


if __name__ == "__main__":
    main()
