"""The client keys' Prometheus series: labelled by key name, and never more than
MAX_KEY_SERIES names (later keys share ``(other)``)."""

from __future__ import annotations

from prometheus_client import generate_latest

from nfrx.config.model import ServerConfig
from nfrx.plugins.keys.metrics import MAX_KEY_SERIES, KeyCollector
from nfrx.plugins.keys.service import KeysService
from nfrx.plugins.keys.store import MemoryKeyStore
from nfrx.server import accounting
from nfrx.server.accounting import RequestRecord
from nfrx.server.gateway import Gateway
from nfrx.server.usage import Usage


async def test_key_series_are_bounded_by_name() -> None:
    clock = [1_780_000_000.0]
    gateway = Gateway(ServerConfig())
    service = KeysService(gateway, MemoryKeyStore(), clock=lambda: clock[0])
    gateway.metrics.registry.register(KeyCollector(service))
    secrets = []
    for index in range(MAX_KEY_SERIES + 3):
        clock[0] += 1  # creation order decides which keys get a name of their own
        _, secret = await service.create({"name": f"key-{index:03d}"})
        secrets.append(secret)
    for secret in (secrets[0], *secrets[-3:]):
        record = RequestRecord("llm")
        with accounting.recording(record):
            service.admit(secret, "llm")
            record.exchange_ended("m", Usage(3, 4), failed=False, cancelled=False)
        record.status = 200
        service.request_ended(record)
    await service.revoke("key-001")
    text = generate_latest(gateway.metrics.registry).decode()
    assert 'nfrx_key_requests_total{key="key-000",model="m",outcome="success"} 1.0' in text
    assert 'nfrx_key_requests_total{key="(other)",model="m",outcome="success"} 3.0' in text
    assert 'nfrx_key_tokens_total{key="(other)",kind="output",model="m"} 12.0' in text
    assert f'key="key-{MAX_KEY_SERIES:03d}"' not in text
    assert 'nfrx_keys{status="revoked"} 1.0' in text
    assert f'nfrx_keys{{status="active"}} {MAX_KEY_SERIES + 2}.0' in text
    names = {line.split('key="')[1].split('"')[0] for line in text.splitlines() if 'key="' in line}
    assert len(names) <= MAX_KEY_SERIES + 1
