"""The MCP relay, server side: public Streamable HTTP (both eras) at ``/api/mcp/id/{id}``.

Routes (prefix ``/api/mcp``): ``/connect`` is the WebSocket ``nfrx mcp`` agents dial (a live
duplicate ``CLIENT_ID`` is refused with ``id_in_use`` by
:func:`~nfrx.server.agent_socket.serve_agent`);
``POST|GET|DELETE /id/{id}`` and ``/id/{id}/`` (two rules: never a redirect) carry MCP; for
pass-through relays ``GET /.well-known/oauth-protected-resource/api/mcp/id/{id}`` serves the
provider's protected-resource metadata.

Checks, in order, each refused with an HTTP status and a JSON-RPC error body (id ``null`` before
the body is parsed): draining 503; ``Host`` outside ``MCP_ALLOWED_HOSTS`` 403; a foreign
``Origin`` 403; an unknown relay 404 / an offline one 503 (a caller without the API key gets 401
instead when API auth is configured: which ids exist is not revealed); the caller's credential
401; a provider not ready 503; ``Content-Type`` 415; size 413; a body that is not one JSON-RPC
message 400; an unknown session or one created by another credential 404; the per-relay request
cap (requests only) or stream cap 429; the session cap 503 (on ``initialize``). The refusals
themselves and the checks that need no relay state live in :mod:`.refusals`; the checks run in
the methods of :class:`McpRelayRoutes`, one instance per gateway.

Task tree and where each cancellation trigger lives::

    connect route (one per agent tunnel)
    +-- serve_agent: the tunnel (its end fails every stream: tunnel loss -> TunnelClosed)
    the plugin's run (one per gateway, in the server's root nursery; :mod:`.reaper`)
    +-- sweeper: reaps idle sessions (Call.stop -> scope cancelled) and DELETEs them upstream
    request route (one per public exchange; quart-trio cancels it when the client leaves)
    +-- McpExchange.run: open stream, send, wait for the head inside Call.watch()
    +-- body generator (SSE) / whole-body read (JSON): receives inside Call.watch()

``Call.watch`` is the one cancel scope per wait: inactivity and absolute deadlines (``touch`` moves
the first on provider activity and on the client's replies in the same session), the client's own
``notifications/cancelled`` and DELETE/reaping (``stop``). The drain waits for counted requests
(registry slots); at its deadline the tunnels close and in-flight calls get
``MCP_PROVIDER_UNAVAILABLE``. Client disconnect and every other end run ``McpExchange.finish``,
which resets the tunnel stream so the agent cancels the provider's work.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
from typing import TYPE_CHECKING, Final

import trio
from quart import Blueprint, Response, request

from nfrx.plugins.mcp import refusals, wire
from nfrx.plugins.mcp.refusals import McpRefusal
from nfrx.plugins.mcp.relay import McpExchange
from nfrx.plugins.mcp.sessions import Call, EndedBy, McpSession, credential_hash
from nfrx.server import auth
from nfrx.server.agent_socket import serve_agent
from nfrx.server.cors import OriginPolicy
from nfrx.server.gateway import use_error_style
from nfrx.server.http_errors import HttpError
from nfrx.server.registry import AgentStatus
from nfrx.server.request_body import BodyTimeout, next_chunk

if TYPE_CHECKING:
    from nfrx.plugins.mcp.sessions import McpRelays
    from nfrx.protocol import Response as ResponseHead
    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord

KIND: Final = "mcp"
PREFIX: Final = f"/api/{KIND}"
WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"
METADATA_TIMEOUT: Final = 10.0
"""Seconds a pass-through relay's protected-resource metadata may take."""

log = logging.getLogger("nfrx.mcp")

_RESOURCE_METADATA = re.compile(r'resource_metadata="[^"]*"')


def _refuse(relay_id: str, refusal: McpRefusal) -> McpRefusal:
    """``refusal``, logged with the request it refuses."""
    log.warning(
        "refused %s %s/id/%s: %d %s: %s",
        request.method,
        PREFIX,
        relay_id,
        refusal.status,
        refusal.code,
        refusal.message,
    )
    return refusal


