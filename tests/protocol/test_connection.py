"""The connection state machine: handshake, stream lifecycle, ownership, flow control, shutdown."""

from __future__ import annotations

import pytest

from nfrx.protocol import (
    Credit,
    Data,
    Drain,
    Frame,
    Goodbye,
    Load,
    LocalProtocolError,
    Members,
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
    codec,
    encode,
)
from nfrx.protocol.frames import MAX_WINDOW
from nfrx.protocol.state import ConnState

from .helpers import ConnectionPair, make_hello, make_open, make_welcome

STATUS = Status(models=("m1",), max_concurrency=2, status="ready")


@pytest.fixture
def pair() -> ConnectionPair:
    p = ConnectionPair()
    p.handshake()
    return p


# -- handshake ---------------------------------------------------------------------------------


def test_fresh_connections_await_hello() -> None:
    p = ConnectionPair()
    assert p.server.state is ConnState.AWAIT_HELLO
    assert p.agent.state is ConnState.AWAIT_HELLO
    assert p.server.events() == []


def test_hello_welcome_opens_both_sides() -> None:
    p = ConnectionPair()
    hello = make_hello(window=123)
    assert p.send(Role.AGENT, hello) == [hello]
    assert (p.agent.state, p.server.state) == (ConnState.HELLO_SENT, ConnState.HELLO_SENT)
    welcome = make_welcome(window=456)
    assert p.send(Role.SERVER, welcome) == [welcome]
    assert (p.agent.state, p.server.state) == (ConnState.OPEN, ConnState.OPEN)
    # the windows granted in the handshake become the per-stream credits
    p.open(1)
    assert p.server.credit(1) == 123
    assert p.agent.credit(1) == 456


def test_events_are_returned_once() -> None:
    p = ConnectionPair()
    p.server.receive(p.agent.send(make_hello()))
    assert len(p.server.events()) == 1
    assert p.server.events() == []


def test_refuse_closes_the_connection_for_good() -> None:
    p = ConnectionPair()
    p.send(Role.AGENT, make_hello())
    refuse = Refuse(code="version", message="unsupported")
    assert p.send(Role.SERVER, refuse) == [refuse]
    assert p.server.state is ConnState.CLOSED
    assert p.agent.state is ConnState.CLOSED
    server_frames: list[Frame] = [make_welcome(), make_open(1), Ping(nonce=1), refuse]
    for frame in server_frames:
        with pytest.raises(LocalProtocolError):
            p.server.send(frame)
    agent_frames: list[Frame] = [make_hello(), Ping(nonce=1), STATUS, Goodbye()]
    for frame in agent_frames:
        with pytest.raises(LocalProtocolError):
            p.agent.send(frame)
    with pytest.raises(LocalProtocolError):
        p.server.send_data(1, b"x")
    # and whatever the peer sends now is a protocol violation
    for message in (encode(make_welcome()), encode(Ping(nonce=1)), encode(make_open(1))):
        with pytest.raises(RemoteProtocolError):
            p.agent.receive(message)
    for message in (encode(make_hello()), encode(Pong(nonce=1)), codec.encode_data(1, b"x")):
        with pytest.raises(RemoteProtocolError):
            p.server.receive(message)
    assert p.server.events() == []
    assert p.agent.events() == []


@pytest.mark.parametrize(
    "frame",
    [Ping(nonce=1), Pong(nonce=1), STATUS, Goodbye(), Credit(stream_id=1, increment=1)],
    ids=lambda f: type(f).__name__,
)
def test_agent_frames_before_hello_are_rejected(frame: Frame) -> None:
    p = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        p.agent.send(frame)
    with pytest.raises(RemoteProtocolError):
        p.server.receive(encode(frame))
    assert p.server.state is ConnState.AWAIT_HELLO


def test_data_before_hello_is_rejected() -> None:
    p = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        p.agent.send_data(1, b"x")
    with pytest.raises(RemoteProtocolError):
        p.server.receive(codec.encode_data(1, b"x"))


