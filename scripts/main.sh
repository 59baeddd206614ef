#!/usr/bin/env bash
# Install what the main job needs, then run the default suite on the embedded local model and write
# the leaderboard to results/leaderboard/ (leaderboard.md, leaderboard.json, the site, and README.md: the
# findings in words, written from the estimates as `mimic report` writes them). Safe to re-run (finished
# draws come from the cache). Extra arguments go to `mimic run`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
exec .venv/bin/mimic run --suite default "$@"
