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
cap (requests only) or stream cap 429; the session cap 503 (on ``initialize``).

Task tree and where each cancellation trigger lives::

    connect route (one per agent tunnel)
    +-- serve_agent: the tunnel (its end fails every stream: tunnel loss -> TunnelClosed)
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

import hashlib
import hmac
import logging
import math
import re
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import trio
from quart import Blueprint, Response, request

from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.reaper import sweep_forever
from nfrx.plugins.mcp.relay import McpExchange
from nfrx.plugins.mcp.sessions import Call, EndedBy, McpRelays, McpSession, credential_hash
from nfrx.server import auth
from nfrx.server.agent_socket import serve_agent
from nfrx.server.cors import OriginPolicy
from nfrx.server.http_errors import HttpError
from nfrx.server.registry import AgentStatus
from nfrx.server.request_body import BodyTimeout, next_chunk

if TYPE_CHECKING:
    from collections.abc import Sequence

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


class McpRefusal(HttpError):
    """A relay refusal: an HTTP status whose body is a JSON-RPC error (``data.nfrx.code``)."""

    def __init__(
        self,
        status: int,
        nfrx_code: str,
        message: str,
        *,
        request_id: str | None = None,
        retryable: bool = False,
        headers: dict[str, str] | None = None,
        code: int = wire.INTERNAL_ERROR,
    ) -> None:
        super().__init__(status, nfrx_code, message, headers=headers)
        self.payload = wire.relay_error(
            request_id, nfrx_code, message, retryable=retryable, code=code
        )

    def json_bytes(self, style: Any = "openai") -> bytes:
        return self.payload


def _refuse(relay_id: str, refusal: McpRefusal) -> McpRefusal:
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


def unauthorized() -> McpRefusal:
    return McpRefusal(
        401,
        wire.RelayCode.UNAUTHORIZED,
        "missing or invalid key: send 'Authorization: Bearer <API_KEY or the relay's AUTH_TOKEN>'",
        headers={"WWW-Authenticate": 'Bearer realm="nfrx"'},
    )


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    host = host.strip().lower()
    bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return any(entry.lower() in (host, bare) for entry in allowed)


def _same_origin(origin: str, host: str) -> bool:
    parts = urllib.parse.urlsplit(origin)
    return bool(parts.scheme) and parts.netloc.lower() == host.strip().lower()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _token_matches(bearer: str | None, digest: str) -> bool:
    if not bearer or not digest:
        return False
    presented = hashlib.sha256(bearer.encode()).hexdigest()
    return hmac.compare_digest(presented, digest.strip().lower())


