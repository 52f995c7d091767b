"""The hand-written parts of the manual pages; everything else comes from the command tree and
the config model's metadata (see :mod:`nfrx._gen.manpage`).

Text here is plain: the renderer escapes it for roff. A paragraph is one string; an example is
``(what it does, command line)``. A command with no entry here still gets a page, with its help
as the description and the common sections.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Page:
    summary: str
    """The NAME line after the dash: lower case, no final period."""
    description: tuple[str, ...] = ()
    """Paragraphs after the command's help text."""
    examples: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    """Files beyond the config file, which is listed from the config model."""
    long_running: bool = False
    """Runs until signalled: the page gets the SIGNALS section of a server or an agent."""
    exit_status: tuple[tuple[str, str], ...] = ()
    """Overrides of the common EXIT STATUS lines, by code."""


SIGNALS = (
    (
        "SIGTERM, SIGINT",
        "The first one starts a graceful drain: no new work is taken, and "
        "in-flight requests may finish until DRAIN_TIMEOUT has passed; then the process exits 0. "
        "A second one stops at once.",
    ),
)

EXIT_STATUS = (
    ("0", "Success, or a graceful stop after a signal."),
    (
        "1",
        "Runtime failure: the address cannot be bound, the server is unreachable, a request "
        "failed.",
    ),
    (
        "2",
        "Configuration error or refusal: a bad option, environment variable or config file, "
        "a key the server rejected.",
    ),
)

TOKEN_FILE = (
    "worker.token",
    "The token that guards the agent's control API (POST /control/...) when STATUS_ADDR is "
    "set: created on first use with mode 0600, in the directory of CONFIG_FILE when one is "
    "given, else in $XDG_CONFIG_HOME/nfrx (~/.config/nfrx). Send it as the X-Auth-Token header.",
)

PROGRAM = Page(
    summary="put private AI services behind one public gateway",
    description=(
        "nfrx has two sides. The server (nfrx serve) runs on a host that clients can reach and "
        "answers standard APIs (OpenAI-compatible under /api/llm/v1). An agent (nfrx llm) runs "
        "next to each private service, an Ollama or llama.cpp server for instance, and dials "
        "out to the server over a WebSocket, so the private side never opens a port. The "
        "server routes each request through a tunnel to an agent that serves the requested "
        "model and streams the answer back unchanged.",
        "Every setting is an environment variable, overridden by the matching option of the "
        "subcommand; a YAML config file may give defaults for both. Each subcommand's page "
        "lists its settings.",
    ),
    examples=(
        (
            "Run a server that requires keys from clients (ak) and agents (ck):",
            "API_KEY=ak CLIENT_KEY=ck nfrx serve --host 0.0.0.0 --port 8080",
        ),
        (
            "Next to an Ollama server, connect an agent to it:",
            "nfrx llm --server-url ws://gateway.example:8080/api/llm/connect \\\n"
            "  --client-key ck --completion-base-url http://127.0.0.1:11434/v1 --reconnect",
        ),
        (
            "See what the server is doing:",
            "nfrx status --server http://gateway.example:8080 --api-key ak",
        ),
    ),
    files=(TOKEN_FILE,),
    long_running=True,
)

