"""The official MCP conformance suite, run through the whole relay chain.

    conformance (Node) -> nfrx serve /api/mcp/id/fixture <- tunnel -> nfrx mcp -> fixture provider

for the fixture provider over Streamable HTTP and over stdio, with the pinned suite versions:
0.1.16 (every active server scenario) and 0.2.0-alpha.12 with both frozen requirement sets
(``--requirements 2025-11-25`` and ``--requirements 2026-07-28``). The suite exits non-zero when a
scored check fails; unscored scenarios (the ``tasks`` extension, which the fixture does not
implement) are reported but do not count. Every scored check passes DIRECT against the fixture,
so no ``--expected-failures`` baseline is needed (tests/e2e/mcp-baselines/ would hold one, each
line documented, only for a check that also fails direct).

The suite sends no credentials, so the server runs without an API key here (auth has its own tests
in test_mcp_sdk.py). It runs with ``MCP_ALLOWED_HOSTS=127.0.0.1,localhost``: the
``dns-rebinding-protection`` scenario sends ``Host: evil.example.com`` to the localhost URL and
expects a 4xx, which only a Host allow-list gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio

from tests.fixtures.mcp_stack import Provider, mcp_tools, run_relay

SUITE_TIMEOUT = 300.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")

RUNS = {
    "0.1.16": ("conformance", []),
    "alpha12-2025-11-25": ("conformance_alpha", ["--requirements", "2025-11-25"]),
    "alpha12-2026-07-28": ("conformance_alpha", ["--requirements", "2026-07-28"]),
}


def _summary(output: str, results: Path) -> str:
    """The suite's summary, then every failing check with its message (from ``-o`` results)."""
    lines = ANSI.sub("", output).splitlines()
    start = next((i for i, line in enumerate(lines) if "=== SUMMARY" in line), 0)
    failing = []
    for checks in sorted(results.glob("*/checks.json")):
        for check in json.loads(checks.read_text()):
            if check.get("status") == "FAILURE":
                failing.append(
                    f"FAILURE {checks.parent.name} {check.get('id')}: {check.get('description')}"
                    f" -- {check.get('errorMessage', '')}"
                )
    return "\n".join([*lines[start:], *failing])


@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("provider", ["http", "stdio"])
async def test_conformance_through_the_relay(provider: Provider, run: str, tmp_path: Path) -> None:
    tools = mcp_tools()
    script_name, extra = RUNS[run]
    script = getattr(tools, script_name)
    server_env = {"MCP_ALLOWED_HOSTS": "127.0.0.1,localhost"}
    async with run_relay(provider, tmp_path, api_key="", server_env=server_env) as relay:
        results = tmp_path / "results"
        argv = tools.command(script, "server", "--url", relay.url, "-o", str(results), *extra)
        with trio.fail_after(SUITE_TIMEOUT):
            result = await trio.run_process(
                argv,
                cwd=tmp_path,
                env=tools.env(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, (
        f"conformance {run} against the {provider} provider failed "
        f"(exit {result.returncode}):\n{_summary(output, results)}\n--- agent ---\n"
        f"{relay.agent.output()[-4000:]}\n--- server ---\n{relay.server.proc.output()[-4000:]}"
    )
    # The exit code is the verdict; this only guards against a suite that ran nothing.
    totals = re.search(r"Total: (\d+) passed", output)
    assert totals is not None, _summary(output, results)
    assert int(totals.group(1)) > 0, _summary(output, results)
