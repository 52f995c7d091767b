"""The dashboard's charts, its keys page and its "Connect an agent" page, in headless Chromium
against real processes (like test_dashboard.py: Playwright's sync API in a worker thread, every
wait one of its expectations).

Screenshots of every view, light and dark, are saved under ``test-artifacts/dashboard/`` in the
checkout (gitignored; ``NFRX_TEST_ARTIFACTS`` moves them).
"""

from __future__ import annotations

import os
import re
import shlex
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.harness import nfrx, run_agent, run_server
from tests.e2e.test_dashboard import CHROMIUM, EXPECT_MS
from tests.fixtures.backend import run_backend

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.sync_api import Browser

    from tests.e2e.harness import Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="the dashboard test needs a Chromium on PATH (Debian: apt-get install chromium)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NFRX_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
CHAT = {"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]}


def browse(check: Callable[[Browser], None]) -> None:
    """Run ``check`` with a headless Chromium (in a worker thread: Playwright's sync API)."""
    assert CHROMIUM is not None
    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            check(browser)
        finally:
            browser.close()


def open_page(browser: Browser, errors: list[str], *, dark: bool = False) -> Page:
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000},
        color_scheme="dark" if dark else "light",
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def log_in(page: Page, server: Server) -> None:
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("#conn")).to_have_text("live", timeout=EXPECT_MS)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_the_charts_draw_the_traffic_and_follow_it() -> None:
    async with (
        run_server() as server,
        run_backend() as backend,
        run_agent(server, backend.base_url, name="gpu-box", args=["--max-concurrency", "4"]),
        httpx.AsyncClient(timeout=30) as http,
    ):

        async def traffic(count: int, events: int = 8) -> None:
            url = f"{server.api_base}/chat/completions"
            body = {**CHAT, "stream": True, "fixture": {"events": events}}
            for _ in range(count):
                response = await http.post(url, json=body, headers=server.headers())
                assert response.status_code == 200

        def check(browser: Browser) -> None:
            errors: list[str] = []
            page = open_page(browser, errors)
            page.goto(f"{server.url}/state")
            log_in(page, server)
            requests = page.locator("#chart-requests")
            expect(requests).to_have_attribute("data-count", "0", timeout=EXPECT_MS)
            expect(page.locator("#load [data-agent]")).to_contain_text("gpu-box")
            expect(page.locator("#load [data-agent]")).to_contain_text("0 / 4")

            trio.from_thread.run(traffic, 3)
            expect(requests).to_have_attribute("data-count", "3", timeout=EXPECT_MS)
            for chart in ("chart-requests", "chart-tokens", "chart-latency"):
                expect(page.locator(f"#{chart}")).not_to_have_attribute("data-points", "0")
                expect(page.locator(f"#{chart} svg .mark").first).to_be_visible()
            expect(page.locator("#chart-latency .legend")).to_contain_text("p95")
            expect(page.locator("#t-errors")).to_have_text("0")
            assert page.locator("#t-rps").inner_text() not in ("\N{EN DASH}", "0")

            trio.from_thread.run(traffic, 2)
            expect(requests).to_have_attribute("data-count", "5", timeout=EXPECT_MS)
            page.locator("#chart-requests svg rect").hover()
            expect(page.locator("#chart-requests .tip")).to_contain_text("requests")
            shot(page, "overview-light")
            page.get_by_role("button", name="Dark theme").click()
            expect(page.locator("html")).to_have_attribute("data-theme", "dark")
            shot(page, "overview-dark")
            page.context.close()
            assert errors == []

        await trio.to_thread.run_sync(browse, check)


