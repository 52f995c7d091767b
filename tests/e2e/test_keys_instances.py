"""Client keys of several ``nfrx serve`` instances on one real Redis: one set of keys, limits and
usage for the whole gateway.

A key issued or revoked through one instance is honoured or refused by the very next request on
another, with the same answer; a key allowed N requests per window gets exactly N through over
two instances together; usage is the gateway's on every instance (``/api/state``, ``nfrx keys
show``) and survives the instances; a Redis that stops refuses keys with limits with a 503 that
says why, and admits keys without.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.e2e.cluster import (
    chat,
    contents,
    instance_env,
    run_instances,
    wait_state,
    wait_tunnels,
)
from tests.e2e.harness import run_agent, run_server
from tests.e2e.test_keys import bearer, create, expect_error, keys_cli, show
from tests.fixtures.redis_server import REDIS_SERVER, RedisServer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.e2e.harness import Server
    from tests.fixtures.backend import FixtureBackend

CAP = 90.0
"""Seconds any test may take: a hang guard only."""
LONG_WINDOW = {"KEY_RATE_WINDOW": "1000000000"}
"""Per-minute limits counted in one window that outlasts the test (no window ends meanwhile)."""


async def ask(http: httpx.AsyncClient, server: Server, secret: str, content: str) -> httpx.Response:
    return await http.post(
        f"{server.api_base}/chat/completions", json=chat(content), headers=bearer(secret)
    )


async def test_a_key_revoked_through_one_instance_is_refused_by_the_next_request_on_another(
    redis_url: str, backend: FixtureBackend
) -> None:
    with trio.fail_after(CAP):
        async with (
            run_instances(redis_url, 2) as (a, b),
            run_agent(a, backend.base_url) as agent,
            httpx.AsyncClient(timeout=60) as http,
        ):
            await wait_tunnels(agent, ["a", "b"])
            key, secret = await create(http, a, name="team")
            served = await ask(http, b, secret, "before")  # issued through a, used on b
            assert served.status_code == 200, served.text
            revoked = await http.delete(f"{a.url}/api/admin/keys/team", headers=a.headers())
            assert revoked.status_code == 200, revoked.text
            on_b = await ask(http, b, secret, "after")
            on_a = await ask(http, a, secret, "after")
            for refused in (on_b, on_a):
                error = expect_error(refused, 401, "key_revoked")
                assert error["message"] == "the key 'team' is revoked"
            assert on_b.json() == on_a.json()
            assert contents(backend) == ["before"]
            assert (await show(http, b, key["id"]))["status"] == "revoked"


async def test_a_key_created_through_one_instance_with_the_cli_works_on_another_at_once(
    redis_url: str, backend: FixtureBackend
) -> None:
    with trio.fail_after(CAP):
        async with (
            run_instances(redis_url, 2) as (a, b),
            run_agent(b, backend.base_url) as agent,
            httpx.AsyncClient(timeout=60) as http,
        ):
            await wait_tunnels(agent, ["a", "b"])
            code, output = await keys_cli(a, "create", "cli-made", "--json")
            assert code == 0, output
            secret = json.loads(output)["secret"]
            served = await ask(http, b, secret, "k")
            assert served.status_code == 200, served.text


async def test_a_request_limit_is_one_for_the_whole_gateway(
    redis_url: str, backend: FixtureBackend
) -> None:
    limit = 4
    with trio.fail_after(CAP):
        async with (
            run_instances(redis_url, 2, env=LONG_WINDOW) as (a, b),
            run_agent(a, backend.base_url) as agent,
            httpx.AsyncClient(timeout=60) as http,
        ):
            await wait_tunnels(agent, ["a", "b"])
            _, secret = await create(http, b, name="rpm", limits={"requests_per_minute": limit})
            answers = [await ask(http, (a, b)[n % 2], secret, f"r{n}") for n in range(limit)]
            assert [r.status_code for r in answers] == [200] * limit
            for server in (a, b):
                refused = await ask(http, server, secret, "over")
                error = expect_error(refused, 429, "rate_limit_exceeded", kind="rate_limit_error")
                assert error["message"].startswith(
                    f"the key 'rpm' reached its limit of {limit} requests per minute; retry in "
                )
                assert int(refused.headers["retry-after"]) >= 1
            assert contents(backend) == [f"r{n}" for n in range(limit)]

            def counted(snapshot: dict[str, Any]) -> bool:
                (key,) = snapshot["keys"]["keys"]
                return bool(key["usage"]["requests"] == limit + 2)

            # Each instance writes its usage within a second; the gateway's adds up.
            snapshot = await wait_state(a, counted)
            assert snapshot["keys"]["keys"][0]["usage"]["refused"] == 2


async def test_two_clients_racing_through_two_instances_get_exactly_the_limit(
    redis_url: str, backend: FixtureBackend
) -> None:
    limit = 6
    with trio.fail_after(CAP):
        async with (
            run_instances(redis_url, 2, env=LONG_WINDOW) as (a, b),
            run_agent(a, backend.base_url) as agent,
            httpx.AsyncClient(timeout=60) as http,
        ):
            await wait_tunnels(agent, ["a", "b"])
            _, secret = await create(http, a, name="race", limits={"requests_per_minute": limit})
            statuses: list[int] = []

            async def client(server: Server, name: str) -> None:
                for n in range(limit):
                    statuses.append((await ask(http, server, secret, f"{name}{n}")).status_code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client, a, "a")
                nursery.start_soon(client, b, "b")
            assert sorted(statuses) == [200] * limit + [429] * limit
            assert len(contents(backend)) == limit


async def test_usage_is_the_gateways_on_every_instance_and_outlives_them(
    redis_url: str, backend: FixtureBackend
) -> None:
    sent = {"a": 2, "b": 3}
    with trio.fail_after(CAP):
        async with (
            run_instances(redis_url, 2) as (a, b),
            run_agent(a, backend.base_url) as agent,
            httpx.AsyncClient(timeout=60) as http,
        ):
            await wait_tunnels(agent, ["a", "b"])
            key, secret = await create(http, a, name="team")
            for server, name in ((a, "a"), (b, "b")):
                for n in range(sent[name]):
                    assert (await ask(http, server, secret, f"{name}{n}")).status_code == 200
            total = sum(sent.values())

            def counted(snapshot: dict[str, Any]) -> bool:
                keys = snapshot["keys"]["keys"]
                return bool(keys) and keys[0]["usage"]["requests"] == total

            # Each instance's state (and dashboard) shows the requests of both.
            for server in (a, b):
                snapshot = await wait_state(server, counted)
                (row,) = snapshot["keys"]["keys"][0]["usage_by_model"]
                assert (row["model"], row["requests"]) == ("fixture-model", total)
                # The fixture backend reports 3 tokens in and 4 out per answer.
                assert (row["input_tokens"], row["output_tokens"]) == (3 * total, 4 * total)
            code, output = await keys_cli(b, "show", "team")
            assert code == 0, output
            assert f"usage: {total} requests" in " ".join(output.split())
        # Every instance stopped; a new one has the key and every request of its usage.
        async with (
            run_server(env=instance_env(redis_url, "c")) as c,
            httpx.AsyncClient(timeout=60) as http,
        ):
            usage = (await show(http, c, key["id"]))["usage"]
            assert (usage["requests"], usage["input_tokens"], usage["output_tokens"]) == (
                total,
                3 * total,
                4 * total,
            )


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it stops."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_without_redis_a_key_with_limits_gets_a_503_and_one_without_is_served(
    own_redis: RedisServer, backend: FixtureBackend
) -> None:
    with trio.fail_after(CAP):
        async with (
            run_server(env={"REDIS_URL": own_redis.url, "INSTANCE_ID": "a"}) as a,
            run_agent(a, backend.base_url),
            httpx.AsyncClient(timeout=60) as http,
        ):
            _, limited = await create(http, a, name="limited", limits={"tokens_per_day": 1000})
            _, free = await create(http, a, name="free")
            own_redis.stop()
            refused = await ask(http, a, limited, "limited")
            error = expect_error(refused, 503, "key_store_unavailable")
            assert error["message"] == (
                "the key 'limited' has limits, which are kept in the gateway's Redis, cannot be "
                "checked now (Redis does not answer); retry shortly"
            )
            assert refused.headers["retry-after"] == "1"
            served = await ask(http, a, free, "free")
            assert served.status_code == 200, served.text
            changed = await http.post(
                f"{a.url}/api/admin/keys", headers=a.headers(), json={"name": "new"}
            )
            expect_error(changed, 503, "store_unavailable")
            await a.proc.wait_for_line(r"keys with limits are refused \(503\)")
            assert contents(backend) == ["free"]
