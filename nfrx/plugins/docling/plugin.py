"""The Docling plugin (:mod:`nfrx.plugins.relay_plugin`): docling-serve's conversion API under
``/api/docling``; agents next to docling-serve."""

from __future__ import annotations

from nfrx.plugins.relay_plugin import RelayPlugin


class DoclingPlugin(RelayPlugin):
    name = "docling"
    api_root = "/api/docling/v1"
    backend_class = "DoclingBackend"
