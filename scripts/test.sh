#!/usr/bin/env bash
# The whole test suite: typecheck, unit tests (pure, fast), API tests (real
# HTTP), integration tests (real namespaces, nftables, processes: need root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p tsconfig.json --noEmit
mapfile -t files < <(find test -name '*.test.ts' | sort)
exec node --import tsx --test --test-concurrency=1 --test-timeout=600000 "${files[@]}"
