"""Job stores on the session's real redis-server (the `redis_url` fixture of tests/conftest.py):
two stores on one Redis stand for two instances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from nfrx.cluster.address import connect, parse
from nfrx.plugins.jobs.redis_store import RedisJobStore
from nfrx.plugins.jobs.store import StoreSettings


@asynccontextmanager
async def running_stores(
    url: str, count: int = 1, **settings: Any
) -> AsyncIterator[list[RedisJobStore]]:
    """``count`` stores on ``url`` (instances ``i0``, ``i1``, ...), each following the change
    messages, on one client each."""
    async with trio.open_nursery() as nursery:
        stores = []
        for index in range(count):
            client = connect(parse(url))
            await nursery.start(_hold, client)

            async def get(client: Any = client) -> Any:
                return client

            store = RedisJobStore(StoreSettings(**settings), get, f"i{index}")
            await nursery.start(store.run)
            stores.append(store)
        for store in stores:
            await store.following.wait()
        yield stores
        nursery.cancel_scope.cancel()


async def _hold(client: Any, *, task_status: trio.TaskStatus[None]) -> None:
    async with client:
        task_status.started()
        await trio.sleep_forever()
