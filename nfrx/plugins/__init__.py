"""The one list of plugins: each holds its server side and its agent side.

Only the composition reads this list -- ``nfrx serve``'s runner (:func:`server_plugins`), the
agent commands (:func:`plugin_class`) and the ``PLUGINS`` check of ``nfrx serve``'s settings
(:func:`check_names`); the core is handed plugin objects (:mod:`nfrx.server.plugin`) and never
imports a plugin. A plugin's module is imported when first asked for, so ``nfrx --help`` imports
none.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nfrx.config.checks import enabled_plugins

if TYPE_CHECKING:
    from nfrx.server.plugin import Plugin

SERVER_PLUGINS: tuple[str, ...] = ("llm", "mcp", "docling", "asr")
"""The plugins ``PLUGINS`` chooses from, in the order a server lists them: each has an agent
(``nfrx <name>``) and routes under ``/api/<name>``."""

SERVICE_PLUGINS: tuple[str, ...] = ("jobs", "transfer", "keys")
"""Plugins without agents, always on (like the original's, ``PLUGINS`` does not list them):
generic APIs of their own. (Jobs use transfer's channels: the gateway makes transfer first.)"""


_CLASSES: dict[str, str] = {
    "llm": "nfrx.plugins.llm.plugin:LlmPlugin",
    "mcp": "nfrx.plugins.mcp.plugin:McpPlugin",
    "docling": "nfrx.plugins.docling.plugin:DoclingPlugin",
    "asr": "nfrx.plugins.asr.plugin:AsrPlugin",
    "transfer": "nfrx.plugins.transfer.plugin:TransferPlugin",
    "jobs": "nfrx.plugins.jobs.plugin:JobsPlugin",
    "keys": "nfrx.plugins.keys.plugin:KeysPlugin",
}
"""Each plugin's class (``module:attribute``), imported when first asked for."""


def plugin_class(name: str) -> type[Plugin]:
    """The class of plugin ``name`` (one of :data:`SERVER_PLUGINS` or :data:`SERVICE_PLUGINS`);
    raises KeyError for any other name."""
    module, _, attribute = _CLASSES[name].partition(":")
    cls: type[Plugin] = getattr(importlib.import_module(module), attribute)
    return cls


def server_plugins(names: tuple[str, ...]) -> tuple[tuple[type[Plugin], ...], tuple[str, ...]]:
    """What a server with ``PLUGINS=names`` has: the classes of its plugins (the enabled ones,
    then the service plugins, in list order), and the names of the plugins it leaves out.
    Raises ValueError for a ``names`` that :func:`check_names` refuses."""
    enabled = enabled_plugins(names, SERVER_PLUGINS)
    classes = tuple(plugin_class(name) for name in (*enabled, *SERVICE_PLUGINS))
    return classes, tuple(name for name in SERVER_PLUGINS if name not in enabled)


def check_names(names: tuple[str, ...]) -> None:
    """The check of the ``PLUGINS`` setting: known names, ``all`` or ``none``; raises ValueError
    saying what is wrong (the config loader names the setting)."""
    enabled_plugins(names, SERVER_PLUGINS)
