"""The keys plugin (:mod:`nfrx.server.plugin`): client API keys with their own models, routes,
limits and usage, and the admin API under ``/api/admin`` (:mod:`.server`), always on.

Per gateway it owns the keys in memory (:class:`~.service.KeysService`, over the SQLite store in
``STATE_DIR``; with ``REDIS_URL`` :class:`~.shared.SharedKeysService`, over Redis), which admits
the requests that carry a client key (the gateway's
:attr:`~nfrx.server.gateway.Gateway.client_keys` hook), and one background task: running the
store, loading the keys, writing usage. Its state section is the document's own ``keys`` (about
the whole server, not one API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from nfrx.plugins.keys.metrics import KeyCollector
from nfrx.plugins.keys.service import KeysService, state_dir
from nfrx.plugins.keys.sqlite_store import FILE_NAME, SqliteKeyStore
from nfrx.server.plugin import Plugin

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.registry import Collector
    from quart import Blueprint

    from nfrx.server.gateway import Gateway
    from nfrx.server.openapi import ApiPart
    from nfrx.server.state import Clocks


class KeysPlugin(Plugin):
    name = "keys"
    always_on = True
    top_level_state = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.service: KeysService
        if gateway.config.redis_url:
            from nfrx.plugins.keys.shared import SharedKeysService

            self.service = SharedKeysService.of_redis(gateway)  # connected by run()
        else:
            store = SqliteKeyStore(state_dir(gateway.config) / FILE_NAME)  # opened by run()
            self.service = KeysService(gateway, store)

    def blueprint(self) -> Blueprint:
        from nfrx.plugins.keys.server import blueprint

        return blueprint(self.gateway, self.service)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The store, the keys' loading (started once loaded; raises StoreError if they cannot
        be), and the usage writes."""
        await self.service.run(task_status=task_status)

    def state(self, section: dict[str, Any], clocks: Clocks) -> dict[str, Any]:
        return self.service.state(clocks.wall)

    def collectors(self) -> Iterable[Collector]:
        return (KeyCollector(self.service),)

    @classmethod
    def api(cls) -> ApiPart:
        from nfrx.plugins.keys.openapi import api

        return api()
