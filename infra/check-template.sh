#!/usr/bin/env bash
# Checks the SAM template offline: cfn-lint, infra/check_policies.py (least privilege),
# sam validate --lint, and sam build for x86_64
# (never arm64 here: that build would download a toolchain target from outside the package
# registries). SAM CLI and cfn-lint are installed into .venv on first use.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/infra/tools.sh" sam
venv="$root/.venv"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" SAM_CLI_TELEMETRY=0
export PATH="$venv/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/llm-stream/target}"

cfn-lint template.yaml
python "$root/infra/check_policies.py"
sam validate --lint --template template.yaml
sam build --beta-features --build-dir "${SAM_BUILD_DIR:-$HOME/.cache/llm-stream/sam-build}" \
  --parameter-overrides Architecture=x86_64
echo "check-template.sh: cfn-lint, the least-privilege check, sam validate --lint and sam build (x86_64) passed"
