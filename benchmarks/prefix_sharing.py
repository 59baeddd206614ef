"""A whole default-suite plan of one task through the runner, with and without the gguf backend's prefix sharing.

Each arm is a user's ``mimic run -m gguf:default -t bookworld --contexts C --samples-per-context S``
(every pool and context size of the task's plan; no draw cache, no estimators) through
``harness.run.runner.run``, on a mimic loaded once per arm: ``gguf:default`` (prefix sharing on, the
default) and ``gguf:default?prefix_sharing=0`` (a prompt's cells are shared only by the draws of one
context and pool). The arms alternate (on, off, off, on, ...) so drifting load touches both; the
ratio is taken over the summed generate-phase times. Printed per run: draws, generate seconds,
draws/s, prompt tokens the model decoded, the load average; at the end the ratio and ``uptime``.

Usage: .venv/bin/python benchmarks/prefix_sharing.py [--task bookworld] [--contexts 2] [--samples 8]
       [--threads 2] [--rounds 2] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
from pathlib import Path

from harness.modelspec import parse_model_spec
from harness.plugins import build_registries
from harness.run import RunConfig, run

from mimic_gguf.plugin import create_gguf

ARMS = {"sharing": "prefix_sharing=1", "no sharing": "prefix_sharing=0"}


def one_run(mimic, spec: str, args: argparse.Namespace, out: Path) -> dict:
    """One runner run on ``mimic``: its draws, generate-phase seconds and prompt tokens decoded."""
    config = RunConfig(model=parse_model_spec(spec), task=args.task, out_dir=out, contexts=args.contexts,
                       samples_per_context=args.samples, use_cache=False, estimators=(), progress="off",
                       summary_to="off", request_timeout=args.timeout)
    before = mimic.prompt_tokens_decoded
    result = run(config, build_registries(), mimic)
    if result.status != "complete":
        raise SystemExit(f"the run ended {result.status}: {result.message}")
    return {"draws": result.done, "seconds": result.timings["generate"], "prompt_tokens": mimic.prompt_tokens_decoded - before}


def main() -> None:
    """Run the two arms alternately and print draws/s, prompt tokens decoded and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="bookworld")
    ap.add_argument("--contexts", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600.0,
                    help="seconds a generate call may take (a loaded machine makes queued calls wait long)")
    args = ap.parse_args()

    specs = {arm: f"gguf:default?{option}&n_threads={args.threads}" for arm, option in ARMS.items()}
    mimics = {arm: create_gguf(parse_model_spec(spec)) for arm, spec in specs.items()}
    totals = {arm: {"draws": 0, "seconds": 0.0, "prompt_tokens": 0} for arm in ARMS}
    print(f"{args.task}, gguf:default, every pool and context size, {args.contexts} contexts x {args.samples} samples; "
          f"threads {args.threads}; max_sequences {mimics['sharing'].model.config.max_sequences}, "
          f"n_ctx {mimics['sharing'].context_window}", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                order = list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]
                for arm in order:
                    got = one_run(mimics[arm], specs[arm], args, Path(tmp) / f"{r}-{arm.replace(' ', '_')}")
                    for key, value in got.items():
                        totals[arm][key] += value
                    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                    print(f"round {r + 1} {arm:10s}: {got['draws']} draws in {got['seconds']:.1f}s = "
                          f"{got['draws'] / got['seconds']:.2f} draws/s, {got['prompt_tokens']} prompt tokens decoded; load {load}",
                          flush=True)
    finally:
        for mimic in mimics.values():
            asyncio.run(mimic.aclose())
    rates = {arm: t["draws"] / t["seconds"] for arm, t in totals.items()}
    for arm, t in totals.items():
        print(f"{arm:10s}: {rates[arm]:.2f} draws/s over {t['draws']} draws, {t['prompt_tokens'] / args.rounds:.0f} prompt tokens decoded per run")
    print(f"ratio sharing / no sharing, draws/s: {rates['sharing'] / rates['no sharing']:.2f}; prompt tokens decoded: "
          f"{totals['sharing']['prompt_tokens'] / totals['no sharing']['prompt_tokens']:.2f}")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}; cores {os.cpu_count()}")


if __name__ == "__main__":
    main()
