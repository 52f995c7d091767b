"""Client API keys: one key per person, team or app, with its own models, routes, limits and usage.

The admin (``API_KEY``, or an ``ADMIN_HTTP_ROLES`` role) creates keys under ``/api/admin/keys``
(or ``nfrx keys``); a client sends one like the API key (``Authorization: Bearer nfrx-…`` or
``X-Api-Key``) and is held to its rules before anything is dispatched. ``API_KEY`` keeps full
access.

* :mod:`.model` -- what a key is (pure): the record, its JSON views, secrets and their hashes,
  the checks of an admin's request body;
* :mod:`.limits` -- the counting windows and the refusals (pure);
* :mod:`.store` -- the storage interface, an in-memory store for tests; :mod:`.sqlite_store`
  -- the embedded default, a SQLite file in ``STATE_DIR``; :mod:`.redis_store` -- the keys,
  windows and usage of several instances in their Redis (``REDIS_URL``);
* :mod:`.service` -- the keys in memory: admission on the hot path, usage, persistence;
  :mod:`.shared` -- the same for an instance among several: per-request checks in Redis;
* :mod:`.server` -- the admin routes, the agent setup route, and the plugin's background work.
"""