class McpRelayRoutes:
    """The MCP relay's routes over one gateway (see the module docstring).

    The request handlers (:meth:`post`, :meth:`get_stream`, :meth:`delete`, :meth:`metadata`)
    and the checks they share run inside the route's request context and read ``request``;
    a refusal is raised as :class:`McpRefusal` (logged, and answered by the app with its status
    and JSON-RPC body: the routes' error style is ``jsonrpc``). The relays' sessions and calls
    live in ``relays`` (the plugin's :class:`~nfrx.plugins.mcp.sessions.McpRelays`), not here.
    """

    def __init__(self, gateway: Gateway, relays: McpRelays) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.registry = gateway.registry
        self.relays = relays
        self.origins = OriginPolicy(self.config.allowed_origins)
        self.allowed_hosts = self.config.mcp_allowed_hosts
        self.api_configured = bool(self.config.api_key) or bool(self.config.api_http_roles)

    def blueprint(self) -> Blueprint:
        # No url_prefix: the metadata route lives under /.well-known.
        bp = Blueprint(KIND, __name__)
        bp.add_websocket(f"{PREFIX}/connect", "connect", self.connect)
        bp.add_url_rule(
            f"{WELL_KNOWN}{PREFIX}/id/<relay_id>", "metadata", self.metadata, methods=["GET"]
        )
        methods = ["POST", "GET", "DELETE"]
        bp.add_url_rule(f"{PREFIX}/id/<relay_id>", "relay", self.mcp, methods=methods)
        bp.add_url_rule(f"{PREFIX}/id/<relay_id>/", "relay_slash", self.mcp, methods=methods)
        bp.before_request(self.jsonrpc_errors)
        return bp

    @staticmethod
    async def jsonrpc_errors() -> None:
        """Every error of these routes is answered as a JSON-RPC error (MCP's own shape)."""
        use_error_style("jsonrpc")

    # -- the agents' tunnel --------------------------------------------------------------------

    async def connect(self) -> Response | None:
        try:
            return await serve_agent(self.gateway, KIND)
        finally:
            self.relays.forget_closed()

    # -- admission -----------------------------------------------------------------------------

    def admit(self, relay_id: str) -> tuple[AgentRecord, str | None, bool]:
        """The checks common to every method (see the module docstring): the relay, the bearer,
        and whether the relay passes auth through."""
        if self.gateway.draining:
            raise _refuse(relay_id, refusals.draining())
        self._check_host_and_origin(relay_id)
        bearer = auth.bearer_token(request.headers.get("Authorization"))
        api_ok = self.api_configured and auth.authorized(
            bearer,
            self.config.api_key,
            request.headers.get("X-User-Roles"),
            self.config.api_http_roles,
        )
        # A client key counts as the API key for the relays its routes allow.
        api_ok = api_ok or self._client_key_admitted(relay_id, bearer)
        agent = self._connected_relay(relay_id, api_ok)
        passthrough = agent.options.get("auth_passthrough") == "true"
        digest = agent.options.get("auth_token_sha256", "")
        keyed = self.api_configured or bool(digest)
        if not passthrough and keyed and not (api_ok or refusals.token_matches(bearer, digest)):
            raise _refuse(relay_id, refusals.unauthorized())
        if agent.status != AgentStatus.READY:
            why = "is draining" if agent.status == AgentStatus.DRAINING else "cannot reach it"
            message = f"the relay's provider is not available (the relay {why})"
            raise _refuse(relay_id, refusals.unavailable(message))
        return agent, bearer, passthrough

    def _client_key_admitted(self, relay_id: str, bearer: str | None) -> bool:
        """True for a client key allowed on this relay now; its refusals (401, 403, 429) as
        JSON-RPC errors."""
        keys = self.gateway.client_keys
        try:
            return keys is not None and keys.admit(bearer, f"{KIND}:{relay_id}")
        except HttpError as refused:
            code = {
                401: wire.RelayCode.UNAUTHORIZED,
                403: wire.RelayCode.FORBIDDEN,
            }.get(refused.status, wire.RelayCode.LIMIT_EXCEEDED)
            raise _refuse(
                relay_id,
                McpRefusal(
                    refused.status,
                    code,
                    refused.message,
                    retryable=refused.status == 429,
                    headers=refused.headers,
                ),
            ) from refused

    def _check_host_and_origin(self, relay_id: str) -> None:
        """403 for a ``Host`` outside ``MCP_ALLOWED_HOSTS`` or a foreign ``Origin``."""
        host = request.headers.get("Host", "")
        if self.allowed_hosts and not refusals.host_allowed(host, self.allowed_hosts):
            raise _refuse(
                relay_id,
                McpRefusal(403, wire.RelayCode.FORBIDDEN, f"the Host {host!r} is not allowed"),
            )
        origin = request.headers.get("Origin")
        if origin is not None and not (
            self.origins.allows(origin) or refusals.same_origin(origin, host)
        ):
            raise _refuse(
                relay_id,
                McpRefusal(403, wire.RelayCode.FORBIDDEN, f"the Origin {origin!r} is not allowed"),
            )

    def _connected_relay(self, relay_id: str, api_ok: bool) -> AgentRecord:
        """The relay's agent; else 401 for a caller without the API key when API auth is
        configured (which ids exist is not revealed), 503 for a relay seen before, 404."""
        agent = self.registry.get(KIND, relay_id)
        if agent is not None and not agent.session.closed:
            return agent
        if self.api_configured and not api_ok:
            raise _refuse(relay_id, refusals.unauthorized())
        if relay_id in self.relays.seen:
            message = f"relay offline: {relay_id!r} is not connected now"
            raise _refuse(relay_id, refusals.unavailable(message))
        raise _refuse(
            relay_id,
            McpRefusal(404, wire.RelayCode.RELAY_NOT_FOUND, f"no MCP relay {relay_id!r} is known"),
        )

    async def read_message(self, relay_id: str) -> tuple[bytes, wire.Message]:
        """The body, whole (415 unless JSON, 413 past ``BROKER_MAX_REQ_BYTES``, 408 when it
        stalls for ``BODY_TIMEOUT``), and the one JSON-RPC message it must be (400)."""
        if not refusals.is_json(request.headers.get("Content-Type", "")):
            raise _refuse(relay_id, refusals.not_json())
        limit = self.config.mcp_max_req_bytes
        too_large = refusals.too_large(limit)
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _refuse(relay_id, too_large)
        parts: list[bytes] = []
        size = 0
        body_iter = aiter(request.body)
        while True:
            try:
                chunk = await next_chunk(body_iter, self.config.body_timeout)
            except BodyTimeout as stalled:
                raise _refuse(relay_id, refusals.body_stalled(stalled.message)) from stalled
            if chunk is None:
                break
            size += len(chunk)
            if size > limit:
                raise _refuse(relay_id, too_large)
            parts.append(chunk)
        body = b"".join(parts)
        try:
            message = wire.parse_message(body)
        except wire.InvalidMessage as exc:
            raise _refuse(relay_id, refusals.invalid_message(exc)) from exc
        return body, message

    def check_session(
        self,
        relay_id: str,
        agent: AgentRecord,
        session_id: str | None,
        credential: str,
        era: str,
        request_id: str | None,
    ) -> McpSession | None:
        """The session the request names: 404 when a legacy request names one the relay does not
        know (or another credential created); modern requests never require one."""
        if session_id is None:
            return None
        session = self.relays.state(agent).sessions.get(session_id)
        if session is not None and not hmac.compare_digest(session.credential, credential):
            session = None
        if session is None:
            if era == wire.MODERN:
                return None
            raise _refuse(relay_id, refusals.session_not_found(request_id))
        session.use()
        self.gateway.cluster.session_used(relay_id, session_id)
        version = request.headers.get("MCP-Protocol-Version")
        if version:
            session.protocol_version = version
        return session

    async def adopt_session(self, relay_id: str, agent: AgentRecord) -> None:
        """The request's ``Mcp-Session-Id``, when this instance does not know it: a session
        created through another instance of the gateway becomes known here too (same
        credential check, same provider session: the agent holds a tunnel to every instance)."""
        session_id = request.headers.get("Mcp-Session-Id")
        relay = self.relays.state(agent)
        if not session_id or session_id in relay.sessions:
            return
        found = await self.gateway.cluster.find_session(relay_id, session_id)
        if found is not None and session_id not in relay.sessions:
            credential, version = found
            relay.sessions[session_id] = McpSession(session_id, credential, version)

    # -- the exchange --------------------------------------------------------------------------

    def tunnel_headers(
        self, relay_id: str, passthrough: bool, meta: list[tuple[str, str]]
    ) -> tuple[tuple[str, str], ...]:
        headers = wire.request_headers(list(request.headers.items()), passthrough_auth=passthrough)
        meta.append((wire.Meta.PUBLIC_URL, self.public_url(relay_id)))
        return (*headers, *meta)

    def public_url(self, relay_id: str) -> str:
        base = self.config.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
        return f"{base}{PREFIX}/id/{relay_id}"

    def exchange(
        self, agent: AgentRecord, call: Call, message: wire.Message | None, kind: str
    ) -> McpExchange:
        label = f"{request.method} {PREFIX}/id/{agent.id}"
        if call.method:
            label += f" method={call.method}"
        return McpExchange(
            gateway=self.gateway,
            agent=agent,
            relay=self.relays.state(agent),
            exchanges=self.relays.exchanges,
            call=call,
            message=message,
            label=label,
            req_id=self.gateway.request_id(),
            counted=message is not None and message.kind == wire.Kind.REQUEST and not call.stream,
            kind=kind,
        )

    def rewrite_challenge(self, relay_id: str, response: Response, passthrough: bool) -> None:
        if not passthrough:
            return
        challenge = response.headers.get("WWW-Authenticate")
        if challenge and "resource_metadata=" in challenge:
            base = self.config.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
            metadata = f'resource_metadata="{base}{WELL_KNOWN}{PREFIX}/id/{relay_id}"'
            response.headers["WWW-Authenticate"] = _RESOURCE_METADATA.sub(metadata, challenge)

    # -- POST ----------------------------------------------------------------------------------

    async def post(self, relay_id: str) -> Response:
        agent, bearer, passthrough = self.admit(relay_id)
        body, message = await self.read_message(relay_id)
        await self.adopt_session(relay_id, agent)
        era = wire.era_of(request.headers.get("MCP-Protocol-Version"))
        session_id = request.headers.get("Mcp-Session-Id")
        credential = credential_hash(bearer)
        session = self.check_session(relay_id, agent, session_id, credential, era, message.id)
        tracked = session.id if session is not None else None
        meta = [(wire.Meta.ERA, era), (wire.Meta.KIND, message.kind)]
        if message.kind == wire.Kind.REQUEST:
            call, timeout = self.request_call(relay_id, agent, message, tracked, meta)
        else:
            call, timeout = self.message_call(agent, message, tracked, meta)
        ex = self.exchange(agent, call, message, message.kind)
        headers = self.tunnel_headers(relay_id, passthrough, meta)
        response, head = await ex.run(
            "POST", "/", headers, body, timeout=timeout, cleanups=self.gateway.cleanups()
        )
        if head is not None:
            created = self.note_session(relay_id, agent, head, session_id, credential)
            if created is not None:
                await self.gateway.cluster.session_opened(relay_id, *created)
        self.rewrite_challenge(relay_id, response, passthrough)
        return response

    def request_call(
        self,
        relay_id: str,
        agent: AgentRecord,
        message: wire.Message,
        tracked: str | None,
        meta: list[tuple[str, str]],
    ) -> tuple[Call, float | None]:
        """A JSON-RPC request's call and tunnel timeout, once the relay's caps let it in (429
        requests or streams, 503 sessions on ``initialize``); its annotations join ``meta``."""
        assert message.id is not None
        is_stream = message.method == "subscriptions/listen"
        self._check_caps(relay_id, agent, message, is_stream)
        exempt = message.method in wire.EXEMPT_METHODS
        idle = None if exempt else self.config.mcp_call_timeout
        timeout = None if is_stream else self.config.mcp_call_max
        deadline = trio.current_time() + timeout if timeout is not None else math.inf
        call = Call(message.method, message.id, tracked, idle, deadline, stream=is_stream)
        meta += [(wire.Meta.ID, message.id), (wire.Meta.METHOD, message.method)]
        if idle is not None:
            meta.append((wire.Meta.IDLE, f"{idle:g}"))
        return call, timeout

    def _check_caps(
        self, relay_id: str, agent: AgentRecord, message: wire.Message, is_stream: bool
    ) -> None:
        """The per-relay caps a request meets (see :meth:`request_call`)."""
        relay = self.relays.state(agent)
        streams = self.config.mcp_max_streams_per_client
        if is_stream and relay.streams >= streams:
            raise _refuse(relay_id, refusals.too_many("streams", message.id, streams))
        cap = self.config.mcp_max_concurrency_per_client
        if agent.max_concurrency > 0:
            cap = min(cap, agent.max_concurrency)
        if not is_stream and relay.requests >= cap:
            raise _refuse(relay_id, refusals.too_many("requests", message.id, cap))
        count = len(relay.sessions)
        if message.method == "initialize" and count >= self.config.mcp_max_sessions_per_client:
            raise _refuse(relay_id, refusals.sessions_full(count, message.id))

    def message_call(
        self,
        agent: AgentRecord,
        message: wire.Message,
        tracked: str | None,
        meta: list[tuple[str, str]],
    ) -> tuple[Call, float]:
        """The call of a notification or a reply to the provider's own request: nested
        activity for whatever waits in this session; never counted, never timed out by the
        relay. A client's ``notifications/cancelled`` stops the request it names (in its
        session; never ``initialize``)."""
        relay = self.relays.state(agent)
        relay.touch_session(tracked)
        if message.kind == wire.Kind.NOTIFICATION:
            meta.append((wire.Meta.METHOD, message.method))
        if message.cancelled_id is not None and tracked is not None:
            target = relay.by_id.get((tracked, message.cancelled_id))
            if target is not None and target.method != "initialize":
                target.stop(EndedBy.CLIENT_CANCELLED)
        timeout = self.config.mcp_call_timeout
        return Call(message.method, None, tracked, None, trio.current_time() + timeout), timeout

    def note_session(
        self,
        relay_id: str,
        agent: AgentRecord,
        head: ResponseHead,
        session_id: str | None,
        credential: str,
    ) -> tuple[str, str, str] | None:
        """Session bookkeeping from the provider's answer: a new ``Mcp-Session-Id`` creates a
        session bound to the caller's credential (returned: id, credential, protocol version,
        for the other instances); a 404 in a session ends it."""
        relay = self.relays.state(agent)
        created = next((v for k, v in head.headers if k.lower() == "mcp-session-id"), None)
        if created and created not in relay.sessions and head.status < 400:
            if len(relay.sessions) >= self.config.mcp_max_sessions_per_client:
                log.warning(
                    "relay %s: session %s... not recorded, MCP_MAX_SESSIONS_PER_CLIENT reached",
                    relay_id,
                    created[:8],
                )
                return None
            version = request.headers.get("MCP-Protocol-Version", "")
            relay.sessions[created] = McpSession(created, credential, version)
            log.info("MCP session %s... opened on relay %s", created[:8], relay_id)
            return created, credential, version
        if head.status == 404 and session_id and session_id in relay.sessions:
            relay.end_session(session_id)
            self.gateway.cluster.session_ended(relay_id, session_id)
            log.info("MCP session %s... ended by the provider (404)", session_id[:8])
        return None

    # -- GET and DELETE ------------------------------------------------------------------------

    async def get_stream(self, relay_id: str) -> Response:
        agent, bearer, passthrough = self.admit(relay_id)
        await self.adopt_session(relay_id, agent)
        era, session = self._session_of(relay_id, agent, bearer)
        streams = self.config.mcp_max_streams_per_client
        if self.relays.state(agent).streams >= streams:
            raise _refuse(relay_id, refusals.too_many("streams", None, streams))
        call = Call("", None, session.id if session else None, None, math.inf, stream=True)
        response, _ = await self._relay_empty(
            relay_id, agent, passthrough, call, era, "GET", timeout=None
        )
        return response

    async def delete(self, relay_id: str) -> Response:
        agent, bearer, passthrough = self.admit(relay_id)
        await self.adopt_session(relay_id, agent)
        era, session = self._session_of(relay_id, agent, bearer)
        timeout = self.config.mcp_call_timeout
        # Not attached to the session: ending the session below must not stop this exchange.
        call = Call("", None, None, None, trio.current_time() + timeout)
        response, head = await self._relay_empty(
            relay_id, agent, passthrough, call, era, "DELETE", timeout=timeout
        )
        if session is not None and head is not None and (head.status < 300 or head.status == 404):
            self.relays.state(agent).end_session(session.id)
            self.gateway.cluster.session_ended(relay_id, session.id)
            log.info("MCP session %s... ended by DELETE on relay %s", session.id[:8], relay_id)
        return response

    def _session_of(
        self, relay_id: str, agent: AgentRecord, bearer: str | None
    ) -> tuple[str, McpSession | None]:
        """The era of a GET or DELETE and the session it names (see :meth:`check_session`)."""
        era = wire.era_of(request.headers.get("MCP-Protocol-Version"))
        session_id = request.headers.get("Mcp-Session-Id")
        credential = credential_hash(bearer)
        return era, self.check_session(relay_id, agent, session_id, credential, era, None)

    async def _relay_empty(
        self,
        relay_id: str,
        agent: AgentRecord,
        passthrough: bool,
        call: Call,
        era: str,
        method: str,
        *,
        timeout: float | None,
    ) -> tuple[Response, ResponseHead | None]:
        """Relay a bodiless exchange: a GET stream or a DELETE."""
        kind = "stream" if method == "GET" else "delete"
        meta = [(wire.Meta.ERA, era), (wire.Meta.KIND, kind)]
        response, head = await self.exchange(agent, call, None, kind).run(
            method,
            "/",
            self.tunnel_headers(relay_id, passthrough, meta),
            b"",
            timeout=timeout,
            cleanups=self.gateway.cleanups(),
        )
        self.rewrite_challenge(relay_id, response, passthrough)
        return response, head

    async def mcp(self, relay_id: str) -> Response:
        if request.method == "POST":
            return await self.post(relay_id)
        if request.method == "GET":
            return await self.get_stream(relay_id)
        if request.method == "DELETE":
            return await self.delete(relay_id)
        # HEAD, which every GET rule also answers: no MCP method (it used to run a DELETE).
        raise _refuse(
            relay_id,
            McpRefusal(
                405,
                wire.RelayCode.INVALID_MESSAGE,
                f"{request.method} is not an MCP method: use POST, GET or DELETE",
                headers={"Allow": "GET, POST, DELETE"},
                code=wire.INVALID_REQUEST,
            ),
        )

    async def metadata(self, relay_id: str) -> Response:
        """A pass-through relay's protected-resource metadata, fetched through the tunnel."""
        agent = self.registry.get(KIND, relay_id)
        if agent is None or agent.session.closed or agent.options.get("auth_passthrough") != "true":
            # Only a pass-through relay has metadata to show; which other ids exist is not said.
            raise McpRefusal(
                404, wire.RelayCode.RELAY_NOT_FOUND, "no protected-resource metadata here"
            )
        call = Call("", None, None, None, trio.current_time() + METADATA_TIMEOUT)
        headers = (
            ("accept", "application/json"),
            (wire.Meta.KIND, "metadata"),
            (wire.Meta.PUBLIC_URL, self.public_url(relay_id)),
        )
        response, _ = await self.exchange(agent, call, None, "metadata").run(
            "GET",
            WELL_KNOWN,
            headers,
            b"",
            timeout=METADATA_TIMEOUT,
            cleanups=self.gateway.cleanups(),
        )
        return response
