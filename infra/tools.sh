#!/usr/bin/env bash
# Installs the project's own tools into .venv (cargo-lambda, which brings zig; the OpenAI SDK
# and Playwright the tests use), the OpenAI JavaScript SDK under .local/node, Debian's chromium
# for the browser test (and Node.js when missing), and makes sure cargo-nextest is there; `infra/tools.sh sam` also installs the SAM CLI and cfn-lint.
# Idempotent and quiet when everything is already installed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"

if [ ! -x "$venv/bin/python" ]; then
  echo "tools.sh: creating $venv" >&2
  python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/cargo-lambda" ]; then
  echo "tools.sh: installing cargo-lambda into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==1.9.2"
fi
# The official OpenAI SDK, for the tests that use the OpenAI-compatible API as clients do.
if ! "$venv/bin/python" -c "import openai" >/dev/null 2>&1; then
  echo "tools.sh: installing the openai SDK into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openai==3.57.0"
fi
if ! "$venv/bin/python" -c "import agents" >/dev/null 2>&1; then
  echo "tools.sh: installing the OpenAI Agents SDK into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openai-agents==0.24.0"
fi
# schemathesis generates requests from openapi.json and checks the answers (and each SSE event)
# against it.
if ! "$venv/bin/python" -c "import schemathesis" >/dev/null 2>&1; then
  echo "tools.sh: installing schemathesis into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
# Playwright for Python drives the browser test; the browser is Debian's chromium (never a
# download by `playwright install`).
if ! "$venv/bin/python" -c "import playwright" >/dev/null 2>&1; then
  echo "tools.sh: installing playwright into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "playwright==1.65.2"
fi
apt_install() {
  echo "tools.sh: installing $* (apt-get)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  apt_install chromium
fi
# The official OpenAI SDK for JavaScript, for the same tests, from npm into .local/node: its
# newest release that runs on Node.js 20 (7.x needs 22, which neither Debian nor this machine has).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
# Beside it the Vercel AI SDK (`ai` 6, the last major that runs on Node.js 20) with its OpenAI
# provider and zod, for the tool and structured output tests.
node_modules="$root/.local/node/node_modules"
if ! grep -q '"version": "6.30.1"' "$node_modules/openai/package.json" 2>/dev/null ||
  ! grep -q '"version": "6.0.333"' "$node_modules/ai/package.json" 2>/dev/null ||
  ! grep -q '"version": "3.0.141"' "$node_modules/@ai-sdk/openai/package.json" 2>/dev/null; then
  echo "tools.sh: installing the openai SDK and the AI SDK for JavaScript into $root/.local/node" >&2
  npm install --silent --no-audit --no-fund --prefix "$root/.local/node" "openai@6.30.1" \
    "ai@6.0.333" "@ai-sdk/openai@3.0.141" "zod@4.6.7" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "tools.sh: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi
if [ "${1:-}" = sam ] && { [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/cfn-lint" ]; }; then
  echo "tools.sh: installing aws-sam-cli and cfn-lint into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==1.170.0" "cfn-lint==1.58.0"
fi
