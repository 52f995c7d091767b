"""Property tests: round trips, robustness against arbitrary input, and a connected pair that
never desynchronizes under random interleavings (frames crossing on the wire included)."""

from __future__ import annotations

import contextlib
import json
import struct
import typing
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from nfrx.protocol import (
    Credit,
    Data,
    Drain,
    Frame,
    Goodbye,
    Hello,
    Load,
    LocalProtocolError,
    Members,
    Open,
    Ping,
    Pong,
    Refuse,
    RemoteProtocolError,
    Reset,
    ResetCode,
    Response,
    Role,
    Status,
    TunnelConnection,
    Welcome,
    decode,
    encode,
)
from nfrx.protocol.frames import MAX_STREAM_ID, MAX_WINDOW

from .helpers import ConnectionPair, make_hello, make_open

SETTINGS = settings(max_examples=200, deadline=None)
FRAME_TYPES: tuple[type[Frame], ...] = typing.get_args(Frame)

# -- strategies for valid frames ---------------------------------------------------------------

texts = st.text(max_size=12)
small_ids = st.integers(min_value=1, max_value=6)
stream_ids = st.one_of(small_ids, st.integers(min_value=1, max_value=MAX_STREAM_ID))
windows = st.integers(min_value=1, max_value=MAX_WINDOW)
counts = st.integers(min_value=0)
finite = st.floats(allow_nan=False, allow_infinity=False)
headers = st.lists(st.tuples(texts, texts), max_size=4).map(tuple)
models = st.lists(texts, max_size=4).map(tuple)
reset_codes = st.one_of(
    st.sampled_from([v for k, v in vars(ResetCode).items() if k.isupper()]), texts
)

FRAME_STRATEGIES: dict[type[Frame], st.SearchStrategy[Any]] = {
    Hello: st.builds(
        Hello,
        version=st.integers(),
        kind=texts,
        agent_id=texts,
        name=texts,
        agent_version=texts,
        models=models,
        max_concurrency=counts,
        status=texts,
        embedding_batch_size=counts,
        window=windows,
    ),
    Welcome: st.builds(
        Welcome,
        version=st.integers(),
        server_version=texts,
        agent_id=texts,
        heartbeat_interval=finite,
        dead_after=finite,
        window=windows,
        instance_id=texts,
        members=headers,
    ),
    Refuse: st.builds(Refuse, code=texts, message=texts),
    Status: st.builds(
        Status, models=models, max_concurrency=counts, status=texts, embedding_batch_size=counts
    ),
    Load: st.builds(Load, elsewhere=counts),
    Members: st.builds(Members, members=headers),
    Open: st.builds(
        Open,
        stream_id=stream_ids,
        method=texts,
        path=texts,
        headers=headers,
        timeout=st.none() | finite,
        end=st.booleans(),
        slot=st.booleans(),
    ),
    Response: st.builds(
        Response,
        stream_id=stream_ids,
        status=st.integers(min_value=100, max_value=599),
        headers=headers,
        end=st.booleans(),
    ),
    Data: st.builds(Data, stream_id=stream_ids, payload=st.binary(max_size=64), end=st.booleans()),
    Credit: st.builds(Credit, stream_id=stream_ids, increment=windows),
    Reset: st.builds(Reset, stream_id=stream_ids, code=reset_codes, message=texts),
    Ping: st.builds(Ping, nonce=st.integers()),
    Pong: st.builds(Pong, nonce=st.integers()),
    Drain: st.builds(Drain, reason=texts, deadline=st.none() | finite),
    Goodbye: st.builds(Goodbye, reason=texts),
}
frames = st.one_of(*FRAME_STRATEGIES.values())


def test_every_frame_type_has_a_strategy() -> None:
    assert set(FRAME_STRATEGIES) == set(FRAME_TYPES)


@SETTINGS
@given(frames)
def test_round_trip(frame: Frame) -> None:
    message = encode(frame)
    assert isinstance(message, bytes if isinstance(frame, Data) else str)
    assert decode(message) == frame


# -- strategies for arbitrary input ------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# values close to the edges the codec checks, so that fuzzed frames often get past structuring
edge_values = st.one_of(
    st.sampled_from(
        [0, 1, -1, 99, 100, 599, 600, MAX_WINDOW, MAX_WINDOW + 1, MAX_STREAM_ID, MAX_STREAM_ID + 1]
    ),
    small_ids,
    st.lists(st.lists(st.text(max_size=3), max_size=3), max_size=3),
    st.lists(st.text(max_size=3), max_size=3),
    finite,
)
TYPE_NAMES = sorted(attrs.fields(cls).type.default for cls in FRAME_TYPES)
FIELD_NAMES = sorted({f.name for cls in FRAME_TYPES for f in attrs.fields(cls)} - {"type"})

