"""Settings of every nfrx process: values, defaults and units in one place.

Each field carries its environment variable name, help text, checks and command-line spelling as
metadata; the loader, the command-line options (generated from these fields) and the generated
documentation all read them from here, so a new setting is one field. Its type says how it is
read: durations are ``Seconds`` (float seconds; ``90s``, ``5m`` in every source), lists are
``tuple[str, ...]``, sizes are ``int`` bytes.

By concept: how a setting is declared (:mod:`nfrx.config.setting`), the server's settings
(:mod:`nfrx.config.server`), the agents' (:mod:`nfrx.config.agents`). This module gathers them,
so that every config class is importable from one place.
"""

from __future__ import annotations

from nfrx.config.agents import (
    AgentConfig,
    AsrAgentConfig,
    DoclingAgentConfig,
    LlmAgentConfig,
    McpAgentConfig,
    default_client_id,
    default_client_name,
)
from nfrx.config.server import ServerConfig, default_instance_id
from nfrx.config.setting import SHARED, MiB, Section, env_name, setting, shared

__all__ = [
    "SHARED",
    "AgentConfig",
    "AsrAgentConfig",
    "DoclingAgentConfig",
    "LlmAgentConfig",
    "McpAgentConfig",
    "MiB",
    "Section",
    "ServerConfig",
    "default_client_id",
    "default_client_name",
    "default_instance_id",
    "env_name",
    "setting",
    "shared",
]