@pytest.mark.parametrize(
    "frame",
    [make_welcome(), Refuse(code="x", message="y"), make_open(1), Ping(nonce=1), Drain()],
    ids=lambda f: type(f).__name__,
)
def test_server_cannot_speak_first(frame: Frame) -> None:
    p = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        p.server.send(frame)
    with pytest.raises(RemoteProtocolError):
        p.agent.receive(encode(frame))
    assert p.agent.state is ConnState.AWAIT_HELLO


def test_agent_waits_for_welcome() -> None:
    p = ConnectionPair()
    p.send(Role.AGENT, make_hello())
    # nothing but Welcome/Refuse can follow Hello
    with pytest.raises(LocalProtocolError):
        p.agent.send(Ping(nonce=1))
    with pytest.raises(LocalProtocolError):
        p.agent.send(make_hello())
    with pytest.raises(RemoteProtocolError):
        p.server.receive(encode(make_hello()))
    with pytest.raises(LocalProtocolError):
        p.server.send(make_open(1))
    with pytest.raises(RemoteProtocolError):
        p.agent.receive(encode(Ping(nonce=1)))


def test_server_role_cannot_send_hello() -> None:
    server = TunnelConnection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.send(make_hello())
    agent = TunnelConnection(Role.AGENT)
    with pytest.raises(RemoteProtocolError):
        agent.receive(encode(make_hello()))


def test_no_second_handshake(pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError):
        pair.agent.send(make_hello())
    with pytest.raises(LocalProtocolError):
        pair.server.send(make_welcome())
    with pytest.raises(RemoteProtocolError):
        pair.server.receive(encode(make_hello()))
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(encode(make_welcome()))


FORBIDDEN_AFTER_HANDSHAKE: list[tuple[Role, Frame]] = [
    (Role.AGENT, make_open(1)),
    (Role.AGENT, Drain()),
    (Role.AGENT, Refuse(code="x", message="y")),
    (Role.SERVER, Response(stream_id=1, status=200)),
    (Role.SERVER, STATUS),
    (Role.SERVER, make_hello()),
    (Role.SERVER, Refuse(code="x", message="y")),
    (Role.AGENT, Members(members=(("a", "ws://a"),))),
    (Role.SERVER, Load(elsewhere=1)),
]


@pytest.mark.parametrize(
    ("role", "frame"),
    FORBIDDEN_AFTER_HANDSHAKE,
    ids=[f"{r.value}-{type(f).__name__}" for r, f in FORBIDDEN_AFTER_HANDSHAKE],
)
def test_frames_in_the_wrong_direction(pair: ConnectionPair, role: Role, frame: Frame) -> None:
    if role is Role.AGENT:
        pair.open(1)  # so that a stream-level frame is rejected for its direction, not its id
    with pytest.raises(LocalProtocolError):
        pair.conn(role).send(frame)
    with pytest.raises(RemoteProtocolError):
        pair.conn(role.peer).receive(encode(frame))


# -- a complete exchange -----------------------------------------------------------------------


def test_full_exchange_removes_the_stream_on_both_sides(pair: ConnectionPair) -> None:
    open_ = pair.open(1)
    assert open_.end is False
    assert pair.server.is_live(1)
    assert pair.agent.is_live(1)
    assert pair.server.live_streams == pair.agent.live_streams == 1

    steps: list[tuple[Role, Frame]] = [
        (Role.SERVER, Data(stream_id=1, payload=b'{"model":')),
        (Role.SERVER, Data(stream_id=1, payload=b'"m1"}', end=True)),
        (Role.AGENT, Response(stream_id=1, status=200, headers=(("content-type", "x"),))),
        (Role.AGENT, Data(stream_id=1, payload=b"chunk 1")),
        (Role.AGENT, Data(stream_id=1, payload=b"chunk 2")),
    ]
    for role, frame in steps:
        assert pair.send(role, frame) == [frame]
        assert pair.server.is_live(1)
        assert pair.agent.is_live(1)

    last = Data(stream_id=1, payload=b"", end=True)
    assert pair.send(Role.AGENT, last) == [last]
    assert not pair.server.is_live(1)
    assert not pair.agent.is_live(1)
    assert pair.server.live_streams == pair.agent.live_streams == 0
    # nothing more may be sent on it
    with pytest.raises(LocalProtocolError):
        pair.agent.send(Data(stream_id=1, payload=b"late"))
    with pytest.raises(LocalProtocolError):
        pair.agent.send(Response(stream_id=1, status=200))
    with pytest.raises(LocalProtocolError):
        pair.server.send(Data(stream_id=1, payload=b"late"))


