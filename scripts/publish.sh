#!/usr/bin/env bash
# Publish the default suite's runs: copy each run's manifest, draws, reference table and field
# probabilities into results/published/runs, recompute every estimate from them with `mimic estimate`
# (so the published numbers are, by construction, what anyone recomputes from the shipped draws),
# rebuild the leaderboard there, and write results/published/README.md from the data with `mimic report`.
# Run `bash scripts/main.sh` first. Arguments: the run folders to publish (default: results/runs/*);
# `bash scripts/publish.sh results/published/runs/*/` republishes the shipped runs with this harness.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/published
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(results/runs/*/)
rm -rf "$out.new" && mkdir -p "$out.new/runs"
for run in "${runs[@]}"; do
  run=${run%/}
  [ -f "$run/manifest.json" ] || { echo "publish: $run has no manifest.json (not a run folder): pass run folders or run scripts/main.sh first" >&2; exit 2; }
  mkdir -p "$out.new/runs/$(basename "$run")"
  for f in manifest.json draws.parquet reference.parquet field_probs.parquet; do
    [ -f "$run/$f" ] && cp "$run/$f" "$out.new/runs/$(basename "$run")/"
  done
done
.venv/bin/mimic estimate "$out.new/runs"  # writes estimates.parquet, estimates.json, summary.md
.venv/bin/mimic leaderboard "$out.new/runs" --out "$out.new" --no-findings
.venv/bin/mimic report "$out.new/runs" --out "$out.new/README.md"
# swap only once everything was written: a failure above leaves the published board as it was
rm -rf "$out.old" && { [ -d "$out" ] && mv "$out" "$out.old" || true; } && mv "$out.new" "$out" && rm -rf "$out.old"
echo "published $(ls "$out/runs" | wc -l) run(s) to $out"