def blueprint(gateway: Gateway) -> Blueprint:
    # No url_prefix: the metadata route lives under /.well-known.
    bp = Blueprint(KIND, __name__)
    config = gateway.config
    registry = gateway.registry
    relays = McpRelays.of(gateway)
    origins = OriginPolicy(config.allowed_origins)
    allowed_hosts = config.mcp_allowed_hosts
    api_configured = bool(config.api_key) or bool(config.api_http_roles)

    # -- the agents' tunnel, and the reaper riding on it ---------------------------------------

    @bp.websocket(f"{PREFIX}/connect")
    async def connect() -> Response | None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sweep_forever, gateway, relays)
            try:
                return await serve_agent(gateway, KIND)
            finally:
                nursery.cancel_scope.cancel()
                relays.forget_closed()

    # -- admission -----------------------------------------------------------------------------

    def client_key_admitted(relay_id: str, bearer: str | None) -> bool:
        """True for a client key allowed on this relay now; its refusals (401, 403, 429) as
        JSON-RPC errors."""
        keys = gateway.client_keys
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
            ) from None

    def admit(relay_id: str) -> tuple[AgentRecord, str | None, bool]:
        """The checks common to every method (see the module docstring): the relay, the bearer,
        and whether the relay passes auth through."""
        if gateway.draining:
            raise _refuse(
                relay_id,
                McpRefusal(
                    503,
                    wire.RelayCode.DRAINING,
                    "the server is shutting down and accepts no new requests",
                    retryable=True,
                    headers={"Retry-After": "5"},
                ),
            )
        host = request.headers.get("Host", "")
        if allowed_hosts and not _host_allowed(host, allowed_hosts):
            raise _refuse(
                relay_id,
                McpRefusal(403, wire.RelayCode.FORBIDDEN, f"the Host {host!r} is not allowed"),
            )
        origin = request.headers.get("Origin")
        if origin is not None and not (origins.allows(origin) or _same_origin(origin, host)):
            raise _refuse(
                relay_id,
                McpRefusal(403, wire.RelayCode.FORBIDDEN, f"the Origin {origin!r} is not allowed"),
            )
        bearer = auth.bearer_token(request.headers.get("Authorization"))
        api_ok = api_configured and auth.authorized(
            bearer, config.api_key, request.headers.get("X-User-Roles"), config.api_http_roles
        )
        # A client key counts as the API key for the relays its routes allow.
        api_ok = api_ok or client_key_admitted(relay_id, bearer)
        agent = registry.get(KIND, relay_id)
        if agent is None or agent.session.closed:
            if api_configured and not api_ok:
                raise _refuse(relay_id, unauthorized())
            if relay_id in relays.seen:
                raise _refuse(
                    relay_id,
                    McpRefusal(
                        503,
                        wire.RelayCode.PROVIDER_UNAVAILABLE,
                        f"relay offline: {relay_id!r} is not connected now",
                        retryable=True,
                        headers={"Retry-After": "5"},
                    ),
                )
            raise _refuse(
                relay_id,
                McpRefusal(
                    404, wire.RelayCode.RELAY_NOT_FOUND, f"no MCP relay {relay_id!r} is known"
                ),
            )
        passthrough = agent.options.get("auth_passthrough") == "true"
        digest = agent.options.get("auth_token_sha256", "")
        keyed = api_configured or bool(digest)
        if not passthrough and keyed and not (api_ok or _token_matches(bearer, digest)):
            raise _refuse(relay_id, unauthorized())
        if agent.status != AgentStatus.READY:
            why = "is draining" if agent.status == AgentStatus.DRAINING else "cannot reach it"
            raise _refuse(
                relay_id,
                McpRefusal(
                    503,
                    wire.RelayCode.PROVIDER_UNAVAILABLE,
                    f"the relay's provider is not available (the relay {why})",
                    retryable=True,
                    headers={"Retry-After": "5"},
                ),
            )
        return agent, bearer, passthrough

    async def read_message(relay_id: str) -> tuple[bytes, wire.Message]:
        content_type = request.headers.get("Content-Type", "")
        if not _is_json(content_type):
            raise _refuse(
                relay_id,
                McpRefusal(
                    415,
                    wire.RelayCode.INVALID_MESSAGE,
                    "an MCP message must be sent as Content-Type: application/json",
                    code=wire.INVALID_REQUEST,
                ),
            )
        limit = config.mcp_max_req_bytes
        too_large = McpRefusal(
            413,
            wire.RelayCode.LIMIT_EXCEEDED,
            f"the message exceeds the limit of {limit} bytes (BROKER_MAX_REQ_BYTES)",
            code=wire.INVALID_REQUEST,
        )
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _refuse(relay_id, too_large)
        parts: list[bytes] = []
        size = 0
        body_iter = aiter(request.body)
        while True:
            try:
                chunk = await next_chunk(body_iter, config.body_timeout)
            except BodyTimeout as stalled:
                raise _refuse(
                    relay_id,
                    McpRefusal(
                        408, wire.RelayCode.INVALID_MESSAGE, stalled.message, retryable=True
                    ),
                ) from None
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
            not_json = str(exc).startswith("the body is not JSON")
            raise _refuse(
                relay_id,
                McpRefusal(
                    400,
                    wire.RelayCode.INVALID_MESSAGE,
                    str(exc),
                    code=wire.PARSE_ERROR if not_json else wire.INVALID_REQUEST,
                ),
            ) from None
        return body, message

    def check_session(
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
        session = relays.state(agent).sessions.get(session_id)
        if session is not None and not hmac.compare_digest(session.credential, credential):
            session = None
        if session is None:
            if era == wire.MODERN:
                return None
            raise _refuse(
                relay_id,
                McpRefusal(
                    404,
                    wire.RelayCode.SESSION_NOT_FOUND,
                    "session not found: it ended or never existed here; initialize a new one",
                    request_id=request_id,
                ),
            )
        session.use()
        version = request.headers.get("MCP-Protocol-Version")
        if version:
            session.protocol_version = version
        return session

    def tunnel_headers(
        relay_id: str, passthrough: bool, meta: list[tuple[str, str]]
    ) -> tuple[tuple[str, str], ...]:
        headers = wire.request_headers(list(request.headers.items()), passthrough_auth=passthrough)
        meta.append((wire.Meta.PUBLIC_URL, public_url(relay_id)))
        return (*headers, *meta)

    def public_url(relay_id: str) -> str:
        base = config.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
        return f"{base}{PREFIX}/id/{relay_id}"

    def exchange(
        agent: AgentRecord, call: Call, message: wire.Message | None, kind: str
    ) -> McpExchange:
        label = f"{request.method} {PREFIX}/id/{agent.id}"
        if call.method:
            label += f" method={call.method}"
        return McpExchange(
            gateway=gateway,
            agent=agent,
            relay=relays.state(agent),
            call=call,
            message=message,
            label=label,
            req_id=gateway.request_id(),
            counted=message is not None and message.kind == wire.Kind.REQUEST and not call.stream,
            kind=kind,
        )

    def rewrite_challenge(relay_id: str, response: Response, passthrough: bool) -> None:
        if not passthrough:
            return
        challenge = response.headers.get("WWW-Authenticate")
        if challenge and "resource_metadata=" in challenge:
            base = config.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
            metadata = f'resource_metadata="{base}{WELL_KNOWN}{PREFIX}/id/{relay_id}"'
            response.headers["WWW-Authenticate"] = _RESOURCE_METADATA.sub(metadata, challenge)

    # -- POST ----------------------------------------------------------------------------------

    async def post(relay_id: str) -> Response:
        agent, bearer, passthrough = admit(relay_id)
        body, message = await read_message(relay_id)
        era = wire.era_of(request.headers.get("MCP-Protocol-Version"))
        session_id = request.headers.get("Mcp-Session-Id")
        credential = credential_hash(bearer)
        relay = relays.state(agent)
        session = check_session(relay_id, agent, session_id, credential, era, message.id)
        tracked = session.id if session is not None else None
        now = trio.current_time()
        meta = [(wire.Meta.ERA, era), (wire.Meta.KIND, message.kind)]
        if message.kind == wire.Kind.REQUEST:
            assert message.id is not None
            is_stream = message.method == "subscriptions/listen"
            if is_stream and relay.streams >= config.mcp_max_streams_per_client:
                raise _refuse(relay_id, too_many("streams", message.id))
            cap = config.mcp_max_concurrency_per_client
            if agent.max_concurrency > 0:
                cap = min(cap, agent.max_concurrency)
            if not is_stream and relay.requests >= cap:
                raise _refuse(relay_id, too_many("requests", message.id, cap))
            if message.method == "initialize" and (
                len(relay.sessions) >= config.mcp_max_sessions_per_client
            ):
                raise _refuse(
                    relay_id,
                    McpRefusal(
                        503,
                        wire.RelayCode.LIMIT_EXCEEDED,
                        f"the relay holds {len(relay.sessions)} sessions, its limit "
                        "(MCP_MAX_SESSIONS_PER_CLIENT); end one (DELETE) or retry later",
                        request_id=message.id,
                        retryable=True,
                        headers={"Retry-After": "5"},
                    ),
                )
            exempt = message.method in wire.EXEMPT_METHODS
            idle = None if exempt else config.mcp_call_timeout
            timeout = None if is_stream else config.mcp_call_max
            call = Call(
                message.method,
                message.id,
                tracked,
                idle,
                now + timeout if timeout is not None else math.inf,
                stream=is_stream,
            )
            meta += [(wire.Meta.ID, message.id), (wire.Meta.METHOD, message.method)]
            if idle is not None:
                meta.append((wire.Meta.IDLE, f"{idle:g}"))
        else:
            # A notification or a reply to the provider's own request: nested activity for
            # whatever waits in this session; never counted, never timed out by the relay.
            relay.touch_session(tracked)
            if message.kind == wire.Kind.NOTIFICATION:
                meta.append((wire.Meta.METHOD, message.method))
            if message.cancelled_id is not None and tracked is not None:
                target = relay.by_id.get((tracked, message.cancelled_id))
                if target is not None and target.method != "initialize":
                    target.stop(EndedBy.CLIENT_CANCELLED)
            timeout = config.mcp_call_timeout
            call = Call(message.method, None, tracked, None, now + timeout)
        ex = exchange(agent, call, message, message.kind)
        headers = tunnel_headers(relay_id, passthrough, meta)
        response, head = await ex.run(
            "POST", "/", headers, body, timeout=timeout, cleanups=gateway.cleanups()
        )
        if head is not None:
            note_session(relay_id, agent, head, session_id, credential)
        rewrite_challenge(relay_id, response, passthrough)
        return response

    def too_many(what: str, request_id: str, cap: int | None = None) -> McpRefusal:
        if what == "streams":
            text = (
                f"the relay has {config.mcp_max_streams_per_client} long-lived streams open, its "
                "limit (MCP_MAX_STREAMS_PER_CLIENT)"
            )
        else:
            text = f"the relay has {cap} requests in flight, its limit; retry shortly"
        return McpRefusal(
            429,
            wire.RelayCode.LIMIT_EXCEEDED,
            text,
            request_id=request_id,
            retryable=True,
            headers={"Retry-After": "1"},
        )

    def note_session(
        relay_id: str,
        agent: AgentRecord,
        head: ResponseHead,
        session_id: str | None,
        credential: str,
    ) -> None:
        """Session bookkeeping from the provider's answer: a new ``Mcp-Session-Id`` creates a
        session bound to the caller's credential; a 404 in a session ends it."""
        relay = relays.state(agent)
        created = next((v for k, v in head.headers if k.lower() == "mcp-session-id"), None)
        if created and created not in relay.sessions and head.status < 400:
            if len(relay.sessions) >= config.mcp_max_sessions_per_client:
                log.warning(
                    "relay %s: session %s... not recorded, MCP_MAX_SESSIONS_PER_CLIENT reached",
                    relay_id,
                    created[:8],
                )
                return
            relay.sessions[created] = McpSession(
                created, credential, request.headers.get("MCP-Protocol-Version", "")
            )
            log.info("MCP session %s... opened on relay %s", created[:8], relay_id)
        if head.status == 404 and session_id and session_id in relay.sessions:
            relay.end_session(session_id)
            log.info("MCP session %s... ended by the provider (404)", session_id[:8])

    # -- GET and DELETE ------------------------------------------------------------------------

    async def get_stream(relay_id: str) -> Response:
        agent, bearer, passthrough = admit(relay_id)
        era = wire.era_of(request.headers.get("MCP-Protocol-Version"))
        session_id = request.headers.get("Mcp-Session-Id")
        session = check_session(relay_id, agent, session_id, credential_hash(bearer), era, None)
        relay = relays.state(agent)
        if relay.streams >= config.mcp_max_streams_per_client:
            refusal = too_many("streams", "null")
            refusal.payload = wire.relay_error(None, refusal.code, refusal.message, retryable=True)
            raise _refuse(relay_id, refusal)
        call = Call("", None, session.id if session else None, None, math.inf, stream=True)
        meta = [(wire.Meta.ERA, era), (wire.Meta.KIND, "stream")]
        ex = exchange(agent, call, None, "stream")
        response, _ = await ex.run(
            "GET",
            "/",
            tunnel_headers(relay_id, passthrough, meta),
            b"",
            timeout=None,
            cleanups=gateway.cleanups(),
        )
        rewrite_challenge(relay_id, response, passthrough)
        return response

    async def delete(relay_id: str) -> Response:
        agent, bearer, passthrough = admit(relay_id)
        era = wire.era_of(request.headers.get("MCP-Protocol-Version"))
        session_id = request.headers.get("Mcp-Session-Id")
        session = check_session(relay_id, agent, session_id, credential_hash(bearer), era, None)
        timeout = config.mcp_call_timeout
        # Not attached to the session: ending the session below must not stop this exchange.
        call = Call("", None, None, None, trio.current_time() + timeout)
        meta = [(wire.Meta.ERA, era), (wire.Meta.KIND, "delete")]
        ex = exchange(agent, call, None, "delete")
        response, head = await ex.run(
            "DELETE",
            "/",
            tunnel_headers(relay_id, passthrough, meta),
            b"",
            timeout=timeout,
            cleanups=gateway.cleanups(),
        )
        if session is not None and head is not None and (head.status < 300 or head.status == 404):
            relays.state(agent).end_session(session.id)
            log.info("MCP session %s... ended by DELETE on relay %s", session.id[:8], relay_id)
        rewrite_challenge(relay_id, response, passthrough)
        return response

    async def mcp(relay_id: str) -> Response:
        if request.method == "POST":
            return await post(relay_id)
        if request.method == "GET":
            return await get_stream(relay_id)
        return await delete(relay_id)

    @bp.get(f"{WELL_KNOWN}{PREFIX}/id/<relay_id>")
    async def metadata(relay_id: str) -> Response:
        """A pass-through relay's protected-resource metadata, fetched through the tunnel."""
        agent = registry.get(KIND, relay_id)
        if agent is None or agent.session.closed or agent.options.get("auth_passthrough") != "true":
            # Only a pass-through relay has metadata to show; which other ids exist is not said.
            raise McpRefusal(
                404, wire.RelayCode.RELAY_NOT_FOUND, "no protected-resource metadata here"
            )
        call = Call("", None, None, None, trio.current_time() + METADATA_TIMEOUT)
        headers = (
            ("accept", "application/json"),
            (wire.Meta.KIND, "metadata"),
            (wire.Meta.PUBLIC_URL, public_url(relay_id)),
        )
        response, _ = await exchange(agent, call, None, "metadata").run(
            "GET", WELL_KNOWN, headers, b"", timeout=METADATA_TIMEOUT, cleanups=gateway.cleanups()
        )
        return response

    methods = ["POST", "GET", "DELETE"]
    bp.add_url_rule(f"{PREFIX}/id/<relay_id>", "relay", mcp, methods=methods)
    bp.add_url_rule(f"{PREFIX}/id/<relay_id>/", "relay_slash", mcp, methods=methods)
    return bp
