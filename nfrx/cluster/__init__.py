"""Several ``nfrx serve`` instances behaving as one gateway, on a shared Redis.

Every agent holds a tunnel to every live instance (:mod:`nfrx.agent.instances`), so whichever
instance a client reaches dispatches directly, and relayed bytes never pass through Redis. Redis
holds only what must be one:

================ ==============================================================================
module           what it holds or does
================ ==============================================================================
``local``        the hooks the core calls, as an instance alone (no Redis, nothing imported)
``address``      ``REDIS_URL`` / ``REDIS_ADDR`` to a coredis client (imported only then)
``store``        the Redis schema: keys, scripts, and the one place Redis errors are translated
``members``      membership (TTL heartbeats), drain flags per instance, the advertise URL
``directory``    which agents each instance has, merged into the fleet view of ``/api/state``
``queue_order``  one FIFO across the instances' dispatch queues
``shared``       :class:`~nfrx.cluster.shared.SharedCluster`: the hooks over a Redis, its tasks
``workers``      ``nfrx serve --workers N``: N instances on one host, supervised
================ ==============================================================================

Losing Redis degrades to local routing, never to an outage: each instance keeps serving
through its own tunnels, ``/healthz`` and the log say ``degraded``, and it recovers by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nfrx.cluster.local import LocalCluster

if TYPE_CHECKING:
    from nfrx.server.gateway import Gateway


def for_gateway(gateway: Gateway) -> LocalCluster:
    """The cluster hooks of ``gateway``: shared over Redis when ``REDIS_URL`` is set, else
    alone. Creating the shared one imports no Redis client yet (its ``run`` does)."""
    if not gateway.config.redis_url:
        return LocalCluster()
    from nfrx.cluster.shared import SharedCluster

    return SharedCluster(gateway)
