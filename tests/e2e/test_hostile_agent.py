"""A hostile agent against a real ``nfrx serve``, next to a good agent (a real ``nfrx llm``).

Whatever the hostile agent sends -- floods, oversized batches and frames, frames for streams it
does not own, announcements over the limits, fuzzed frame sequences -- the server stays up and
responsive, the good agent keeps answering, and ``/api/state`` shows no request stuck in a slot
or in the queue afterwards.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfrx.protocol import (
    Credit,
    Data,
    Frame,
    Goodbye,
    Open,
    Ping,
    Pong,
    Reset,
    ResetCode,
    Response,
    Status,
    codec,
)
from nfrx.protocol.frames import MAX_STREAM_ID, MAX_WINDOW
from nfrx.transport.session import CLOSE_POLICY, CLOSE_PROTOCOL_ERROR
from tests.e2e.harness import Server, run_agent, run_server
from tests.e2e.hostile import (
    HandshakeRefusedByServer,
    Message,
    assert_whole,
    batch_of,
    chat,
    control,
    hello_frame,
    hostile_agent,
    message_of,
)
from tests.fixtures.backend import FixtureBackend, run_backend

pytestmark = pytest.mark.e2e

HOSTILE_MODEL = "hostile-model"
TIMEOUTS = {"LLM_IDLE_TIMEOUT": "5", "LLM_QUEUE_TIMEOUT": "5", "REQUEST_TIMEOUT": "20"}
"""Requests the hostile agent leaves hanging end within seconds, not minutes."""

_ids = itertools.count(1)


def hostile_id() -> str:
    return f"hostile-{next(_ids)}"


@asynccontextmanager
async def gateway(backend: FixtureBackend, env: dict[str, str]) -> AsyncIterator[Server]:
    """A server with ``env`` and a good agent ("good", a real ``nfrx llm``) connected."""
    async with (
        run_server(env={**TIMEOUTS, **env}) as server,
        run_agent(server, backend.base_url, name="good"),
    ):
        yield server


@pytest.fixture
async def server(backend: FixtureBackend) -> AsyncIterator[Server]:
    async with gateway(backend, {}) as server:
        yield server


async def requests_to_hostile(
    server: Server, count: int, nursery: trio.Nursery
) -> list[httpx.Response | Exception]:
    """Start ``count`` chat requests for the hostile agent's model; their outcomes (a response,
    or the transport error of a response cut short) land in the returned list."""
    outcomes: list[httpx.Response | Exception] = []

    async def one() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            try:
                outcomes.append(await chat(http, server, HOSTILE_MODEL))
            except httpx.TransportError as exc:
                outcomes.append(exc)

    for _ in range(count):
        nursery.start_soon(one)
    return outcomes


def check_outcome(outcome: httpx.Response | Exception) -> None:
    """A request the hostile agent served (or failed) got an answer the API documents."""
    if isinstance(outcome, Exception):
        return  # the agent died mid-body: the client's connection ends, which it sees
    assert outcome.status_code in (200, 201, 204, 400, 404, 500, 502, 503, 504), outcome.text
    if outcome.status_code >= 502:
        assert outcome.json()["error"]["code"], outcome.text


# -- finding 2: floods -------------------------------------------------------------------------


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


PROBE = """
import json, sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
latencies = []
with httpx.Client(timeout=60) as http:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        assert http.get(url).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.01)
print(json.dumps(latencies))
"""
"""Times ``GET /healthz`` for a while, from a process of its own: the test's own work (the
flood) must not delay the measurement."""


async def test_a_flood_leaves_healthz_and_the_other_agents_responsive(server: Server) -> None:
    """The hostile agent sends as fast as it can: full batches of pings, status changes and
    pongs, then a batch of 200,000 pings (over the cap: the tunnel is closed, so it reconnects),
    and again. Before the fix each such batch froze the server for seconds."""
    full = [
        batch_of([Ping(nonce=i) for i in range(codec.MAX_BATCH_FRAMES)]),
        batch_of(
            [
                Status(models=(HOSTILE_MODEL,), max_concurrency=i % 2, status="ready")
                for i in range(codec.MAX_BATCH_FRAMES)
            ]
        ),
        batch_of([Pong(nonce=i) for i in range(codec.MAX_BATCH_FRAMES)]),
    ]
    oversized = batch_of([message_of(Ping(nonce=1))] * 200_000)
    closes: list[str] = []
    chats: list[int] = []
    log_from = len(server.proc.lines)

    async def flood() -> None:
        while True:
            async with hostile_agent(server) as agent:
                await agent.hello(agent_id=hostile_id())
                try:
                    while agent.closed is None:
                        for message in full:
                            await agent.send_raw(message)
                        await agent.send_raw(oversized)
                except trio_websocket.ConnectionClosed:
                    pass
                closed = await agent.wait_closed(timeout=60)
                closes.append(closed.reason)

    async def good_chats() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in range(10):
                chats.append((await chat(http, server, "fixture-model")).status_code)
                await trio.sleep(0.2)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(good_chats)
            probe = await trio.run_process(
                [sys.executable, "-c", PROBE, f"{server.url}/healthz", "4"],
                capture_stdout=True,
            )
            nursery.cancel_scope.cancel()
    latencies: list[float] = json.loads(probe.stdout)
    p99 = percentile(latencies, 0.99)
    print(
        f"/healthz under flood: {len(latencies)} probes, p50 "
        f"{percentile(latencies, 0.5) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max "
        f"{max(latencies) * 1000:.1f} ms; {len(closes)} oversized batches refused"
    )
    assert p99 < 2.0, f"/healthz p99 {p99:.2f} s under flood"
    assert closes, "the oversized batch never closed the tunnel"
    assert all("batch of more than 1024" in reason for reason in closes), closes
    assert chats == [200] * 10
    logged = "\n".join(server.proc.lines[log_from:])
    assert not re.search(r"llm agent good \(.*\) disconnected", logged), logged
    await assert_whole(server, log_from=log_from)


async def test_an_agent_that_never_reads_is_cut_off(backend: FixtureBackend) -> None:
    """Pings answered by Pongs the agent never reads: the server answers a burst with one Pong,
    so nothing piles up, and once its writes stall for AGENT_DEAD_AFTER it drops the tunnel.
    Before the fix every Pong was queued for ever (~80 MB a minute) and the agent kept its
    place."""
    env = {"AGENT_DEAD_AFTER": "3", "HEARTBEAT_INTERVAL": "0.5"}
    async with gateway(backend, env) as server:
        log_from = len(server.proc.lines)
        # One Ping per message: as many Pongs as the server can send (a Pong answers all the
        # Pings of one message), so its writes to the small receive buffer stall soonest.
        ping = message_of(Ping(nonce=1))
        async with hostile_agent(server, read=False, receive_buffer=4096) as agent:
            await agent.send(hello_frame(agent_id="deaf"))
            async with trio.open_nursery() as nursery:

                async def flood() -> None:
                    with trio.move_on_after(60):  # a hang guard only; the line below ends it
                        while True:
                            await agent.send_raw(ping)

                nursery.start_soon(flood)
                line = await server.proc.wait_for_line(
                    r"llm:hostile: peer has not read anything for 3\.0 s", start=log_from
                )
                nursery.cancel_scope.cancel()
        assert "closing the tunnel" in line.string
        async with httpx.AsyncClient(timeout=10) as http:
            health = (await http.get(f"{server.url}/healthz")).json()
        assert health["agents"]["llm"] == 1
        await assert_whole(server, log_from=log_from)


# -- finding 3: announcements ------------------------------------------------------------------

LIMITS = {"AGENT_MAX_MODELS": "3", "AGENT_MAX_MODEL_NAME_BYTES": "16"}

OVER_LIMIT_HELLOS: list[tuple[dict[str, Any], str]] = [
    ({"models": ("a", "b", "c", "d")}, "4 models announced; at most 3 accepted (AGENT_MAX_MODELS)"),
    (
        {"models": ("m" * 1024 * 1024,)},
        "is 1048576 bytes; at most 16 accepted (AGENT_MAX_MODEL_NAME_BYTES)",
    ),
    ({"models": ("é" * 9,)}, "is 18 bytes; at most 16 accepted"),  # bytes, not characters
    ({"name": "n" * 257}, "agent name 'nnnnnnnnnnnnnnnn'... is 257 bytes; at most 256 accepted"),
    ({"agent_id": "i" * 300}, "agent id 'iiiiiiiiiiiiiiii'... is 300 bytes"),
    ({"agent_version": "v" * 65}, "agent version"),
    ({"status": "s" * 65}, "status"),
    ({"options": tuple((f"k{i}", "v") for i in range(65))}, "65 options; at most 64 accepted"),
    ({"options": (("k", "v" * 5000),)}, "option 'k' is 5001 bytes; at most 4096 accepted"),
]


async def test_hellos_over_the_limits_are_refused(backend: FixtureBackend) -> None:
    async with gateway(backend, LIMITS) as server:
        log_from = len(server.proc.lines)
        for overrides, message in OVER_LIMIT_HELLOS:
            async with hostile_agent(server) as agent:
                with pytest.raises(HandshakeRefusedByServer) as refused:
                    await agent.hello(**{"agent_id": hostile_id(), **overrides})
                assert refused.value.refuse.code == "over_limit"
                assert message in refused.value.refuse.message
                assert len(refused.value.refuse.message) < 120  # names it, never echoes it all
                assert (await agent.wait_closed()).code == CLOSE_POLICY
        async with hostile_agent(server) as agent:  # at the limits: accepted
            await agent.hello(agent_id="exact", models=("a", "b", "é" * 8))
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(f"{server.api_base}/models", headers=server.headers())
            listed = {model["id"] for model in response.json()["data"]}
            assert listed == {"a", "b", "é" * 8, "fixture-model", "org/llama3:8b"}
        await assert_whole(server, log_from=log_from)


async def test_a_status_over_the_limits_closes_the_tunnel(backend: FixtureBackend) -> None:
    async with gateway(backend, LIMITS) as server:
        log_from = len(server.proc.lines)
        async with hostile_agent(server) as agent:
            await agent.hello(agent_id="grows", models=("a",), max_concurrency=4)
            flips = [
                Status(models=("a",), max_concurrency=c % 2, status="ready") for c in range(99)
            ]
            await agent.send_batch(flips)  # changes a flood of the log would show
            await agent.send(Status(models=("a", "b", "c", "d"), max_concurrency=1, status="ready"))
            closed = await agent.wait_closed()
        assert closed.code == CLOSE_POLICY
        assert closed.reason == (
            "status over limit: 4 models announced; at most 3 accepted (AGENT_MAX_MODELS)"
        )
        await server.proc.wait_for_line(
            r"llm agent hostile \(grows\): status refused", start=log_from
        )
        status_lines = [line for line in server.proc.lines if "llm agent hostile: " in line]
        assert 10 <= len(status_lines) < 20, status_lines  # a burst of 10, then 1 a second
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{server.api_base}/models", headers=server.headers())
        assert {model["id"] for model in response.json()["data"]} == {
            "fixture-model",
            "org/llama3:8b",
        }
        await assert_whole(server, log_from=log_from)


async def test_an_agent_over_the_limits_says_why_and_stops() -> None:
    """A real ``nfrx llm`` whose backend lists more models than the server accepts: its status
    closes the tunnel, and, reconnecting, its hello is refused; it prints why on one line and
    exits 2 although it was told to reconnect (retrying cannot fix it)."""
    async with (
        run_backend(models=("m1",)) as backend,
        run_server(env={"AGENT_MAX_MODELS": "1"}) as server,
        run_agent(
            server,
            backend.base_url,
            name="growing",
            env={"MODEL_POLL_INTERVAL": "0.2"},
            args=["--reconnect"],
        ) as agent,
    ):
        backend.models.append("m2")
        await agent.wait_for_line(
            r"closed by peer \(status over limit: 2 models announced; at most 1 accepted"
        )
        assert await agent.wait_exit() == 2
        last = agent.lines[-1]
        assert last == (
            "nfrx llm: the server refused this agent: 2 models announced; at most 1 accepted "
            "(AGENT_MAX_MODELS) (over_limit)"
        ), agent.output()


# -- frames a broken or malicious agent may send -----------------------------------------------


@attrs.frozen
class Attack:
    name: str
    messages: Callable[[int], list[Frame | Message]]
    """What the agent sends, given the id of the first stream the server opened to it."""
    closes: int | None
    """The close code the server answers with, or None: the tunnel stays up."""
    requests: int = 0
    """Client requests routed to the hostile agent first (the streams it may abuse)."""


def _json(**fields: Any) -> str:
    return control(fields)


ATTACKS = [
    Attack("data for a stream never opened", lambda _: [Data(stream_id=9)], 1002),
    Attack("a second hello", lambda _: [hello_frame()], 1002),
    Attack("an open from the agent", lambda _: [Open(stream_id=1, method="GET", path="/")], 1002),
    Attack("not json", lambda _: ["{not json"], 1002),
    Attack("json of the wrong type", lambda _: [_json(type="credit", stream_id="1")], 1002),
    Attack("an unknown binary kind", lambda _: [b"\x07\x00\x00\x00\x00\x01"], 1002),
    Attack("an empty batch", lambda _: [b"\x02"], 1002),
    Attack("a truncated batch", lambda _: [b"\x02\x00\x00\x00\x00\x10ab"], 1002),
    Attack("a batch in a batch", lambda _: [batch_of([batch_of([Ping(nonce=1)])])], 1002),
    Attack("a batch over the cap", lambda _: [batch_of([Ping(nonce=1)] * 1025)], 1002),
    Attack("a ping over its size", lambda _: [_json(type="ping", nonce=1, pad="x" * 5000)], 1002),
    Attack("a huge unknown type", lambda _: [_json(type="x" * 100_000)], 1002),
    Attack(
        "a stream id out of range",
        lambda _: [_json(type="reset", stream_id=MAX_STREAM_ID + 1, code="x")],
        1002,
    ),
    Attack(
        "a negative capacity",
        lambda _: [_json(type="status", models=[], max_concurrency=-1, status="ready")],
        1002,
    ),
    Attack(
        "more data than the window",
        lambda s: [Response(stream_id=s, status=200), Data(stream_id=s, payload=b"x" * 262_145)],
        1002,
        requests=1,
    ),
    Attack(
        "a credit overflow",
        lambda s: [Credit(stream_id=s, increment=MAX_WINDOW)] * 2,
        1002,
        requests=1,
    ),
    Attack("two responses", lambda s: [Response(stream_id=s, status=200)] * 2, 1002, requests=1),
    Attack(
        "a reset with a long reason",
        lambda s: [Reset(stream_id=s, code="x" * 1000, message="\n" * 1000)],
        None,
        requests=1,
    ),
    Attack("a head, then silence", lambda s: [Response(stream_id=s, status=200)], None, 2),
    Attack(
        "frames for a stream it reset",
        lambda s: [Reset(stream_id=s, code=ResetCode.CANCELLED), Data(stream_id=s, payload=b"x")],
        None,
        requests=1,
    ),
    Attack("goodbye with requests in flight", lambda _: [Goodbye(reason="bye")], 1000, 2),
]


async def run_attack(server: Server, attack: Attack) -> None:
    log_from = len(server.proc.lines)
    async with trio.open_nursery() as nursery, hostile_agent(server) as agent:
        await agent.hello(agent_id=hostile_id())
        outcomes = await requests_to_hostile(server, attack.requests, nursery)
        opened = [await agent.receive(Open) for _ in range(attack.requests)]
        with suppress(trio_websocket.ConnectionClosed):
            await agent.send(*attack.messages(opened[0].stream_id if opened else 1))
        if attack.closes is not None:
            closed = await agent.wait_closed()
            assert closed.code == attack.closes, (attack.name, closed)
            if attack.closes == CLOSE_PROTOCOL_ERROR:
                assert closed.reason.startswith("protocol error: "), closed
    for outcome in outcomes:
        check_outcome(outcome)
    await assert_whole(server, log_from=log_from)


async def test_hostile_frames_leave_the_server_whole(server: Server) -> None:
    # First the harness itself: an answer it sends reaches the client as sent.
    async with trio.open_nursery() as nursery, hostile_agent(server) as agent:
        await agent.hello(agent_id=hostile_id())
        outcomes = await requests_to_hostile(server, 1, nursery)
        await agent.answer(await agent.receive(Open), 200, body=b'{"answered": "by hand"}')
    (answer,) = outcomes
    assert isinstance(answer, httpx.Response)
    assert (answer.status_code, answer.json()) == (200, {"answered": "by hand"})
    for attack in ATTACKS:
        with trio.fail_after(40):
            await run_attack(server, attack)


# -- fuzzed frame sequences ------------------------------------------------------------------

StreamRef = int
"""An index into the streams the server opened (wrapped around), or, when negative, a raw id."""

stream_refs = st.one_of(
    st.integers(min_value=0, max_value=3),
    st.sampled_from([-1, -7, -(2**20), -MAX_STREAM_ID]),
)
short_text = st.text(max_size=12)
frame_recipes = st.one_of(
    st.builds(
        lambda ref, status, end, typed: ("response", ref, status, end, typed),
        stream_refs,
        st.sampled_from([200, 201, 204, 400, 404, 429, 500, 502, 503]),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        lambda ref, payload, end: ("data", ref, payload, end),
        stream_refs,
        st.binary(max_size=64) | st.just(b"x" * (256 * 1024 + 1)),
        st.booleans(),
    ),
    st.builds(
        lambda ref, increment: ("credit", ref, increment),
        stream_refs,
        st.integers(min_value=1, max_value=MAX_WINDOW) | st.sampled_from([0, -1, MAX_WINDOW + 1]),
    ),
    st.builds(
        lambda ref, code, message: ("reset", ref, code, message),
        stream_refs,
        st.sampled_from([v for k, v in vars(ResetCode).items() if k.isupper()]) | short_text,
        short_text,
    ),
    st.builds(lambda nonce: ("ping", nonce), st.integers()),
    st.builds(lambda nonce: ("pong", nonce), st.integers()),
    st.builds(
        lambda models, capacity, status: ("status", models, capacity, status),
        st.lists(st.sampled_from([HOSTILE_MODEL, "other", "fixture-model", ""]), max_size=3),
        st.integers(min_value=-1, max_value=8),
        st.sampled_from(["ready", "not_ready", "draining", "odd"]),
    ),
    st.builds(lambda reason: ("goodbye", reason), short_text),
    st.just(("hello",)),
    st.builds(lambda text: ("text", text), st.text(max_size=24)),
    st.builds(lambda raw: ("binary", raw), st.binary(max_size=24)),
)
messages = st.one_of(
    frame_recipes.map(lambda recipe: [recipe]),
    st.lists(frame_recipes, min_size=1, max_size=12),  # a batch
)
cases = st.tuples(st.integers(min_value=0, max_value=2), st.lists(messages, max_size=6))


def build(recipe: tuple[Any, ...], opened: list[Open]) -> Message:
    """The message a recipe describes, with stream references resolved against ``opened``."""
    kind, *args = recipe

    def stream(ref: StreamRef) -> int:
        if ref < 0:
            return -ref
        return opened[ref % len(opened)].stream_id if opened else ref + 1

    frame: Frame
    if kind == "response":
        ref, status, end, typed = args
        headers = (("content-type", "application/json"),) if typed else ()
        frame = Response(stream_id=stream(ref), status=status, headers=headers, end=end)
    elif kind == "data":
        ref, payload, end = args
        return codec.encode_data(stream(ref), payload, end=end)
    elif kind == "credit":
        ref, increment = args
        return control({"type": "credit", "stream_id": stream(ref), "increment": increment})
    elif kind == "reset":
        ref, code, message = args
        frame = Reset(stream_id=stream(ref), code=code, message=message)
    elif kind == "ping":
        frame = Ping(nonce=args[0])
    elif kind == "pong":
        frame = Pong(nonce=args[0])
    elif kind == "status":
        models, capacity, status = args
        return control(
            {"type": "status", "models": models, "max_concurrency": capacity, "status": status}
        )
    elif kind == "goodbye":
        frame = Goodbye(reason=args[0])
    elif kind == "hello":
        frame = hello_frame()
    elif kind == "text":
        return str(args[0])
    else:
        return bytes(args[0])
    return message_of(frame)


async def run_case(server: Server, requests: int, plan: list[list[tuple[Any, ...]]]) -> None:
    with trio.fail_after(40):
        log_from = len(server.proc.lines)
        async with trio.open_nursery() as nursery, hostile_agent(server) as agent:
            await agent.hello(agent_id=hostile_id())
            outcomes = await requests_to_hostile(server, requests, nursery)
            opened = [await agent.receive(Open) for _ in range(requests)]
            try:
                for recipes in plan:
                    built = [build(recipe, opened) for recipe in recipes]
                    await agent.send_raw(built[0] if len(built) == 1 else batch_of(built))
            except trio_websocket.ConnectionClosed:
                pass
        for outcome in outcomes:
            check_outcome(outcome)
        await assert_whole(server, log_from=log_from)


async def test_fuzzed_frame_sequences(server: Server) -> None:
    """Hypothesis drives the hostile agent from a worker thread; each example runs on this
    test's Trio loop against the same server (derandomized: the same examples on every run)."""

    @settings(
        max_examples=20,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases)
    def fuzz(case: tuple[int, list[list[tuple[Any, ...]]]]) -> None:
        trio.from_thread.run(run_case, server, *case)

    await trio.to_thread.run_sync(fuzz)
