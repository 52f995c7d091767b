"""The ASR plugin (:mod:`nfrx.plugins.relay_plugin`): OpenAI-compatible speech to text under
``/api/asr``; agents next to transcription services (faster-whisper-server, speaches)."""

from __future__ import annotations

from nfrx.plugins.relay_plugin import RelayPlugin


class AsrPlugin(RelayPlugin):
    name = "asr"
    serves_models = True
    api_root = "/api/asr/v1"
    backend_class = "AsrBackend"
