"""The tunnel's frames: immutable values, one class per frame type.

Control frames travel as WebSocket *text* messages holding one JSON object whose ``type`` field
names the frame. Body bytes travel as WebSocket *binary* messages (:class:`Data`), never base64 or
re-encoded JSON: see :mod:`nfrx.protocol.codec` for the byte layout.

Direction, per frame (S = server, A = agent):

========== ===== ==========================================================================
frame      dir   meaning
========== ===== ==========================================================================
Hello      A->S  first frame: protocol version, agent identity and capabilities
Welcome    S->A  handshake accepted; the server's timing parameters and stream window
Refuse     S->A  handshake refused (bad version, id in use, ...); the server then closes
Status     A->S  the agent's models, capacity or readiness changed
Load       A->S  slots the agent is using for the other instances' streams (several instances)
Members    S->A  the instances of the gateway changed: the agent dials the ones it lacks
Open       S->A  opens stream ``stream_id`` with an HTTP request head
Response   A->S  the HTTP response head for a stream
Data       both  body bytes for a stream (request body from S, response body from A)
Credit     both  the receiver grants ``increment`` more body bytes on a stream
Reset      both  abandons a stream at once, with a reason
Ping/Pong  both  liveness; any received frame counts as a sign of life
Drain      S->A  the server is shutting down: finish in-flight work, then go elsewhere
Goodbye    both  the sender opens/accepts no new streams and will close soon
========== ===== ==========================================================================
"""

from __future__ import annotations

from typing import Literal

import attrs

PROTOCOL_VERSION = 3
"""Bumped on any incompatible change; the server refuses a Hello with another version.

2: batches (several frames in one binary WebSocket message, see :mod:`nfrx.protocol.codec`).
3: several instances: the Welcome names the instance and its members, :class:`Members` and
:class:`Load` frames, ``Open.slot`` (an agent of version 2 would close its tunnel on a Members
frame it does not know).
"""

Headers = tuple[tuple[str, str], ...]
"""HTTP headers as ordered (name, value) pairs; names lower-case, repeats allowed."""

MAX_STREAM_ID = 2**32 - 1
MAX_WINDOW = 2**31 - 1


@attrs.frozen(kw_only=True)
class Hello:
    type: Literal["hello"] = "hello"
    version: int
    kind: str
    agent_id: str
    name: str
    agent_version: str
    models: tuple[str, ...] = ()
    max_concurrency: int = 1
    status: str = "ready"
    embedding_batch_size: int = 0
    window: int
    """Bytes of request body the server may send on each new stream before waiting for Credit."""
    options: Headers = ()
    """Plugin-specific (name, value) pairs the server keeps with the agent's record (the MCP
    relay announces its transport and the SHA-256 of its AUTH_TOKEN here, never the token)."""


@attrs.frozen(kw_only=True)
class Welcome:
    type: Literal["welcome"] = "welcome"
    version: int
    server_version: str
    agent_id: str
    heartbeat_interval: float
    """Seconds between the agent's Pings."""
    dead_after: float
    """Seconds of silence after which either side declares the other dead."""
    window: int
    """Bytes of response body the agent may send on each new stream before waiting for Credit."""
    instance_id: str = ""
    """The instance of the gateway this tunnel reached ("" when the server runs alone)."""
    members: Headers = ()
    """The gateway's instances as (instance id, advertise URL) pairs, this one included; the
    agent keeps a tunnel to each (empty when the server runs alone)."""


@attrs.frozen(kw_only=True)
class Refuse:
    type: Literal["refuse"] = "refuse"
    code: str
    message: str


@attrs.frozen(kw_only=True)
class Status:
    type: Literal["status"] = "status"
    models: tuple[str, ...]
    max_concurrency: int
    status: str
    embedding_batch_size: int = 0


@attrs.frozen(kw_only=True)
class Load:
    """The agent's load as this instance cannot see it: the slots its streams from the *other*
    instances hold (an agent holds one tunnel per instance and one ``MAX_CONCURRENCY`` for all).
    Sent on a tunnel whenever that number changes, only while the agent has several tunnels;
    a Status does not repeat it. A few bytes, where a Status repeats the model list."""

    type: Literal["load"] = "load"
    elsewhere: int


