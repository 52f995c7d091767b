"""The jobs and transfer settings of ``nfrx serve``: environment and flags reach the config, and
``nfrx status`` prints the jobs and transfer sections as one line each."""

from __future__ import annotations

from typing import Any

import pytest

import nfrx.cli.serve
from nfrx.cli.status import render_server
from nfrx.config.model import ServerConfig
from tests.cli.test_cli import invoke


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Configs ``nfrx serve`` hands to the library (nothing is started)."""
    configs: list[Any] = []
    monkeypatch.setattr(nfrx.cli.serve, "run", configs.append)
    return configs


def test_jobs_settings_from_the_environment(captured: list[Any]) -> None:
    env = {
        "TRANSFER_TTL": "2m",
        "JOBS_CLIENT_TTL": "0",
        "JOBS_SSE_CLOSE_DELAY": "-1",
        "JOBS_LEASE_SECONDS": "45",
        "JOBS_REQUEUE_EXPIRED": "false",
        "JOBS_LEASE_REQUIRED": "no",
        "JOBS_RETENTION": "1h",
        "JOBS_MAX": "50",
    }
    result = invoke(["serve"], env)
    assert result.exit_code == 0, result.output
    assert captured == [
        ServerConfig(
            transfer_ttl=120.0,
            jobs_client_ttl=0.0,
            jobs_sse_close_delay=-1.0,
            jobs_lease_seconds=45.0,
            jobs_requeue_expired=False,
            jobs_lease_required=False,
            jobs_retention=3600.0,
            jobs_max=50,
        )
    ]


def test_jobs_flags_override_the_environment(captured: list[Any]) -> None:
    args = [
        "serve",
        "--transfer-ttl",
        "5",
        "--jobs-lease-seconds",
        "9",
        "--no-jobs-requeue-expired",
        "--jobs-lease-required",
        "--jobs-max",
        "3",
    ]
    result = invoke(args, {"JOBS_LEASE_REQUIRED": "false", "JOBS_MAX": "50"})
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert (config.transfer_ttl, config.jobs_lease_seconds, config.jobs_max) == (5.0, 9.0, 3)
    assert (config.jobs_requeue_expired, config.jobs_lease_required) == (False, True)


def test_bad_jobs_values_exit_2_naming_the_variable(captured: list[Any]) -> None:
    for env, name in [
        ({"JOBS_MAX": "0"}, "JOBS_MAX"),
        ({"TRANSFER_TTL": "0"}, "TRANSFER_TTL"),
        ({"JOBS_LEASE_SECONDS": "-5"}, "JOBS_LEASE_SECONDS"),
        ({"JOBS_CLIENT_TTL": "-1"}, "JOBS_CLIENT_TTL"),
    ]:
        result = invoke(["serve"], env)
        assert result.exit_code == 2, (env, result.output)
        assert name in result.output
    assert captured == []


def test_status_prints_jobs_and_transfers_as_one_line_each() -> None:
    state = {
        "server": {"version": "1", "build_sha": "abc", "uptime_seconds": 5},
        "plugins": {
            "jobs": {
                "summary": {
                    "queued_jobs": 2,
                    "claimed_jobs": 1,
                    "running_jobs": 3,
                    "awaiting_transfers": 0,
                    "completed_jobs": 7,
                    "failed_jobs": 1,
                    "canceled_jobs": 0,
                    "active_workers": 2,
                },
                "workers": [],
                "jobs": [],
            },
            "transfer": {"waiting": 1, "streaming": 2, "completed_total": 9, "failed_total": 0},
        },
    }
    lines = render_server(state).splitlines()
    assert lines[1:] == [
        "",
        "jobs: 2 queued, 1 claimed, 3 running, 0 awaiting transfers; 7 completed, 1 failed, "
        "0 canceled; 2 active workers",
        "",
        "transfer: 1 waiting, 2 streaming; 9 completed, 0 failed",
    ]