def test_response_may_finish_before_the_request(pair: ConnectionPair) -> None:
    pair.open(1)
    pair.send(Role.AGENT, Response(stream_id=1, status=413, end=True))
    # the request half is still open: the stream lives until it ends
    assert pair.server.is_live(1)
    assert pair.agent.is_live(1)
    pair.send(Role.SERVER, Data(stream_id=1, payload=b"rest", end=True))
    assert not pair.server.is_live(1)
    assert not pair.agent.is_live(1)


def test_open_with_end_has_no_body(pair: ConnectionPair) -> None:
    pair.open(1, method="GET", end=True)
    assert pair.server.is_live(1)
    with pytest.raises(LocalProtocolError):
        pair.server.send(Data(stream_id=1, payload=b"x"))
    with pytest.raises(LocalProtocolError):
        pair.server.send_data(1, b"", end=True)
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(codec.encode_data(1, b"x"))
    response = Response(stream_id=1, status=204, end=True)
    assert pair.send(Role.AGENT, response) == [response]
    assert pair.server.live_streams == pair.agent.live_streams == 0


def test_send_data_matches_send(pair: ConnectionPair) -> None:
    pair.open(1)
    message = pair.server.send_data(1, b"abc", end=True)
    assert message == codec.encode(Data(stream_id=1, payload=b"abc", end=True))
    assert pair.server.credit(1) == 65536 - 3
    assert pair.deliver(Role.AGENT, message) == [Data(stream_id=1, payload=b"abc", end=True)]
    with pytest.raises(LocalProtocolError):
        pair.server.send_data(1, b"more")


def test_data_before_response_is_an_error(pair: ConnectionPair) -> None:
    pair.open(1)
    with pytest.raises(LocalProtocolError):
        pair.agent.send(Data(stream_id=1, payload=b"x"))
    with pytest.raises(RemoteProtocolError):
        pair.server.receive(codec.encode_data(1, b"x"))


def test_data_after_the_half_ended_is_an_error(pair: ConnectionPair) -> None:
    pair.open(1)
    pair.send(Role.SERVER, Data(stream_id=1, payload=b"x", end=True))
    assert pair.server.is_live(1)  # the response half is still open
    with pytest.raises(LocalProtocolError):
        pair.server.send(Data(stream_id=1, payload=b"y"))
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(codec.encode_data(1, b"y"))
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(codec.encode_data(1, b"", end=True))


def test_agent_data_after_response_end_is_an_error(pair: ConnectionPair) -> None:
    pair.open(1)
    pair.send(Role.AGENT, Response(stream_id=1, status=200, end=True))
    with pytest.raises(LocalProtocolError):
        pair.agent.send(Data(stream_id=1, payload=b"y"))
    with pytest.raises(RemoteProtocolError):
        pair.server.receive(codec.encode_data(1, b"y"))


def test_second_response_is_an_error(pair: ConnectionPair) -> None:
    pair.open(1)
    pair.send(Role.AGENT, Response(stream_id=1, status=200))
    with pytest.raises(LocalProtocolError):
        pair.agent.send(Response(stream_id=1, status=200))
    with pytest.raises(RemoteProtocolError):
        pair.server.receive(encode(Response(stream_id=1, status=500)))


def test_streams_are_independent(pair: ConnectionPair) -> None:
    pair.open(1)
    pair.open(2, end=True)
    pair.send(Role.AGENT, Response(stream_id=2, status=200, end=True))
    assert not pair.server.is_live(2)
    assert pair.server.is_live(1)
    assert pair.agent.is_live(1)
    assert pair.server.live_streams == pair.agent.live_streams == 1


# -- stream ids --------------------------------------------------------------------------------


def test_stream_ids_strictly_increase(pair: ConnectionPair) -> None:
    pair.open(1)
    with pytest.raises(LocalProtocolError):
        pair.server.send(make_open(1))
    pair.open(10)  # gaps are allowed
    for stale in (1, 9, 10):
        with pytest.raises(LocalProtocolError):
            pair.server.send(make_open(stale))
        with pytest.raises(RemoteProtocolError):
            pair.agent.receive(encode(make_open(stale)))
    pair.open(11)
    assert pair.agent.live_streams == 3


