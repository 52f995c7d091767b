"""The transfer API through a real ``nfrx serve`` with httpx readers and writers: the relay, every
error answer, who may call it, a writer or a reader failing mid-transfer, and a 1 GiB transfer in
bounded server memory.

Where a test needs a side to be parked on its channel first, it waits for the state stream to
show it (``transfer.sides_waiting``), never for a fixed time.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.e2e.harness import Server, run_server
from tests.e2e.test_state import Snapshots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def open_channel(server: Server, http: httpx.AsyncClient) -> str:
    response = await http.post(f"{server.url}/api/transfer", headers=server.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_at"].endswith("Z")
    channel_id: str = body["channel_id"]
    return channel_id


async def wait_state(
    server: Server, http: httpx.AsyncClient, predicate: Callable[[dict[str, Any]], bool]
) -> None:
    """Until a state snapshot satisfies ``predicate`` (the state stream follows channels)."""
    async with http.stream("GET", f"{server.url}/api/state/stream", headers=server.headers()) as r:
        await Snapshots(r).until(predicate)


def sides_waiting(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda state: bool(state["plugins"]["transfer"]["sides_waiting"] == n)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str)


async def test_a_channel_relays_the_bytes_once(server: Server, http: httpx.AsyncClient) -> None:
    channel = await open_channel(server, http)
    url = f"{server.url}/api/transfer/{channel}"
    data = os.urandom(3 * MiB + 17)
    got: list[httpx.Response] = []

    async def read() -> None:
        got.append(await http.get(url, headers=server.headers()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        written = await http.post(url, content=data, headers=bearer(server.client_key))
    assert written.status_code == 200, written.text
    assert written.json() == {"status": "ok", "bytes": len(data)}
    (read_response,) = got
    assert read_response.status_code == 200
    assert read_response.headers["content-type"] == "application/octet-stream"
    assert read_response.content == data
    # One time only: the finished channel is gone for both sides.
    assert_error(await http.get(url, headers=server.headers()), 404, "transfer_not_found")
    assert_error(
        await http.post(url, content=b"x", headers=server.headers()), 404, "transfer_not_found"
    )


async def test_a_taken_side_answers_409_and_a_stranger_401(
    server: Server, http: httpx.AsyncClient
) -> None:
    channel = await open_channel(server, http)
    url = f"{server.url}/api/transfer/{channel}"
    async with trio.open_nursery() as nursery:
        first: list[httpx.Response] = []

        async def read() -> None:
            first.append(await http.get(url, headers=server.headers()))

        nursery.start_soon(read)
        await wait_state(server, http, sides_waiting(1))
        assert_error(await http.get(url, headers=server.headers()), 409, "transfer_in_use")
        assert (await http.head(url, headers=server.headers())).status_code == 405
        refused = await http.post(url, content=b"x")
        assert_error(refused, 401, "unauthorized")
        assert refused.headers["www-authenticate"] == 'Bearer realm="nfrx"'
        assert_error(
            await http.post(url, content=b"x", headers=bearer("wrong")), 401, "unauthorized"
        )
        written = await http.post(url, content=b"hello", headers=server.headers())
        assert written.status_code == 200, written.text
    assert first[0].content == b"hello"
    assert_error(await http.post(f"{server.url}/api/transfer"), 401, "unauthorized")
    assert_error(
        await http.get(f"{server.url}/api/transfer/nope", headers=server.headers()),
        404,
        "transfer_not_found",
    )


async def test_roles_of_either_side_may_transfer(http: httpx.AsyncClient) -> None:
    env = {"API_HTTP_ROLES": "apps", "CLIENT_HTTP_ROLES": "workers"}
    async with run_server(env=env) as server:
        for roles in ("apps", "workers", "other, workers"):
            created = await http.post(f"{server.url}/api/transfer", headers={"X-User-Roles": roles})
            assert created.status_code == 200, (roles, created.text)
        assert_error(
            await http.post(f"{server.url}/api/transfer", headers={"X-User-Roles": "other"}),
            401,
            "unauthorized",
        )


async def test_a_side_nobody_joins_gets_410_then_the_channel_is_gone(
    http: httpx.AsyncClient,
) -> None:
    async with run_server(env={"TRANSFER_TTL": "1"}) as server:
        channel = await open_channel(server, http)
        url = f"{server.url}/api/transfer/{channel}"
        assert_error(await http.get(url, headers=server.headers()), 410, "transfer_expired")
        assert_error(
            await http.post(url, content=b"x", headers=server.headers()), 404, "transfer_not_found"
        )
        unattached = await open_channel(server, http)
        # Nobody ever came: the server forgets it on its own (state shows it, then not).
        await wait_state(server, http, lambda s: s["plugins"]["transfer"]["open"] == 0)
        assert_error(
            await http.get(f"{server.url}/api/transfer/{unattached}", headers=server.headers()),
            404,
            "transfer_not_found",
        )


class DyingBody:
    """A request body that sends ``good`` bytes, then fails (the writer's process dies)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def __aiter__(self) -> DyingBody:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.left <= 0:
            raise RuntimeError("the writer died")
        self.left -= 64 * 1024
        return b"w" * (64 * 1024)


async def test_a_writer_dying_mid_transfer_cuts_the_reader_instead_of_ending_it(
    server: Server, http: httpx.AsyncClient
) -> None:
    channel = await open_channel(server, http)
    url = f"{server.url}/api/transfer/{channel}"
    received = 0
    cut: list[httpx.RemoteProtocolError] = []

    async def read() -> None:
        nonlocal received
        try:
            async with http.stream("GET", url, headers=server.headers()) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    received += len(chunk)
        except httpx.RemoteProtocolError as exc:  # not a clean end of the body
            cut.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await wait_state(server, http, sides_waiting(1))  # the reader waits on the channel
        with pytest.raises(RuntimeError, match="the writer died"):
            await http.post(url, content=DyingBody(4 * MiB), headers=server.headers())
    assert len(cut) == 1
    assert 0 < received <= 4 * MiB + 64 * 1024
    await server.proc.wait_for_line(rf"transfer {channel} failed .*the writer left")


class BigBody:
    """A finite request body much larger than what the reader will take."""

    def __init__(self, size: int) -> None:
        self.left = size

    def __aiter__(self) -> BigBody:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.left <= 0:
            raise StopAsyncIteration
        self.left -= 64 * 1024
        return b"r" * (64 * 1024)


async def test_a_reader_leaving_mid_transfer_fails_the_writer_with_502(
    server: Server, http: httpx.AsyncClient
) -> None:
    channel = await open_channel(server, http)
    url = f"{server.url}/api/transfer/{channel}"
    written: list[httpx.Response] = []
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            body = BigBody(64 * MiB)
            written.append(await http.post(url, content=body, headers=server.headers()))

        nursery.start_soon(write)
        async with (
            httpx.AsyncClient(timeout=60) as reader,  # its own connection, to drop
            reader.stream("GET", url, headers=server.headers()) as response,
        ):
            assert response.status_code == 200
            async for _ in response.aiter_raw():
                break  # the reader goes away after its first bytes
    (response,) = written
    assert_error(response, 502, "transfer_failed")
    assert "the reader left" in response.json()["message"]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_one_gibibyte_streams_intact_in_bounded_server_memory(
    server: Server, http: httpx.AsyncClient
) -> None:
    total = 1024 * MiB
    block = bytes(range(256)) * 4096  # 1 MiB
    sent, got = hashlib.sha256(), hashlib.sha256()

    async def generate() -> AsyncIterator[bytes]:
        for i in range(total // len(block)):
            chunk = i.to_bytes(4, "big") + block[4:]
            sent.update(chunk)
            yield chunk

    channel = await open_channel(server, http)
    url = f"{server.url}/api/transfer/{channel}"
    received = 0
    before = rss(server.proc.process.pid)
    written: list[httpx.Response] = []
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            written.append(await http.post(url, content=generate(), headers=server.headers()))

        nursery.start_soon(write)
        async with http.stream("GET", url, headers=server.headers()) as response:
            async for chunk in response.aiter_raw():
                got.update(chunk)
                received += len(chunk)
    after = rss(server.proc.process.pid)
    assert written[0].json() == {"status": "ok", "bytes": total}
    assert received == total
    assert got.hexdigest() == sent.hexdigest()
    assert after - before < 20 * MiB, (before, after)
