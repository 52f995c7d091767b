"""The transfer plugin (:mod:`nfrx.server.plugin`): one-time byte streams between two peers under
``/api/transfer`` (:mod:`.server`), always on.

Per gateway it owns the open channels (:class:`~.channels.TransferChannels`, which the jobs plugin
offers on its jobs), where the channels of several instances live (:class:`~.homes.TransferHomes`:
with ``REDIS_URL`` a side may reach another instance than its channel's) and one background task,
the channels' expiry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from nfrx.plugins.transfer.channels import ChannelsCollector, TransferChannels
from nfrx.plugins.transfer.homes import TransferHomes
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
        self.homes = TransferHomes.of(gateway)

    def blueprint(self) -> Blueprint:
        from nfrx.plugins.transfer.server import blueprint

        return blueprint(self.gateway, self.channels, self.homes)

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