def test_stream_id_zero_cannot_be_opened(pair: ConnectionPair) -> None:
    with pytest.raises(LocalProtocolError):
        pair.server.send(make_open(0))


def test_reopening_a_finished_stream_is_an_error(pair: ConnectionPair) -> None:
    pair.open(1, end=True)
    pair.send(Role.SERVER, Reset(stream_id=1, code=ResetCode.CANCELLED))
    assert not pair.server.is_live(1)
    with pytest.raises(LocalProtocolError):
        pair.server.send(make_open(1))
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(encode(make_open(1)))


NEVER_OPENED: list[tuple[Role, str | bytes]] = [
    (Role.SERVER, codec.encode_data(2, b"x")),
    (Role.SERVER, encode(Credit(stream_id=2, increment=1))),
    (Role.SERVER, encode(Reset(stream_id=2, code="x"))),
    (Role.AGENT, codec.encode_data(2, b"x")),
    (Role.AGENT, encode(Response(stream_id=2, status=200))),
    (Role.AGENT, encode(Credit(stream_id=2, increment=1))),
    (Role.AGENT, encode(Reset(stream_id=2, code="x"))),
]


@pytest.mark.parametrize(
    ("sender", "message"),
    NEVER_OPENED,
    ids=[f"{r.value}-{codec.decode(m).type}" for r, m in NEVER_OPENED],
)
def test_frame_for_never_opened_stream(
    pair: ConnectionPair, sender: Role, message: str | bytes
) -> None:
    pair.open(1)
    frame = codec.decode(message)
    with pytest.raises(LocalProtocolError):
        pair.conn(sender).send(frame)
    with pytest.raises(RemoteProtocolError):
        pair.conn(sender.peer).receive(message)
    assert pair.conn(sender.peer).events() == []


# -- resets and frames crossing on the wire ----------------------------------------------------


def test_reset_ends_the_stream_on_both_sides(pair: ConnectionPair) -> None:
    pair.open(1)
    reset = Reset(stream_id=1, code=ResetCode.UPSTREAM_ERROR, message="boom")
    assert pair.send(Role.AGENT, reset) == [reset]
    assert not pair.server.is_live(1)
    assert not pair.agent.is_live(1)
    assert pair.server.live_streams == pair.agent.live_streams == 0


def test_agent_data_crossing_the_server_reset_is_dropped(pair: ConnectionPair) -> None:
    pair.open(1, end=True)
    pair.send(Role.AGENT, Response(stream_id=1, status=200))
    reset = pair.server.send(Reset(stream_id=1, code=ResetCode.CANCELLED))
    assert not pair.server.is_live(1)
    # the agent had not seen the reset yet
    in_flight = [
        pair.agent.send(Data(stream_id=1, payload=b"tok")),
        pair.agent.send(Credit(stream_id=1, increment=5)),
        pair.agent.send(Data(stream_id=1, payload=b"", end=True)),
    ]
    for message in in_flight:
        pair.server.receive(message)  # must not raise
    assert pair.server.events() == []
    assert pair.server.live_streams == 0
    # the agent's stream already finished, so the reset that arrives late is dropped too
    assert pair.deliver(Role.AGENT, reset) == []
    assert pair.agent.live_streams == 0


def test_server_data_crossing_the_agent_reset_is_dropped(pair: ConnectionPair) -> None:
    pair.open(1)
    reset = Reset(stream_id=1, code=ResetCode.OVERLOADED)
    reset_message = pair.agent.send(reset)
    crossing = pair.server.send(Data(stream_id=1, payload=b"body", end=True))
    assert pair.deliver(Role.AGENT, crossing) == []
    assert pair.deliver(Role.SERVER, reset_message) == [reset]
    assert pair.server.live_streams == pair.agent.live_streams == 0


