"""``nfrx status`` prints the MCP relays of a server's state (pure rendering)."""

from __future__ import annotations

from nfrx.cli.status import render_server

STATE = {
    "server": {"version": "0.1.0", "build_sha": "abc", "uptime_seconds": 5, "plugins": ["mcp"]},
    "plugins": {
        "mcp": {
            "queue": {"length": 0, "capacity": 100},
            "summary": {"connected": 1},
            "agents": [{"id": "prefs", "name": "box", "status": "working", "inflight": 1}],
            "models": [],
            "relays": [
                {
                    "id": "prefs",
                    "name": "box",
                    "status": "working",
                    "transport": "stdio",
                    "auth": "token",
                    "inflight": 1,
                    "streams": 2,
                    "sessions_count": 1,
                    "sessions": [
                        {
                            "id_prefix": "0123abcd",
                            "created_at": "2026-01-02T03:04:05.000Z",
                            "last_used": "2026-01-02T03:04:06.000Z",
                            "inflight": 1,
                            "streams": 1,
                        }
                    ],
                }
            ],
        }
    },
}


def test_relays_and_sessions_are_listed() -> None:
    lines = render_server(STATE).splitlines()
    header = lines.index(next(line for line in lines if line.startswith("RELAY  ")))
    assert lines[header].split() == [
        "RELAY",
        "STATUS",
        "TRANSPORT",
        "AUTH",
        "INFLIGHT",
        "STREAMS",
        "SESSIONS",
    ]
    assert lines[header + 1].split() == ["prefs", "working", "stdio", "token", "1", "2", "1"]
    assert "mcp: sessions (1)" in lines
    row = next(line for line in lines if "0123abcd" in line)
    assert row.split()[:3] == ["prefs", "0123abcd…", "1"]
    assert "mcp: models" not in "\n".join(lines)  # relays are not routed by model


def test_no_relays() -> None:
    state = {
        "server": {},
        "plugins": {"mcp": {"agents": [], "models": [], "relays": []}},
    }
    assert "  (no relays connected)" in render_server(state).splitlines()
