"""The ``/state`` dashboard in headless Chromium against a real server and agent.

Playwright's API runs on asyncio, so the browser side is its sync API in a worker thread; it calls
back into Trio (``trio.from_thread``) to stop the agent. Every wait is one of Playwright's
expectations, which retry until their timeout.
"""

from __future__ import annotations

import os
import shutil
from contextlib import AsyncExitStack

import pytest
import trio
from playwright.sync_api import expect, sync_playwright

from tests.e2e.harness import run_agent, run_server
from tests.fixtures.backend import run_backend

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
