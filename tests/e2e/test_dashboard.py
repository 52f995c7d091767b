"""The ``/state`` dashboard in headless Chromium against a real server and agent.

Playwright's API runs on asyncio, so the browser side is its sync API in a worker thread; it calls
back into Trio (``trio.from_thread``) to stop the agent. Every wait is one of Playwright's
expectations, which retry until their timeout.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
import trio
from playwright.sync_api import expect, sync_playwright

from tests.e2e.harness import Server, run_agent, run_plugin_agent, run_server
from tests.fixtures.backend import run_backend
from tests.fixtures.docling import run_docling
from tests.fixtures.mcp_stack import run_http_provider
from tests.fixtures.transcription import run_transcription

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="the dashboard test needs a Chromium on PATH (Debian: apt-get install chromium)",
)
EXPECT_MS = 20_000


async def test_the_dashboard_asks_for_the_key_and_follows_agents() -> None:
    assert CHROMIUM is not None
    async with (
        run_server() as server,
        run_backend() as backend,
        AsyncExitStack() as agent_scope,
    ):
        await agent_scope.enter_async_context(
            run_agent(server, backend.base_url, name="dash-agent")
        )

        def stop_agent() -> None:
            trio.from_thread.run(agent_scope.aclose)

        async def give_up_on_a_request() -> None:
            body = {"model": "fixture-model", "messages": [], "fixture": {"hang": True}}
            seen = len(backend.requests)
            async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:

                async def call() -> None:
                    url = f"{server.api_base}/chat/completions"
                    await http.post(url, json=body, headers=server.headers())

                nursery.start_soon(call)
                await backend.wait_for_request(seen + 1)
                nursery.cancel_scope.cancel()

        def browse() -> list[str]:
            errors: list[str] = []
            with sync_playwright() as p:
                args = ["--no-sandbox"] if os.geteuid() == 0 else []
                browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
                try:
                    page = browser.new_page()
                    page.on("pageerror", lambda error: errors.append(str(error)))
                    page.goto(f"{server.url}/state")

                    key = page.get_by_label("API key")
                    expect(key).to_be_visible(timeout=EXPECT_MS)
                    key.fill("wrong")
                    page.get_by_role("button", name="Connect").click()
                    expect(page.locator("#login-error")).to_have_text(
                        "that key was refused", timeout=EXPECT_MS
                    )
                    key.fill(server.api_key)
                    page.get_by_role("button", name="Connect").click()

                    row = page.locator("#agents tbody tr", has_text="dash-agent")
                    expect(row).to_be_visible(timeout=EXPECT_MS)
                    expect(row.locator(".status")).to_have_text("idle", timeout=EXPECT_MS)
                    expect(row).to_contain_text("fixture-model")
                    expect(key).to_be_hidden()
                    expect(page.locator("#models tbody")).to_contain_text("dash-agent")

                    headers = page.locator("#agents th").all_text_contents()
                    cancelled = row.locator("td").nth(headers.index("Cancelled"))
                    failures = row.locator("td").nth(headers.index("Failures"))
                    expect(cancelled).to_have_text("0")
                    trio.from_thread.run(give_up_on_a_request)
                    expect(cancelled).to_have_text("1", timeout=EXPECT_MS)
                    expect(failures).to_have_text("0")

                    name = page.locator("#agents th", has_text="Name")
                    expect(name).to_have_attribute("aria-sort", "ascending")
                    name.click()
                    expect(name).to_have_attribute("aria-sort", "descending")

                    stop_agent()
                    expect(row).to_have_count(0, timeout=EXPECT_MS)
                    expect(page.locator("#agents tbody")).to_contain_text("no agents connected")
                finally:
                    browser.close()
            return errors

        errors = await trio.to_thread.run_sync(browse)
        assert errors == []


@asynccontextmanager
async def plugin_agent(server: Server, kind: str) -> AsyncIterator[None]:
    """One connected ``nfrx <kind>`` agent named ``<kind>-agent`` (id ``<kind>-1``), in front
    of its fixture backend."""
    env = {"CLIENT_ID": f"{kind}-1"}
    async with AsyncExitStack() as stack:
        if kind == "llm":
            backend = await stack.enter_async_context(run_backend())
            await stack.enter_async_context(
                run_agent(server, backend.base_url, name="llm-agent", env=env)
            )
            yield
            return
        if kind == "docling":
            env["DOC_BASE_URL"] = (await stack.enter_async_context(run_docling())).base_url
        elif kind == "asr":
            env["ASR_BASE_URL"] = (await stack.enter_async_context(run_transcription())).base_url
        else:
            env["MCP_HTTP_URL"] = await stack.enter_async_context(run_http_provider())
        await stack.enter_async_context(run_plugin_agent(server, kind, env, name=f"{kind}-agent"))
        yield


@pytest.mark.parametrize("kind", ["llm", "docling", "asr", "mcp"])
async def test_the_dashboard_shows_every_plugins_agents(kind: str) -> None:
    assert CHROMIUM is not None
    async with run_server() as server, plugin_agent(server, kind):

        def browse() -> list[str]:
            errors: list[str] = []
            with sync_playwright() as p:
                args = ["--no-sandbox"] if os.geteuid() == 0 else []
                browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
                try:
                    page = browser.new_page()
                    page.on("pageerror", lambda error: errors.append(str(error)))
                    page.goto(f"{server.url}/state")
                    page.get_by_label("API key").fill(server.api_key)
                    page.get_by_role("button", name="Connect").click()

                    row = page.locator("#agents tbody tr", has_text=f"{kind}-agent")
                    expect(row).to_be_visible(timeout=EXPECT_MS)
                    expect(row.locator("td").nth(0)).to_have_text(kind)
                    expect(row.locator("td").nth(2)).to_have_text(f"{kind}-1")
                    expect(row.locator(".status")).to_have_text("idle", timeout=EXPECT_MS)
                    expect(page.locator("#summary")).to_contain_text("1 connected: ")
                    if kind == "mcp":
                        relay = page.locator("#mcp tbody tr", has_text=f"{kind}-1")
                        expect(relay).to_be_visible()
                    docs = page.get_by_role("link", name="API docs")
                    expect(docs).to_have_attribute("href", "/api/client/")
                finally:
                    browser.close()
            return errors

        errors = await trio.to_thread.run_sync(browse)
        assert errors == []
