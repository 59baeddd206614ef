"""How the gguf backend's decode cost per token moves over one long run through the runner.

A run of a default-suite design (python-functions at 32 x 6, no curve, by default) on
``gguf:default``, with ``llama_decode`` timed. It prints the run's generate time, prefill and step
totals, and the decode steps in eighths: mean batch (sequences per step), ms per step and ms per
token. In the unified KV cache every token's attention is computed against every cell up to the
highest one in use (other sequences' cells masked, not skipped), so the cost per token grows as a
run fills the cache with sequences and cached prompts; this shows by how much, and ``--options``
lets a change be compared (e.g. ``--options n_ctx=4096``).

Usage: .venv/bin/python benchmarks/gguf_long_run.py [--model gguf:default] [--task python-functions] [--contexts 32] [--samples 6]
       [--threads 2] [--options K=V&K=V]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import llama_cpp as C

from harness.chat.renderings import backend_spec
from harness.modelspec import parse_model_spec
from harness.plugins import build_registries
from harness.run import RunConfig, run

from mimic_gguf.plugin import create_gguf


def main() -> None:
    """One timed run; prints the decode cost per token in eighths of the run's steps."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gguf:default", help="a gguf model spec, e.g. gguf:smollm2?rendering=chat+prefill")
    ap.add_argument("--task", default="python-functions")
    ap.add_argument("--contexts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--options", default="", help="extra gguf options, e.g. n_ctx=4096")
    args = ap.parse_args()

    decodes: list[tuple[int, float]] = []  # (tokens in the batch, seconds)
    decode = C.llama_decode

    def timed_decode(ctx, batch):
        start = time.perf_counter()
        rc = decode(ctx, batch)
        decodes.append((batch.n_tokens, time.perf_counter() - start))
        return rc

    C.llama_decode = timed_decode  # model.py looks it up at each call
    spec = f"{args.model}{'&' if '?' in args.model else '?'}n_threads={args.threads}" + (f"&{args.options}" if args.options else "")
    model = parse_model_spec(spec)
    mimic = create_gguf(backend_spec(model))  # the run applies the spec's rendering
    max_sequences = mimic.model.config.max_sequences
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(model=model, task=args.task, out_dir=Path(tmp), contexts=args.contexts,
                           samples_per_context=args.samples, context_sizes=(), use_cache=False, estimators=(),
                           progress="off", summary_to="off", request_timeout=3600)
        result = run(config, build_registries(), mimic)
    if result.status != "complete":
        raise SystemExit(f"the run ended {result.status}: {result.message}")
    # A decode step holds one token per live sequence; anything bigger is a prompt's prefill.
    steps = [(n, s) for n, s in decodes if n <= max_sequences]
    prefill = sum(s for n, s in decodes if n > max_sequences)
    print(f"{args.task} {args.contexts} x {args.samples}, no curve, {spec}: {result.done} draws, generate "
          f"{result.timings['generate']:.1f} s; prefill {prefill:.1f} s; {len(steps)} steps, "
          f"{sum(s for _, s in steps):.1f} s, {sum(n for n, _ in steps)} tokens")
    size = max(1, -(-len(steps) // 8))
    for lo in range(0, len(steps), size):
        part = steps[lo : lo + size]
        tokens, seconds = sum(n for n, _ in part), sum(s for _, s in part)
        print(f"steps {lo}-{lo + len(part)}: mean batch {tokens / len(part):.1f}, {1e3 * seconds / len(part):.0f} ms/step, "
              f"{1e3 * seconds / tokens:.2f} ms/token")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores {os.cpu_count()}")


if __name__ == "__main__":
    main()