@attrs.frozen(kw_only=True)
class Members:
    """The gateway's instances changed (one joined, left, started draining): the agent dials
    the ones it has no tunnel to and stops redialling those no longer listed."""

    type: Literal["members"] = "members"
    members: Headers
    """(instance id, advertise URL) pairs, as in :attr:`Welcome.members`."""


@attrs.frozen(kw_only=True)
class Open:
    type: Literal["open"] = "open"
    stream_id: int
    method: str
    path: str
    headers: Headers = ()
    timeout: float | None = None
    """Seconds the server will wait for this exchange; the agent enforces it too."""
    end: bool = False
    """True when the request has no body (no Data frames follow)."""
    slot: bool = True
    """The stream holds one of the agent's ``MAX_CONCURRENCY`` slots (the agent refuses it with
    ``overloaded`` when all are taken); False for lookups that take none (docling task polls, MCP
    notifications and long-lived streams)."""


@attrs.frozen(kw_only=True)
class Response:
    type: Literal["response"] = "response"
    stream_id: int
    status: int
    headers: Headers = ()
    end: bool = False


@attrs.frozen(kw_only=True)
class Data:
    type: Literal["data"] = "data"
    stream_id: int
    payload: bytes = b""
    end: bool = False
    """True on the last frame of this direction's body (the payload may be empty)."""


@attrs.frozen(kw_only=True)
class Credit:
    type: Literal["credit"] = "credit"
    stream_id: int
    increment: int


@attrs.frozen(kw_only=True)
class Reset:
    type: Literal["reset"] = "reset"
    stream_id: int
    code: str
    message: str = ""


@attrs.frozen(kw_only=True)
class Ping:
    type: Literal["ping"] = "ping"
    nonce: int


@attrs.frozen(kw_only=True)
class Pong:
    type: Literal["pong"] = "pong"
    nonce: int


@attrs.frozen(kw_only=True)
class Drain:
    type: Literal["drain"] = "drain"
    reason: str = ""
    deadline: float | None = None
    """Seconds the server still grants in-flight streams, if bounded."""


@attrs.frozen(kw_only=True)
class Goodbye:
    type: Literal["goodbye"] = "goodbye"
    reason: str = ""


Frame = (
    Hello
    | Welcome
    | Refuse
    | Status
    | Load
    | Members
    | Open
    | Response
    | Data
    | Credit
    | Reset
    | Ping
    | Pong
    | Drain
    | Goodbye
)
StreamFrame = Open | Response | Data | Credit | Reset
CONTROL_FRAMES: tuple[type[Frame], ...] = (
    Hello,
    Welcome,
    Refuse,
    Status,
    Load,
    Members,
    Open,
    Response,
    Credit,
    Reset,
    Ping,
    Pong,
    Drain,
    Goodbye,
)


class ResetCode:
    """Reason codes carried by :class:`Reset` (strings, so new ones stay wire compatible)."""

    CANCELLED = "cancelled"
    """The requester gave up (client disconnected); no answer is expected."""
    TIMEOUT = "timeout"
    """A deadline passed."""
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    """The agent could not reach its backend; nothing was sent: the request can go elsewhere."""
    UPSTREAM_ERROR = "upstream_error"
    """The backend failed after the exchange started."""
    DRAINING = "draining"
    """The agent is draining and takes no new work; the request can go elsewhere."""
    OVERLOADED = "overloaded"
    """The agent has no free slot for this stream (other instances took them meanwhile): the
    server requeues the request, first in line, and counts no failure."""
    INTERNAL = "internal_error"
    """A bug or unexpected failure on the sender's side."""
    BAD_AGENT_RESPONSE = "bad_agent_response"
    """The server refused the agent's response: a head no HTTP client may be sent (a 1xx status,
    an invalid header) or a body that does not match its ``content-length``."""