def test_resets_crossing_each_other(pair: ConnectionPair) -> None:
    pair.open(1)
    from_server = pair.server.send(Reset(stream_id=1, code=ResetCode.TIMEOUT))
    from_agent = pair.agent.send(Reset(stream_id=1, code=ResetCode.TIMEOUT))
    assert pair.deliver(Role.AGENT, from_server) == []
    assert pair.deliver(Role.SERVER, from_agent) == []
    assert pair.server.live_streams == pair.agent.live_streams == 0


def test_credit_crossing_the_stream_end_is_dropped(pair: ConnectionPair) -> None:
    pair.open(1, end=True)
    pair.send(Role.AGENT, Response(stream_id=1, status=200))
    credit = pair.server.send(Credit(stream_id=1, increment=100))
    assert pair.send(Role.AGENT, Data(stream_id=1, payload=b"x", end=True)) != []
    assert not pair.agent.is_live(1)
    assert pair.deliver(Role.AGENT, credit) == []


# -- flow control ------------------------------------------------------------------------------


def test_sending_more_than_the_window_is_a_local_error() -> None:
    p = ConnectionPair()
    p.handshake(agent_window=10, server_window=20)
    p.open(1)
    assert p.server.credit(1) == 10
    p.send(Role.SERVER, Data(stream_id=1, payload=b"1234"))
    assert p.server.credit(1) == 6
    with pytest.raises(LocalProtocolError):
        p.server.send(Data(stream_id=1, payload=b"1234567"))
    with pytest.raises(LocalProtocolError):
        p.server.send_data(1, b"1234567")
    assert p.server.credit(1) == 6
    p.send(Role.SERVER, Data(stream_id=1, payload=b"123456"))
    assert p.server.credit(1) == 0
    # an empty frame needs no credit, so the request can still end
    p.send(Role.SERVER, Data(stream_id=1, payload=b"", end=True))

    p.send(Role.AGENT, Response(stream_id=1, status=200))
    assert p.agent.credit(1) == 20
    with pytest.raises(LocalProtocolError):
        p.agent.send(Data(stream_id=1, payload=b"x" * 21))
    p.send(Role.AGENT, Data(stream_id=1, payload=b"x" * 20))
    assert p.agent.credit(1) == 0


def test_windows_are_per_stream() -> None:
    p = ConnectionPair()
    p.handshake(agent_window=8)
    p.open(1)
    p.send(Role.SERVER, Data(stream_id=1, payload=b"x" * 8))
    p.open(2)
    assert p.server.credit(1) == 0
    assert p.server.credit(2) == 8
    assert p.agent.credit(2) == 65536


def test_receiving_more_than_granted_is_a_remote_error() -> None:
    p = ConnectionPair()
    p.handshake(agent_window=10, server_window=5)
    p.open(1)
    p.deliver(Role.AGENT, codec.encode_data(1, b"x" * 6))
    with pytest.raises(RemoteProtocolError):
        p.agent.receive(codec.encode_data(1, b"x" * 5))
    p.deliver(Role.AGENT, codec.encode_data(1, b"x" * 4))  # exactly the remaining window

    p.send(Role.AGENT, Response(stream_id=1, status=200))
    with pytest.raises(RemoteProtocolError):
        p.server.receive(codec.encode_data(1, b"x" * 6))
    assert p.deliver(Role.SERVER, codec.encode_data(1, b"x" * 5)) == [
        Data(stream_id=1, payload=b"x" * 5)
    ]


def test_credit_restores_the_window() -> None:
    p = ConnectionPair()
    p.handshake(agent_window=4)
    p.open(1)
    p.send(Role.SERVER, Data(stream_id=1, payload=b"abcd"))
    assert p.server.credit(1) == 0
    credit = Credit(stream_id=1, increment=3)
    assert p.send(Role.AGENT, credit) == [credit]
    assert p.server.credit(1) == 3
    # the agent now accepts exactly three more bytes
    with pytest.raises(LocalProtocolError):
        p.server.send(Data(stream_id=1, payload=b"efgh"))
    with pytest.raises(RemoteProtocolError):
        p.agent.receive(codec.encode_data(1, b"efgh"))
    p.send(Role.SERVER, Data(stream_id=1, payload=b"efg"))
    assert p.server.credit(1) == 0


