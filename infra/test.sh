#!/usr/bin/env bash
# The whole test suite: finds or starts PostgreSQL, installs the project's tools, builds the
# function binaries (the Lambda-path tests run them under `cargo lambda watch`), runs every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llm-stream/target}"

"$root/infra/tools.sh"
TEST_DATABASE_URL="${TEST_DATABASE_URL:-$("$root/infra/pg.sh" admin)}"
export TEST_DATABASE_URL
export CARGO_LAMBDA="$root/.venv/bin/cargo-lambda"
echo "test.sh: PostgreSQL for tests: $TEST_DATABASE_URL" >&2

# Each function alone, exactly as `cargo lambda watch` builds it, so the Lambda-path tests
# find them built.
for bin in history get stream search; do cargo build --bin "$bin"; done
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
