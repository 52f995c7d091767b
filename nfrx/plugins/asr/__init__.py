"""The ASR plugin: OpenAI-compatible speech-to-text (transcriptions and translations)."""