def test_credit_flows_both_ways() -> None:
    p = ConnectionPair()
    p.handshake(server_window=2)
    p.open(1)
    p.send(Role.AGENT, Response(stream_id=1, status=200))
    p.send(Role.AGENT, Data(stream_id=1, payload=b"ab"))
    p.send(Role.SERVER, Credit(stream_id=1, increment=10))
    assert p.agent.credit(1) == 10


def test_credit_of_unknown_stream_is_zero(pair: ConnectionPair) -> None:
    assert pair.server.credit(1) == 0
    pair.open(1)
    pair.send(Role.SERVER, Reset(stream_id=1, code="cancelled"))
    assert pair.server.credit(1) == 0
    assert pair.agent.credit(1) == 0


def test_credit_up_to_the_maximum_window_is_fine() -> None:
    p = ConnectionPair()
    p.handshake(agent_window=10)
    p.open(1)
    p.send(Role.AGENT, Credit(stream_id=1, increment=MAX_WINDOW - 10))
    assert p.server.credit(1) == MAX_WINDOW


def test_sending_credit_beyond_the_maximum_window_is_a_local_error() -> None:
    p = ConnectionPair()
    p.handshake(agent_window=10)
    p.open(1)
    with pytest.raises(LocalProtocolError):
        p.agent.send(Credit(stream_id=1, increment=MAX_WINDOW - 9))


def test_receiving_credit_beyond_the_maximum_window_is_a_remote_error() -> None:
    p = ConnectionPair()
    p.handshake(agent_window=MAX_WINDOW)
    p.open(1)
    assert p.server.credit(1) == MAX_WINDOW
    with pytest.raises(RemoteProtocolError):
        p.server.receive(encode(Credit(stream_id=1, increment=1)))


# -- drain and goodbye -------------------------------------------------------------------------


@pytest.mark.parametrize("farewell", [Drain(reason="restart", deadline=5.0), Goodbye(reason="x")])
def test_server_farewell_stops_new_streams(pair: ConnectionPair, farewell: Frame) -> None:
    pair.open(1)
    assert not pair.agent.peer_closing
    assert pair.send(Role.SERVER, farewell) == [farewell]
    assert pair.agent.peer_closing
    assert not pair.server.peer_closing
    with pytest.raises(LocalProtocolError):
        pair.server.send(make_open(2))
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(encode(make_open(2)))
    # in-flight work finishes normally
    pair.send(Role.SERVER, Data(stream_id=1, payload=b"x", end=True))
    pair.send(Role.AGENT, Response(stream_id=1, status=200, end=True))
    assert pair.server.live_streams == pair.agent.live_streams == 0


def test_agent_goodbye_stops_new_streams(pair: ConnectionPair) -> None:
    pair.open(1, end=True)
    goodbye = Goodbye(reason="shutting down")
    assert pair.send(Role.AGENT, goodbye) == [goodbye]
    assert pair.server.peer_closing
    assert not pair.agent.peer_closing
    with pytest.raises(LocalProtocolError):
        pair.server.send(make_open(2))
    # the agent still answers what it already accepted
    pair.send(Role.AGENT, Response(stream_id=1, status=200, end=True))
    assert pair.server.live_streams == pair.agent.live_streams == 0
    # pings still flow
    assert pair.send(Role.SERVER, Ping(nonce=3)) == [Ping(nonce=3)]


# -- connection-level frames -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "frame"),
    [
        (Role.SERVER, Ping(nonce=1)),
        (Role.SERVER, Pong(nonce=2)),
        (Role.AGENT, Ping(nonce=3)),
        (Role.AGENT, Pong(nonce=4)),
        (Role.AGENT, STATUS),
        (Role.AGENT, Status(models=(), max_concurrency=0, status="draining")),
    ],
    ids=lambda x: x.value if isinstance(x, Role) else type(x).__name__,
)
def test_connection_frames_are_delivered(pair: ConnectionPair, role: Role, frame: Frame) -> None:
    assert pair.send(role, frame) == [frame]


def test_events_keep_arrival_order(pair: ConnectionPair) -> None:
    pair.open(1)
    frames: list[Frame] = [Ping(nonce=1), Data(stream_id=1, payload=b"a"), Pong(nonce=2)]
    for frame in frames:
        pair.agent.receive(pair.server.send(frame))
    assert pair.agent.events() == frames