PAGES: dict[str, Page] = {
    "serve": Page(
        summary="run the public nfrx server",
        description=(
            "Clients call the OpenAI-compatible API under /api/llm/v1 with API_KEY as a bearer "
            "key; agents open their tunnels at /api/llm/connect with CLIENT_KEY. GET /healthz "
            "answers without a key (503 while draining). A request for a model whose agents "
            "are all busy waits in a queue (LLM_QUEUE_SIZE, LLM_QUEUE_TIMEOUT).",
            "The default address, 127.0.0.1, only accepts local connections: put a TLS reverse "
            "proxy in front, or set TLS_CERT and TLS_KEY and listen on 0.0.0.0.",
        ),
        examples=(
            (
                "Listen on every interface, with keys for clients and agents:",
                "API_KEY=ak CLIENT_KEY=ck nfrx serve --host 0.0.0.0",
            ),
            (
                "Serve https and wss directly:",
                "nfrx serve --host 0.0.0.0 --port 8443 --tls-cert cert.pem --tls-key key.pem",
            ),
            (
                "Show the settings a config file and the environment produce, then exit:",
                "nfrx serve --config /etc/nfrx/server.yaml --print-config",
            ),
        ),
        long_running=True,
    ),
    "llm": Page(
        summary="run an nfrx agent for an OpenAI-compatible LLM backend",
        description=(
            "The agent reads the backend's models from COMPLETION_BASE_URL/models, announces "
            "them to the server and re-reads them every MODEL_POLL_INTERVAL seconds. It relays "
            "each request it is given to the backend, with COMPLETION_API_KEY (never the "
            "client's key), and streams the answer back. A backend that stops answering keeps "
            "the agent connected as not ready until it returns.",
            "Without --reconnect the agent exits when the server cannot be reached or refuses "
            "it; with it, it retries (1 s three times, 5 s three times, 15 s three times, then "
            "every 30 s).",
        ),
        examples=(
            (
                "Serve a local Ollama's models through a remote server:",
                "SERVER_URL=wss://gateway.example/api/llm/connect CLIENT_KEY=ck \\\n"
                "  COMPLETION_BASE_URL=http://127.0.0.1:11434/v1 nfrx llm --reconnect",
            ),
            (
                "Run four requests at once against llama.cpp, with a local status API:",
                "nfrx llm --completion-base-url http://127.0.0.1:8081/v1 \\\n"
                "  --max-concurrency 4 --status-addr 127.0.0.1:4555",
            ),
        ),
        files=(TOKEN_FILE,),
        long_running=True,
    ),
    "docling": Page(
        summary="run an nfrx agent for a docling-serve backend",
        description=(
            "The agent checks DOC_BASE_URL/health, announces itself with the pseudo-model "
            "'docling' and relays each conversion it is given (sync, async, status polls and "
            "results) to the backend, with DOC_API_KEY as X-Api-Key (never the client's key). "
            "Uploads stream through; nothing is held in memory whole.",
            "Without --reconnect the agent exits when the server cannot be reached or refuses "
            "it; with it, it retries (1 s three times, 5 s three times, 15 s three times, then "
            "every 30 s).",
        ),
        examples=(
            (
                "Serve a local docling-serve through a remote server:",
                "SERVER_URL=wss://gateway.example/api/docling/connect CLIENT_KEY=ck \\\n"
                "  DOC_BASE_URL=http://127.0.0.1:5001 nfrx docling --reconnect",
            ),
        ),
        files=(TOKEN_FILE,),
        long_running=True,
    ),
    "asr": Page(
        summary="run an nfrx agent for an OpenAI-compatible speech-to-text backend",
        description=(
            "The agent reads the backend's models from ASR_BASE_URL/models, announces them to "
            "the server and relays transcriptions and translations to the backend, with "
            "ASR_API_KEY (never the client's key). Uploads stream through; nothing is held in "
            "memory whole.",
            "Without --reconnect the agent exits when the server cannot be reached or refuses "
            "it; with it, it retries (1 s three times, 5 s three times, 15 s three times, then "
            "every 30 s).",
        ),
        examples=(
            (
                "Serve a local faster-whisper-server through a remote server:",
                "SERVER_URL=wss://gateway.example/api/asr/connect CLIENT_KEY=ck \\\n"
                "  ASR_BASE_URL=http://127.0.0.1:5002/v1 nfrx asr --reconnect",
            ),
        ),
        files=(TOKEN_FILE,),
        long_running=True,
    ),
    "status": Page(
        summary="show what an nfrx server or agent is doing",
        description=(
            "Exactly one of --server and --agent is required. With --watch on a terminal, the "
            "screen is cleared before each refresh; a failed fetch is shown and retried, a "
            "refused key ends it. With --watch and --json, one JSON document is printed per "
            "line.",
        ),
        examples=(
            (
                "A server's agents and models:",
                "nfrx status --server http://127.0.0.1:8080 --api-key ak",
            ),
            (
                "Watch a local agent, refreshing every 5 seconds:",
                "nfrx status --agent 127.0.0.1:4555 --watch 5",
            ),
            ("The raw JSON, for scripts:", "nfrx status --server http://127.0.0.1:8080 --json"),
        ),
        exit_status=(
            ("0", "The state was printed, or --watch was stopped with Ctrl-C."),
            ("1", "The server or agent could not be reached or did not answer JSON."),
            (
                "2",
                "A usage error (neither or both of --server and --agent), or the server "
                "refused the API key.",
            ),
        ),
    ),
    "keys": Page(
        summary="manage the client keys of an nfrx server",
        description=(
            "Each subcommand is one call to the server's admin API (/api/admin/keys), which "
            "takes API_KEY (or an ADMIN_HTTP_ROLES role). A key is sent by clients like the API "
            "key (Authorization: Bearer, or X-Api-Key); the server keeps only a SHA-256 of its "
            "secret, which create prints once. Refusals: 401 for a revoked, expired or disabled "
            "key, 403 for a model or route it may not use, 429 with Retry-After past a limit. "
            "The keys and their usage are kept in STATE_DIR (keys.db).",
            "KEY is a key's name or its id. --model and --route take shell patterns (llama3*, "
            "mcp:team-*) and may be repeated or comma-separated. A limit of 0 removes it.",
        ),
        examples=(
            (
                "A key for one team, for two models, with limits:",
                "nfrx keys create team-a --model 'llama3*' --model qwen2.5:7b \\\n"
                "  --requests-per-minute 60 --tokens-per-day 2000000 --expires 90d",
            ),
            ("Every key, with its usage:", "nfrx keys list --all"),
            ("One key's usage by model:", "nfrx keys show team-a"),
            ("Stop it for now:", "nfrx keys update team-a --disable"),
            ("Revoke it for good (refused at once):", "nfrx keys revoke team-a"),
            (
                "Another server:",
                "nfrx keys list --server https://gateway.example --api-key ak --json",
            ),
        ),
        exit_status=(
            ("0", "Done; what the server answered was printed."),
            (
                "1",
                "The server could not be reached, or refused the change (the reason is printed).",
            ),
            ("2", "A usage error, or the server refused the API key."),
        ),
    ),
    "completion": Page(
        summary="print a shell completion script for nfrx",
        description=(
            "The same scripts are shipped in the package (nfrx/share/completions) and installed "
            "by the Debian package where each shell looks for them. They are the only "
            "completion nfrx offers (Typer's own --install-completion is turned off).",
        ),
        examples=(
            ("Enable completion in the current bash:", "source <(nfrx completion bash)"),
            (
                "Install it for zsh, with ~/.zfunc on $fpath:",
                "nfrx completion zsh > ~/.zfunc/_nfrx",
            ),
            ("Install it for fish:", "nfrx completion fish > ~/.config/fish/completions/nfrx.fish"),
        ),
        exit_status=(("0", "The script was printed."), ("2", "An unknown shell.")),
    ),
    "man": Page(
        summary="show an nfrx manual page",
        description=(
            "The pages are package data (nfrx/share/man in the installed package). The Debian "
            "package also installs them under /usr/share/man, where man nfrx finds them; after "
            "pip or pipx install only nfrx man does. Without man, the page is printed as plain "
            "text, wrapped at 80 columns.",
        ),
        examples=(
            ("The page of nfrx serve:", "nfrx man serve"),
            (
                "Read a page from a source checkout, without installing:",
                "man -l nfrx/share/man/nfrx-serve.1",
            ),
        ),
        exit_status=(
            ("0", "The page was shown."),
            ("1", "The page is not installed with this nfrx, or man failed."),
            ("2", "An unknown command."),
        ),
    ),
}
"""Subcommand pages by command name (``nfrx <name>``)."""
