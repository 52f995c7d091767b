"""The MCP relay: public Streamable HTTP on the server, a private provider behind ``nfrx mcp``.

Both protocol eras share one URL, ``/api/mcp/id/{id}`` (and the same with a trailing slash; never a
redirect): *legacy* (protocol versions up to 2025-11-25: sessions, ``initialize``, GET streams,
server-to-client requests) and *modern* (2026-07-28: no sessions, per-request ``_meta``,
``subscriptions/listen``). The era of a request is read from ``MCP-Protocol-Version``
(:func:`nfrx.plugins.mcp.wire.era_of`); an absent header means legacy 2025-03-26.

Duties (see ``shared/reference/mcp.md`` section 11):

* the **server** (:mod:`.server`) terminates public HTTP: auth (``API_KEY`` or the relay's
  ``AUTH_TOKEN``), Origin/Host checks, size limits, the per-relay request cap, the session table
  bound to the creating credential, the call timeout and every other cancellation trigger. It
  parses each body once (:func:`~nfrx.plugins.mcp.wire.parse_message`) and never rewrites it;
* the **agent** (:mod:`.agent`, :mod:`.stdio`) talks to the provider: a verbatim HTTP tunnel for
  Streamable HTTP providers, a stdio <-> Streamable HTTP bridge for stdio providers, and the
  era-correct cancellation of provider work.

Modules: server side :mod:`.server` (the routes), :mod:`.refusals`, :mod:`.relay` (one exchange),
:mod:`.sessions`, :mod:`.reaper`; agent side :mod:`.agent` (the HTTP provider tunnel and the
agent process), :mod:`.http_cancel`, and the stdio bridge: :mod:`.stdio` (its Streamable HTTP
front), :mod:`.stdio_pool` (the processes), :mod:`.stdio_process` (one process),
:mod:`.stdio_exchange` (one message through a process), :mod:`.modern_validation` (the pure
2026-07-28 checks), :mod:`.splice`; both sides :mod:`.wire`.

Wire contract between the two (one tunnel stream per public HTTP exchange)
--------------------------------------------------------------------------
``Open``: ``method`` is the client's (POST, GET or DELETE); ``path`` is ``/`` (the provider's
endpoint; ``/.well-known/oauth-protected-resource`` for the metadata of a pass-through relay);
``headers`` are the client's headers filtered by :data:`~.wire.REQUEST_HEADERS` (``authorization``
only for a pass-through relay) plus the server's ``x-nfrx-mcp-*`` annotations
(:class:`~.wire.Meta`; anything a client sent under ``x-nfrx-`` is dropped); ``timeout`` is the
absolute limit (``MCP_CALL_MAX``) for requests and ``None`` for long-lived streams. The body is the
client's bytes, verbatim.

``Response``: the provider's status and headers filtered by :data:`~.wire.RESPONSE_HEADERS`; the
body is streamed verbatim (JSON, or SSE events as they come, comments included).

Cancellation: the server resets the stream (``cancelled`` when the client left or the session
ended, ``timeout`` for the call timeout, :data:`~.wire.CLIENT_CANCELLED` when the client itself
posted ``notifications/cancelled`` for it, which travels separately as an ordinary exchange). The
agent then cancels per era: legacy HTTP = close the upstream response and POST
``notifications/cancelled`` (not for ``client_cancelled``), modern HTTP = close only, stdio = write
``notifications/cancelled`` with the id the process saw; and it retires the id. The agent also
enforces ``x-nfrx-mcp-idle`` (plus a small margin) and ``Open.timeout`` itself.
"""