frame_like_dicts = st.builds(
    lambda name, fields: {**fields, "type": name},
    st.sampled_from(TYPE_NAMES),
    st.dictionaries(
        st.sampled_from(FIELD_NAMES) | st.text(max_size=6),
        json_values | edge_values,
        max_size=len(FIELD_NAMES),
    ),
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid control frame with one field removed or replaced by an arbitrary value."""
    frame = draw(frames.filter(lambda f: not isinstance(f, Data)))
    obj = json.loads(encode(frame))
    key = draw(st.sampled_from(sorted(obj)))
    if draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = draw(json_values | edge_values)
    return json.dumps(obj)


binary_frames = st.builds(
    lambda kind, flags, stream_id, payload: struct.pack(">BBI", kind, flags, stream_id) + payload,
    st.just(1) | st.integers(min_value=0, max_value=255),
    st.sampled_from([0, 1]) | st.integers(min_value=0, max_value=255),
    st.just(0) | small_ids | st.integers(min_value=0, max_value=MAX_STREAM_ID),
    st.binary(max_size=16),
)

messages: st.SearchStrategy[str | bytes] = st.one_of(
    st.binary(max_size=32),
    binary_frames,
    st.text(max_size=32),
    json_values.map(json.dumps),
    frame_like_dicts.map(json.dumps),
    mutated_frames(),
    frames.map(encode),
)


def _decode_or_reject(message: str | bytes) -> None:
    try:
        frame = decode(message)
    except RemoteProtocolError:
        return
    assert isinstance(frame, FRAME_TYPES)
    assert isinstance(message, bytes) == isinstance(frame, Data)
    assert decode(encode(frame)) == frame


@SETTINGS
@given(st.binary())
def test_decode_arbitrary_bytes(message: bytes) -> None:
    _decode_or_reject(message)


@SETTINGS
@given(binary_frames)
def test_decode_data_like_bytes(message: bytes) -> None:
    _decode_or_reject(message)


@SETTINGS
@given(st.text())
def test_decode_arbitrary_text(message: str) -> None:
    _decode_or_reject(message)


@SETTINGS
@given(json_values)
def test_decode_arbitrary_json(value: Any) -> None:
    _decode_or_reject(json.dumps(value))


@SETTINGS
@given(frame_like_dicts)
def test_decode_frame_like_objects(obj: dict[str, Any]) -> None:
    _decode_or_reject(json.dumps(obj))


@SETTINGS
@given(mutated_frames())
def test_decode_mutated_frames(message: str) -> None:
    _decode_or_reject(message)


# -- arbitrary input to a connection -----------------------------------------------------------


def _fresh(role: Role) -> Callable[[], TunnelConnection]:
    return lambda: TunnelConnection(role)


def _server_after_hello() -> TunnelConnection:
    p = ConnectionPair()
    p.send(Role.AGENT, make_hello(window=8))
    return p.server


def _agent_after_hello() -> TunnelConnection:
    p = ConnectionPair()
    p.agent.send(make_hello(window=8))
    return p.agent


def _refused(role: Role) -> Callable[[], TunnelConnection]:
    def setup() -> TunnelConnection:
        p = ConnectionPair()
        p.send(Role.AGENT, make_hello())
        p.send(Role.SERVER, Refuse(code="no", message="no"))
        return p.conn(role)

    return setup


def _busy(role: Role) -> Callable[[], TunnelConnection]:
    """After the handshake, with streams 1..3 in various states."""

    def setup() -> TunnelConnection:
        p = ConnectionPair()
        p.handshake(agent_window=8, server_window=8)
        p.open(1)
        p.open(2, end=True)
        p.send(Role.AGENT, Response(stream_id=2, status=200))
        p.open(3)
        p.send(Role.SERVER, Reset(stream_id=3, code=ResetCode.CANCELLED))
        return p.conn(role)

    return setup


SETUPS: dict[str, Callable[[], TunnelConnection]] = {
    "server-fresh": _fresh(Role.SERVER),
    "agent-fresh": _fresh(Role.AGENT),
    "server-after-hello": _server_after_hello,
    "agent-after-hello": _agent_after_hello,
    "server-refused": _refused(Role.SERVER),
    "agent-refused": _refused(Role.AGENT),
    "server-busy": _busy(Role.SERVER),
    "agent-busy": _busy(Role.AGENT),
}


@SETTINGS
@given(st.sampled_from(sorted(SETUPS)), st.lists(messages, max_size=8))
def test_receive_arbitrary_messages(setup: str, batch: list[str | bytes]) -> None:
    conn = SETUPS[setup]()
    conn.events()
    for message in batch:
        try:
            conn.receive(message)
        except RemoteProtocolError:
            return  # the session closes the tunnel here
        events = conn.events()
        assert len(events) <= 1
        if events:
            assert events == [decode(message)]


@SETTINGS
@given(st.sampled_from(sorted(SETUPS)), st.binary())
def test_receive_arbitrary_bytes(setup: str, message: bytes) -> None:
    conn = SETUPS[setup]()
    with contextlib.suppress(RemoteProtocolError):
        conn.receive(message)


@SETTINGS
@given(st.sampled_from(sorted(SETUPS)), st.text())
def test_receive_arbitrary_text(setup: str, message: str) -> None:
    conn = SETUPS[setup]()
    with contextlib.suppress(RemoteProtocolError):
        conn.receive(message)


# -- a connected pair under random interleavings -----------------------------------------------

WINDOW = 8
MAX_ID = 10
ids = st.integers(min_value=1, max_value=MAX_ID + 1)
roles = st.sampled_from([Role.SERVER, Role.AGENT])
picks = st.integers(min_value=0, max_value=4)


def _allowance(conn: TunnelConnection, stream_id: int) -> int:
    # White-box: how many body bytes ``conn`` still accepts on the stream is not public.
    return conn._streams[stream_id].allowance


class TunnelMachine(RuleBasedStateMachine):
    """A server and an agent with a queue of undelivered messages in each direction.

    In synchronous mode every message is delivered at once; otherwise delivery is a separate
    step, so frames cross on the wire. Only frames the sender accepts (``send`` does not raise
    LocalProtocolError) are put on the wire; the receiver must accept every one of them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pair = ConnectionPair()
        self.pair.handshake(agent_window=WINDOW, server_window=WINDOW)
        self.wire: dict[Role, deque[tuple[Frame, str | bytes]]] = {
            Role.SERVER: deque(),
            Role.AGENT: deque(),
        }
        self.synchronous = False
        self.next_id = 1
        """The server's next stream id."""
        self.agent_next_id = 1
        """One above the highest stream id the agent has seen opened."""
        self.farewells: set[Role] = set()
        """Sides that have sent Goodbye (or Drain)."""
        self.tainted: set[int] = set()
        """Streams on which a send was refused (see test_regression_rejected_*)."""

    @initialize(synchronous=st.booleans())
    def choose_mode(self, synchronous: bool) -> None:
        self.synchronous = synchronous

    # -- plumbing --

    def _send(self, role: Role, frame: Frame, *, via_send_data: bool = False) -> bool:
        conn = self.pair.conn(role)
        try:
            if via_send_data:
                assert isinstance(frame, Data)
                message: str | bytes = conn.send_data(frame.stream_id, frame.payload, end=frame.end)
            else:
                message = conn.send(frame)
        except LocalProtocolError:
            stream_id = getattr(frame, "stream_id", None)
            if stream_id is not None:
                self.tainted.add(stream_id)
            return False
        assert decode(message) == frame
        self.wire[role].append((frame, message))
        if self.synchronous:
            self._deliver(role)
        return True

    def _deliver(self, sender: Role) -> None:
        frame, message = self.wire[sender].popleft()
        receiver = self.pair.conn(sender.peer)
        stream_id: int | None = getattr(frame, "stream_id", None)
        was_live = stream_id is not None and receiver.is_live(stream_id)
        receiver.receive(message)  # a frame the sender was allowed to send is never an error
        events = receiver.events()
        if isinstance(frame, Open):
            self.agent_next_id = frame.stream_id + 1
        if isinstance(frame, Open) or stream_id is None or was_live:
            assert events == [frame]
        else:
            # only frames for a stream the receiver has already finished are dropped
            assert events == []

    def _pick(self, role: Role, pick: int) -> int:
        """A stream id ``role`` has seen opened: mostly one it still considers live."""
        next_id = self.next_id if role is Role.SERVER else self.agent_next_id
        conn = self.pair.conn(role)
        live = [i for i in range(1, next_id) if conn.is_live(i)]
        if live and pick < 3:
            return live[-1 - pick % len(live)]
        return max(1, next_id - 1 - pick % 3)

    def _flush(self, first: Role) -> None:
        for sender in (first, first.peer):
            while self.wire[sender]:
                self._deliver(sender)

    # -- sending --

    @precondition(lambda self: self.next_id <= MAX_ID)
    @rule(skip=st.integers(min_value=0, max_value=2), end=st.booleans())
    def open(self, skip: int, end: bool) -> None:
        stream_id = min(self.next_id + skip, MAX_ID)
        if self._send(Role.SERVER, make_open(stream_id, end=end)):
            self.next_id = stream_id + 1
        else:
            # the only reason to refuse a fresh, higher id is a farewell from either side
            assert self.pair.server.peer_closing or Role.SERVER in self.farewells

    @precondition(lambda self: self.next_id > 1)
    @rule(data=st.data())
    def open_stale_id(self, data: st.DataObject) -> None:
        stream_id = data.draw(st.integers(min_value=1, max_value=self.next_id - 1))
        try:
            self.pair.server.send(make_open(stream_id))
        except LocalProtocolError:
            return
        raise AssertionError(f"reopening stream {stream_id} was accepted")

    def _data(self, role: Role, pick: int, size: int, end: bool, via_send_data: bool) -> None:
        stream_id = self._pick(role, pick)
        frame = Data(stream_id=stream_id, payload=b"x" * size, end=end)
        credit_before = self.pair.conn(role).credit(stream_id)
        sent = self._send(role, frame, via_send_data=via_send_data)
        if size > credit_before:
            assert not sent

    @precondition(lambda self: self.next_id > 1)
    @rule(
        pick=picks,
        size=st.integers(min_value=0, max_value=WINDOW + 2),
        end=st.booleans(),
        via_send_data=st.booleans(),
    )
    def server_data(self, pick: int, size: int, end: bool, via_send_data: bool) -> None:
        self._data(Role.SERVER, pick, size, end, via_send_data)

    @precondition(lambda self: self.agent_next_id > 1)
    @rule(
        pick=picks,
        size=st.integers(min_value=0, max_value=WINDOW + 2),
        end=st.booleans(),
        via_send_data=st.booleans(),
    )
    def agent_data(self, pick: int, size: int, end: bool, via_send_data: bool) -> None:
        self._data(Role.AGENT, pick, size, end, via_send_data)

    @precondition(lambda self: self.agent_next_id > 1)
    @rule(
        pick=picks,
        status=st.integers(min_value=100, max_value=599),
        sizes=st.lists(st.integers(min_value=0, max_value=WINDOW // 2), min_size=1, max_size=3),
        end=st.booleans(),
    )
    def agent_answers(self, pick: int, status: int, sizes: list[int], end: bool) -> None:
        """A response head followed by a few body chunks (the common case, in one step)."""
        stream_id = self._pick(Role.AGENT, pick)
        self._send(Role.AGENT, Response(stream_id=stream_id, status=status))
        for i, size in enumerate(sizes):
            last = end and i == len(sizes) - 1
            self._send(Role.AGENT, Data(stream_id=stream_id, payload=b"r" * size, end=last))

    @precondition(lambda self: self.next_id > 1)
    @rule(role=roles, pick=picks, increment=st.integers(min_value=1, max_value=2 * WINDOW))
    def credit(self, role: Role, pick: int, increment: int) -> None:
        stream_id = self._pick(role, pick)
        self._send(role, Credit(stream_id=stream_id, increment=increment))

    @precondition(lambda self: self.next_id > 1)
    @rule(role=roles, pick=picks, code=reset_codes)
    def reset(self, role: Role, pick: int, code: str) -> None:
        stream_id = self._pick(role, pick)
        self._send(role, Reset(stream_id=stream_id, code=code))

    @precondition(lambda self: self.agent_next_id > 1)
    @rule(
        pick=picks,
        status=st.integers(min_value=100, max_value=599),
        end=st.booleans(),
    )
    def response(self, pick: int, status: int, end: bool) -> None:
        stream_id = self._pick(Role.AGENT, pick)
        self._send(Role.AGENT, Response(stream_id=stream_id, status=status, end=end))

    @rule(role=roles, kind=st.sampled_from(["data", "response", "credit", "reset"]))
    def never_opened(self, role: Role, kind: str) -> None:
        """Any stream frame for an id above the highest opened one is refused."""
        stream_id = self.next_id if role is Role.SERVER else self.agent_next_id
        frame: Frame
        if kind == "data":
            frame = Data(stream_id=stream_id, payload=b"")
        elif kind == "response":
            frame = Response(stream_id=stream_id, status=200)
        elif kind == "credit":
            frame = Credit(stream_id=stream_id, increment=1)
        else:
            frame = Reset(stream_id=stream_id, code=ResetCode.INTERNAL)
        try:
            self.pair.conn(role).send(frame)
        except LocalProtocolError:
            return
        raise AssertionError(f"{frame} was accepted")

    @rule(role=roles, kind=st.sampled_from(["ping", "pong", "status"]), n=st.integers())
    def control(self, role: Role, kind: str, n: int) -> None:
        """Connection-level frames: always allowed after the handshake, always delivered."""
        frame: Frame
        if kind == "ping":
            frame = Ping(nonce=n)
        elif kind == "pong":
            frame = Pong(nonce=n)
        else:
            role = Role.AGENT
            frame = Status(models=("m",), max_concurrency=abs(n), status="ready")
        assert self._send(role, frame)

    @precondition(lambda self: self.next_id > MAX_ID // 2)
    @rule(drain=st.booleans())
    def server_farewell(self, drain: bool) -> None:
        assert self._send(Role.SERVER, Drain(reason="bye") if drain else Goodbye(reason="bye"))
        self.farewells.add(Role.SERVER)

    # An agent Goodbye may cross Opens already on the wire (the agent resets them as draining).
    @precondition(lambda self: self.next_id > MAX_ID // 2)
    @rule()
    def agent_goodbye(self) -> None:
        assert self._send(Role.AGENT, Goodbye(reason="bye"))
        self.farewells.add(Role.AGENT)

    # -- delivering --

    @precondition(lambda self: bool(self.wire[Role.SERVER]))
    @rule()
    def deliver_from_server(self) -> None:
        self._deliver(Role.SERVER)

    @precondition(lambda self: bool(self.wire[Role.AGENT]))
    @rule()
    def deliver_from_agent(self) -> None:
        self._deliver(Role.AGENT)

    @rule(first=roles)
    def flush(self, first: Role) -> None:
        self._flush(first)

    # -- checks --

    @invariant()
    def in_sync_when_the_wire_is_empty(self) -> None:
        if self.wire[Role.SERVER] or self.wire[Role.AGENT]:
            return
        server, agent = self.pair.server, self.pair.agent
        assert server.live_streams == agent.live_streams
        for stream_id in range(1, MAX_ID + 2):
            assert server.is_live(stream_id) == agent.is_live(stream_id), stream_id
            if not server.is_live(stream_id):
                continue
            for sender, receiver in ((server, agent), (agent, server)):
                credit, allowance = sender.credit(stream_id), _allowance(receiver, stream_id)
                if stream_id in self.tainted:
                    assert credit <= allowance
                else:
                    assert credit == allowance
        assert server.peer_closing == (Role.AGENT in self.farewells)
        assert agent.peer_closing == (Role.SERVER in self.farewells)

    def teardown(self) -> None:
        self._flush(Role.SERVER)
        self.in_sync_when_the_wire_is_empty()


TunnelMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestTunnelMachine = TunnelMachine.TestCase


# -- an explicit sequence test (no rule machinery) ---------------------------------------------

step_kinds = st.sampled_from(["open", "data", "data_end", "credit", "reset", "response", "end"])


@SETTINGS
@given(st.lists(st.tuples(step_kinds, roles, ids, st.integers(0, WINDOW)), max_size=40))
def test_synchronous_sequences_stay_in_sync(steps: list[tuple[str, Role, int, int]]) -> None:
    p = ConnectionPair()
    p.handshake(agent_window=WINDOW, server_window=WINDOW)
    next_id = 1
    for kind, role, stream_id, n in steps:
        frame: Frame
        if kind == "open":
            role, stream_id = Role.SERVER, next_id
            frame = make_open(stream_id, end=n % 2 == 0)
        elif kind in ("data", "data_end"):
            frame = Data(stream_id=stream_id, payload=b"y" * n, end=kind == "data_end")
        elif kind == "credit":
            frame = Credit(stream_id=stream_id, increment=n + 1)
        elif kind == "reset":
            frame = Reset(stream_id=stream_id, code=ResetCode.CANCELLED)
        elif kind == "response":
            role = Role.AGENT
            frame = Response(stream_id=stream_id, status=200 + n, end=False)
        else:
            role = Role.AGENT
            frame = Response(stream_id=stream_id, status=200, end=True)
        was_live = p.conn(role.peer).is_live(stream_id)
        try:
            events = p.send(role, frame)
        except LocalProtocolError:
            continue
        if isinstance(frame, Credit | Reset) and not was_live:
            # the sender may still emit these for a stream that has ended; the peer drops them
            assert events == []
        else:
            assert events == [frame]
        if isinstance(frame, Open):
            next_id += 1
        p.assert_in_sync(*range(1, next_id + 1))
