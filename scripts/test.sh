#!/usr/bin/env bash
# Everything CI checks: set-up, lint, the whole test suite (slow tests included), and the quality gate:
# a quick leaderboard compared with the committed baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -m "slow or not slow" "$@"
out=$(mktemp -d)
.venv/bin/lusbench run --preset quick --device cpu --strategy threshold:0.5 --strategy threshold:0.6 --strategy soft --strategy weighted \
  --out "$out/run" --json "$out/leaderboard.json"
.venv/bin/lusbench check --baseline benchmarks/baselines/quick.json --json "$out/leaderboard.json"
