"""The jobs plugin (:mod:`nfrx.server.plugin`): the original nfrx's jobs API for your own workers
under ``/api/jobs`` (:mod:`.server`), always on.

Per gateway it owns the jobs engine (:class:`~.service.JobsService` over a store: the memory
store, or with ``REDIS_URL`` the one the instances share, :mod:`.redis_store`) and one background
task, the store's deadlines (and a shared store's own task). Its jobs offer channels of the
transfer plugin (which the gateway makes first), wherever their homes are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from nfrx.plugins.jobs.memory import MemoryJobStore
from nfrx.plugins.jobs.service import JobsCollector, JobsService
from nfrx.plugins.jobs.store import StoreSettings
from nfrx.plugins.transfer.plugin import TransferPlugin
from nfrx.server.plugin import Plugin

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.registry import Collector
    from quart import Blueprint

    from nfrx.plugins.jobs.store import JobStore
    from nfrx.server.gateway import Gateway
    from nfrx.server.openapi import ApiPart
    from nfrx.server.state import Clocks

_AGES = ("oldest_queued_seconds", "oldest_inflight_seconds")


class JobsPlugin(Plugin):
    name = "jobs"
    always_on = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        config = gateway.config
        settings = StoreSettings(
            client_ttl=config.jobs_client_ttl,
            lease_seconds=config.jobs_lease_seconds,
            lease_required=config.jobs_lease_required,
            requeue_expired=config.jobs_requeue_expired,
            retention=config.jobs_retention,
            max_jobs=config.jobs_max,
        )
        store: JobStore = MemoryJobStore(settings)
        if config.redis_url:  # shared with the other instances (imports no Redis otherwise)
            from nfrx.cluster.shared import SharedCluster
            from nfrx.plugins.jobs.redis_store import RedisJobStore

            cluster = gateway.cluster
            assert isinstance(cluster, SharedCluster)
            store = RedisJobStore(settings, cluster.redis, cluster.instance_id)
        transfer = gateway.plugin(TransferPlugin)
        self.service = JobsService(
            store,
            transfer.channels,
            sse_close_delay=config.jobs_sse_close_delay,
            on_change=gateway.registry.wake,  # state streams follow jobs
            homes=transfer.homes,
        )

    def blueprint(self) -> Blueprint:
        from nfrx.plugins.jobs.server import blueprint

        return blueprint(self.gateway, self.service)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The store's deadlines (client TTL, leases, retention), and a shared store's task."""
        await self.service.run(task_status=task_status)

    def state(self, section: dict[str, Any], clocks: Clocks) -> dict[str, Any]:
        return self.service.state(clocks.trio)

    def steady(self, section: dict[str, Any]) -> dict[str, Any]:
        summary = {k: v for k, v in section["summary"].items() if k not in _AGES}
        workers = [{**worker, "active": None} for worker in section["workers"]]
        return {**section, "summary": summary, "workers": workers}

    def collectors(self) -> Iterable[Collector]:
        return (JobsCollector(self.service),)

    @classmethod
    def api(cls) -> ApiPart:
        from nfrx.plugins.jobs.openapi import api

        return api()