# -- regressions: bugs the property tests found, fixed -------------------------------------


def test_regression_open_crossing_agent_goodbye(pair: ConnectionPair) -> None:
    goodbye = pair.agent.send(Goodbye())
    open_ = pair.server.send(make_open(1))  # the server has not seen the Goodbye yet
    assert pair.deliver(Role.AGENT, open_) == [make_open(1)]
    pair.deliver(Role.SERVER, goodbye)
    pair.send(Role.AGENT, Reset(stream_id=1, code=ResetCode.DRAINING))
    assert pair.server.live_streams == pair.agent.live_streams == 0


def test_regression_rejected_data_send_consumes_credit(pair: ConnectionPair) -> None:
    pair.open(1)
    before = pair.agent.credit(1)
    with pytest.raises(LocalProtocolError):
        pair.agent.send(Data(stream_id=1, payload=b"12345"))  # no Response yet
    assert pair.agent.credit(1) == before


def test_regression_rejected_credit_send_grows_the_window() -> None:
    p = ConnectionPair()
    p.handshake(server_window=10)
    p.open(1)
    p.send(Role.AGENT, Response(stream_id=1, status=200))
    with pytest.raises(LocalProtocolError):
        p.server.send(Credit(stream_id=1, increment=MAX_WINDOW))
    with pytest.raises(RemoteProtocolError):
        p.server.receive(codec.encode_data(1, b"x" * 11))


@pytest.mark.parametrize(
    ("role", "frame"),
    [
        (Role.SERVER, Credit(stream_id=1, increment=0)),
        (Role.SERVER, Credit(stream_id=1, increment=-100)),
        (Role.AGENT, Response(stream_id=1, status=42)),
        (Role.SERVER, make_open(2**32)),
    ],
    ids=["credit-0", "credit-negative", "status-42", "stream-id-2**32"],
)
def test_regression_send_accepts_frames_the_peer_rejects(
    pair: ConnectionPair, role: Role, frame: Frame
) -> None:
    pair.open(1)
    with pytest.raises(RemoteProtocolError):
        codec.decode(codec.encode(frame))
    with pytest.raises(LocalProtocolError):
        pair.conn(role).send(frame)


def test_regression_receive_huge_integer_timeout(pair: ConnectionPair) -> None:
    text = encode(make_open(1, timeout=1.5))
    assert isinstance(text, str)
    message = text.replace("1.5", "1" + "0" * 400)
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(message)


# -- batches -----------------------------------------------------------------------------------


def test_a_batch_delivers_its_frames_in_order(pair: ConnectionPair) -> None:
    pair.open(1)
    messages = [
        pair.server.send_data(1, b"body", end=True),
    ]
    pair.agent.receive(codec.encode_batch(messages))
    assert pair.agent.events() == [Data(stream_id=1, payload=b"body", end=True)]
    head = Response(stream_id=1, status=200)
    last = Data(stream_id=1, payload=b"answer", end=True)
    batch = codec.encode_batch([pair.agent.send(head), pair.agent.send(last)])
    pair.server.receive(batch)
    assert pair.server.events() == [head, last]
    assert not pair.server.is_live(1)


def test_a_batch_is_checked_frame_by_frame(pair: ConnectionPair) -> None:
    pair.open(1)
    # Data on a stream that was never opened, behind a valid frame: a protocol error.
    bad = codec.encode_batch([encode(Ping(nonce=1)), codec.encode_data(9, b"x")])
    with pytest.raises(RemoteProtocolError):
        pair.agent.receive(bad)


def test_credit_is_accounted_across_a_batch(pair: ConnectionPair) -> None:
    pair.open(1)
    window = pair.agent.credit(1)
    chunk = b"x" * (window // 2 + 1)
    # Two frames within the window each, over it together: the receiver counts the batch whole.
    batch = codec.encode_batch(
        [
            encode(Response(stream_id=1, status=200)),
            codec.encode_data(1, chunk),
            codec.encode_data(1, chunk),
        ]
    )
    with pytest.raises(RemoteProtocolError):
        pair.server.receive(batch)
