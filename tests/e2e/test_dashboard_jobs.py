"""The ``/state`` dashboard's jobs panel in headless Chromium against a real server: a job and a
worker appear, and a cancel shows. (Like test_dashboard.py: Playwright's sync API in a worker
thread, every wait one of its expectations.)"""

from __future__ import annotations

import os

import httpx
import pytest
import trio
from playwright.sync_api import expect, sync_playwright

from tests.e2e.harness import run_server
from tests.e2e.jobs_client import as_client, claim, create
from tests.e2e.test_dashboard import CHROMIUM, EXPECT_MS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="the dashboard test needs a Chromium on PATH (Debian: apt-get install chromium)",
    ),
]


async def test_the_jobs_panel_follows_jobs_and_workers() -> None:
    assert CHROMIUM is not None
    async with run_server() as server, httpx.AsyncClient(timeout=30) as http:
        waiting = await create(http, server)
        await create(http, server, type="doc.convert")
        assert await claim(http, server, worker_id="gpu-1", types=["doc.convert"]) is not None

        def cancel_waiting() -> None:
            url = f"{server.url}/api/jobs/{waiting}/cancel"
            trio.from_thread.run(lambda: http.post(url, headers=as_client(server)))

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

                    jobs = page.locator("#jobs tbody")
                    row = jobs.locator("tr", has_text="asr.transcribe")
                    expect(row).to_contain_text("queued", timeout=EXPECT_MS)
                    claimed = jobs.locator("tr", has_text="doc.convert")
                    expect(claimed).to_contain_text("claimed")
                    expect(claimed).to_contain_text("gpu-1")
                    expect(page.locator("#jobs-workers tbody")).to_contain_text("gpu-1::")
                    expect(page.locator("#jobs-facts")).to_contain_text("claimed1")

                    cancel_waiting()
                    expect(row).to_contain_text("canceled", timeout=EXPECT_MS)
                    expect(page.locator("#jobs-facts")).to_contain_text("canceled1")
                finally:
                    browser.close()
            return errors

        errors = await trio.to_thread.run_sync(browse)
        assert errors == []
