"""The transfer plugin (:mod:`nfrx.server.plugin`): one-time byte streams between two peers under
``/api/transfer`` (:mod:`.server`), always on.

Per gateway it owns the open channels (:class:`~.channels.TransferChannels`, which the jobs plugin
offers on its jobs) and one background task, their expiry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from nfrx.plugins.transfer.channels import ChannelsCollector, TransferChannels
from nfrx.server.plugin import Plugin

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.registry import Collector
    from quart import Blueprint

    from nfrx.server.gateway import Gateway
    from nfrx.server.openapi import ApiPart
    from nfrx.server.state import Clocks


class TransferPlugin(Plugin):
    name = "transfer"
    always_on = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.channels = TransferChannels(gateway.config.transfer_ttl)
        self.channels.listeners.append(gateway.registry.wake)  # state streams follow transfers

    def blueprint(self) -> Blueprint:
        from nfrx.plugins.transfer.server import blueprint

        return blueprint(self.gateway, self.channels)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Channel expiry."""
        await self.channels.run(task_status=task_status)

    def state(self, section: dict[str, Any], clocks: Clocks) -> dict[str, Any]:
        return self.channels.state()

    def collectors(self) -> Iterable[Collector]:
        return (ChannelsCollector(self.channels),)

    @classmethod
    def api(cls) -> ApiPart:
        from nfrx.plugins.transfer.openapi import api

        return api()