async def test_the_keys_page_creates_shows_and_revokes_a_key() -> None:
    async with (
        run_server() as server,
        run_backend() as backend,
        run_agent(server, backend.base_url),
        httpx.AsyncClient(timeout=30) as http,
    ):
        chat = f"{server.api_base}/chat/completions"

        def use(secret: str) -> int:
            async def post() -> int:
                headers = {"Authorization": f"Bearer {secret}"}
                return (await http.post(chat, json=CHAT, headers=headers)).status_code

            return trio.from_thread.run(post)

        def check(browser: Browser) -> None:
            errors: list[str] = []
            page = open_page(browser, errors, dark=True)
            page.goto(f"{server.url}/state/keys")
            expect(page.locator("#view-keys")).to_be_visible()
            log_in(page, server)
            expect(page.locator("#keys tbody")).to_contain_text("no client keys yet")

            form = page.locator("#key-form")
            form.get_by_label("Name").fill("web-team")
            form.get_by_label("Models").fill("fixture*")
            form.get_by_label("Tokens per day").fill("5000")
            form.get_by_label("Docling").uncheck()
            form.get_by_role("button", name="Create key").click()
            secret_box = page.locator("#secret-value")
            expect(secret_box).to_have_text(re.compile(r"^nfrx-[A-Za-z0-9_-]{43}$"))
            secret = secret_box.inner_text()
            shot(page, "keys-created-dark")
            page.get_by_role("button", name="Copy").click()
            expect(page.get_by_role("button", name="Copied")).to_be_visible()
            assert page.evaluate("navigator.clipboard.readText()") == secret
            page.get_by_role("button", name="Done").click()
            expect(page.locator("#new-secret")).to_be_hidden()
            assert secret not in page.content()  # shown once: gone from the page

            row = page.locator('#keys tbody tr[data-key="web-team"]')
            expect(row.locator(".status")).to_have_text("active", timeout=EXPECT_MS)
            expect(row).to_contain_text("llm, asr, jobs, mcp")
            expect(row).to_contain_text("5,000 tok/day")
            assert use(secret) == 200
            expect(row.locator("td").nth(6)).to_have_text("1", timeout=EXPECT_MS)
            row.get_by_role("button", name="web-team").click()
            expect(page.locator("#keys tr.details")).to_contain_text("fixture-model")
            page.get_by_role("button", name="Light theme").click()
            shot(page, "keys-light")

            row.get_by_role("button", name="Revoke").click()
            dialog = page.locator("#confirm")
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text("Revoke web-team?")
            dialog.get_by_role("button", name="Cancel").click()
            expect(dialog).to_be_hidden()
            assert use(secret) == 200  # cancelled: still works
            row.get_by_role("button", name="Revoke").click()
            dialog.get_by_role("button", name="Revoke").click()
            expect(row.locator(".status")).to_have_text("revoked", timeout=EXPECT_MS)
            assert use(secret) == 401
            expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
            page.context.close()
            assert errors == []

        await trio.to_thread.run_sync(browse, check)


async def test_the_connect_page_gives_commands_that_connect_an_agent() -> None:
    async with run_server() as server, run_backend() as backend, AsyncExitStack() as agents:
        started: list[str] = []

        def run_command(command: str) -> None:
            """Run the page's command as a shell would: its variables, then nfrx's arguments."""
            words = shlex.split(command.replace("\\\n", " "))
            env = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
            args = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
            assert args[:2] == ["nfrx", "llm"]
            started.append(command)

            async def start() -> None:
                await agents.enter_async_context(nfrx("agent from the page", args[1:], env))

            trio.from_thread.run(start)

        def check(browser: Browser) -> None:
            errors: list[str] = []
            page = open_page(browser, errors)
            page.goto(f"{server.url}/state/connect")
            run = page.locator("#cmd-run")
            ws_url = server.url.replace("http://", "ws://") + "/api/llm/connect"
            expect(run).to_contain_text(f"SERVER_URL={ws_url}")
            expect(run).to_contain_text("CLIENT_KEY='<CLIENT_KEY>'")
            expect(page.locator("#cmd-install")).to_have_text("pipx install nfrx")
            assert "CLIENT_KEY=ck" not in page.content()  # not before the admin asks

            page.get_by_role("button", name="Reveal client key").click()
            expect(page.locator("#login-error")).to_have_text("the API key reveals the client key")
            log_in(page, server)
            page.get_by_role("button", name="Reveal client key").click()
            expect(page.locator("#client-key")).to_have_text("ck")
            page.get_by_label("Agent name").fill("from-page")
            page.get_by_label("Backend URL").fill(backend.base_url)
            expect(run).to_contain_text("CLIENT_KEY=ck")
            expect(run).to_contain_text("nfrx llm -r")
            systemd = page.locator("#cmd-systemd")
            expect(systemd).to_contain_text("sudo systemctl enable --now nfrx-llm@from-page")
            expect(systemd).to_contain_text("CLIENT_NAME=from-page")
            status = page.locator("#connect-status")
            expect(status).to_have_text("waiting for from-page (llm) to connect…")
            shot(page, "connect-light")

            run_command(run.inner_text())
            expect(status).to_contain_text("✓ from-page is connected", timeout=EXPECT_MS)
            expect(status).to_contain_text("fixture-model")

            page.get_by_role("tab", name="MCP").click()
            expect(run).to_contain_text(server.url.replace("http://", "ws://") + "/api/mcp/connect")
            expect(run).to_contain_text("CLIENT_ID=tools")
            expect(run).to_contain_text("MCP_HTTP_URL=http://127.0.0.1:7777/mcp")
            page.get_by_label("MCP provider").fill("/usr/local/bin/files-server --root /srv")
            expect(run).to_contain_text("MCP_STDIO_COMMAND=/usr/local/bin/files-server")
            expect(run).to_contain_text("nfrx mcp -r -- --root /srv")
            expect(systemd).to_contain_text("MCP_STDIO_ARGS=--root,/srv")
            page.get_by_role("button", name="Dark theme").click()
            shot(page, "connect-dark")
            page.context.close()
            assert errors == []

        await trio.to_thread.run_sync(browse, check)
        assert len(started) == 1
