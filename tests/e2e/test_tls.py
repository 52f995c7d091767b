"""In-process TLS, end to end: ``nfrx serve`` with TLS_CERT/TLS_KEY serves https and wss; an agent
verifies the server against CA_FILE; a CA the agent does not trust is a one-line certificate error.

The CA and the server certificate (for 127.0.0.1) are made in the test with trustme.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.e2e.harness import Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend

pytestmark = pytest.mark.e2e

CHAT = {"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]}


class Pki:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1")
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(self.key_file))
        for blob in cert.cert_chain_pems:
            blob.write_to_path(str(self.cert_file), append=True)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and its causes / contexts."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[Server]:
    env = {"TLS_CERT": str(pki.cert_file), "TLS_KEY": str(pki.key_file)}
    async with run_server(env=env) as server:
        yield server


async def test_https_server_and_wss_agent(
    tls_server: Server, pki: Pki, backend: FixtureBackend
) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    assert tls_server.connect_url.startswith("wss://127.0.0.1:")
    await tls_server.proc.wait_for_line(r"listening on https://127\.0\.0\.1:\d+")
    async with run_agent(tls_server, backend.base_url, env={"CA_FILE": str(pki.ca_file)}):
        async with httpx.AsyncClient(verify=pki.client_context(), timeout=30) as http:
            response = await http.post(
                f"{tls_server.api_base}/chat/completions", headers=tls_server.headers(), json=CHAT
            )
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"]
        # Verification is real: a client with only the system CAs does not trust this server.
        async with httpx.AsyncClient(timeout=30) as plain:
            with pytest.raises(httpx.ConnectError) as caught:
                await plain.get(f"{tls_server.url}/healthz")
        assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain(caught.value))


async def test_agent_without_the_ca_fails_with_one_line(
    tls_server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(tls_server, backend.base_url, wait_connected=False) as agent:
        code = await agent.wait_exit()
        await agent.wait_for_line(r"^nfrx llm: ")
    output = agent.output()
    assert code != 0, output
    assert "Traceback" not in output, output
    reasons = [line for line in agent.lines if line.startswith("nfrx llm: ")]
    assert len(reasons) == 1, output
    assert "certificate verify failed" in reasons[0], output
    assert tls_server.connect_url in reasons[0]


async def test_agent_with_another_ca_fails(
    tls_server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    other = trustme.CA()
    other_file = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(other_file))
    env = {"CA_FILE": str(other_file)}
    async with run_agent(tls_server, backend.base_url, env=env, wait_connected=False) as agent:
        await agent.wait_exit()
        match = await agent.wait_for_line(r"^nfrx llm: .*")
    assert "certificate verify failed" in match.group(0), agent.output()
