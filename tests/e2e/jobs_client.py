"""Small httpx helpers for the jobs API end-to-end tests (a client and a worker of one server)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from tests.e2e.harness import Server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def as_client(server: Server) -> dict[str, str]:
    return bearer(server.api_key)


def as_worker(server: Server, claim: dict[str, Any] | None = None) -> dict[str, str]:
    """The worker's headers, with the lease of ``claim`` when given."""
    headers = bearer(server.client_key)
    if claim is not None:
        headers["X-Nfrx-Lease"] = claim["lease_token"]
    return headers


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is the original's flat error ``code`` (with a message); its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str)
    return body


async def create(http: httpx.AsyncClient, server: Server, **body: Any) -> str:
    response = await http.post(
        f"{server.url}/api/jobs", json={"type": "asr.transcribe", **body}, headers=as_client(server)
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    job_id: str = response.json()["job_id"]
    return job_id


async def claim(http: httpx.AsyncClient, server: Server, **body: Any) -> dict[str, Any] | None:
    """The claim object, or None for 204."""
    response = await http.post(f"{server.url}/api/jobs/claim", json=body, headers=as_worker(server))
    if response.status_code == 204:
        assert response.content == b""
        return None
    assert response.status_code == 200, response.text
    claimed: dict[str, Any] = response.json()
    return claimed


async def get(http: httpx.AsyncClient, server: Server, job_id: str) -> dict[str, Any]:
    response = await http.get(f"{server.url}/api/jobs/{job_id}", headers=as_client(server))
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def post(
    http: httpx.AsyncClient,
    server: Server,
    job_id: str,
    action: str,
    claimed: dict[str, Any] | None,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    """A worker's post to ``/api/jobs/{job_id}/{action}`` holding ``claimed``'s lease."""
    return await http.post(
        f"{server.url}/api/jobs/{job_id}/{action}",
        json=body or {},
        headers=as_worker(server, claimed),
    )
