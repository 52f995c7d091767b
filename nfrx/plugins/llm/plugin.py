"""The LLM plugin (:mod:`nfrx.plugins.relay_plugin`): OpenAI- and Anthropic-compatible routes
under ``/api/llm``; agents next to OpenAI-compatible backends (Ollama, llama.cpp, vLLM)."""

from __future__ import annotations

from nfrx.plugins.relay_plugin import RelayPlugin


class LlmPlugin(RelayPlugin):
    name = "llm"
    serves_models = True
    api_root = "/api/llm/v1"
    backend_class = "LlmBackend"
