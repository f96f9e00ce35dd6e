#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root) to a running metald on
# the embedded default config: SQLite store, sandbox VMs, the whole data plane
# in the "metald-dp" network namespace, API on http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node bin/metald.js quickstart "$@"
