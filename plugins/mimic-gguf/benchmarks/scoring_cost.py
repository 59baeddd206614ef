"""What batch-invariant scoring costs, against the scorer of an earlier commit.

    python plugins/mimic-gguf/benchmarks/scoring_cost.py --before 19d4262

Three timings on gguf:default, one thread (so CPU seconds barely see other processes on a shared
machine), the two sides interleaved, the minimum over ``--reps`` reported:

1. the bookworld field-probabilities phase (``harness.run.fieldprobs.context_field_probs``: Rating, then
   Genre given each Rating) as a run makes it, scored by the ``--before`` commit's scorer (the pairs
   of a context decoded together, flash attention auto) and by the current one (each pair alone,
   flash attention off);
2. the worst case for per-pair decoding: one short context with 20 multi-token continuations;
3. batched generation (16 seeded samples sharing a prompt) with flash attention auto and off.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp as C
import numpy as np
import polars as pl

import harness.worlds.bookworld as bookworld
from harness import GenerationRequest
from harness.prompts import plan_draws
from harness.run.fieldprobs import context_field_probs
from harness.tasks import load_task
from mimic_gguf.batched import BatchedSampler
from mimic_gguf.files import resolve_model_file
from mimic_gguf.mimic import GGUFMimic
from mimic_gguf.model import ContextConfig, LoadedModel

LOGLIK = "plugins/mimic-gguf/src/mimic_gguf/loglik.py"


def scorer_at(revision: str):
    """The ``LoglikelihoodScorer`` class as it was at ``revision`` (read with ``git show``)."""
    source = subprocess.run(["git", "show", f"{revision}:{LOGLIK}"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "loglik_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("loglik_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LoglikelihoodScorer


def load(flash_attn: int) -> LoadedModel:
    """gguf:default on one thread with the given llama.cpp flash-attention setting."""
    disabled = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
    C.LLAMA_FLASH_ATTN_TYPE_DISABLED = flash_attn  # the value model.py puts in the context parameters
    try:
        return LoadedModel(resolve_model_file("default"), ContextConfig(n_threads=1))
    finally:
        C.LLAMA_FLASH_ATTN_TYPE_DISABLED = disabled


def reference(n: int = 400) -> pl.DataFrame:
    """Bookworld items rendered as tasks/bookworld.yaml renders them, with the two header features."""
    frame = bookworld.generate(n, seed=0).with_row_index("ref_id").with_columns(pl.col("ref_id").cast(pl.Int64))
    texts = [bookworld.render_item(r, g, v) for r, g, v in frame.select("rating", "genre", "review").iter_rows()]
    return frame.with_columns(text=pl.Series(texts), feat_rating=pl.col("rating").cast(pl.Float64), feat_genre=pl.col("genre"))


def cpu_seconds(jobs: dict, reps: int) -> dict[str, float]:
    """Minimum CPU seconds of each named job over ``reps`` interleaved repetitions."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(reps):
        for name, job in jobs.items():
            start = time.process_time()
            job()
            times[name].append(time.process_time() - start)
    return {name: min(ts) for name, ts in times.items()}


def report(title: str, times: dict[str, float]) -> None:
    (a, ta), (b, tb) = times.items()
    print(f"{title}\n  {a}: {ta:.2f} CPU s   {b}: {tb:.2f} CPU s   ratio {b}/{a}: {tb / ta:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision whose scorer is the baseline")
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    before = GGUFMimic("gguf:default", load(C.LLAMA_FLASH_ATTN_TYPE_AUTO))
    before._scorer = scorer_at(args.before)(before.model)
    after = GGUFMimic("gguf:default", load(C.LLAMA_FLASH_ATTN_TYPE_DISABLED))
    mimics = {"before": before, "after": after}
    task, ref = load_task("bookworld"), reference()
    planned = plan_draws(task, ref, seed=0, pools=["none"], n_exemplars=5, contexts=args.contexts, samples_per_context=1)
    tables = {}

    def phase(name):
        return lambda: tables.__setitem__(name, asyncio.run(context_field_probs(mimics[name], task, ref, planned)))

    report(f"bookworld field-probabilities phase, {args.contexts} contexts x 5 exemplars:", cpu_seconds({n: phase(n) for n in mimics}, args.reps))
    change = np.abs(tables["before"]["logprob"].exp().to_numpy() - tables["after"]["logprob"].exp().to_numpy()).max()
    print(f"  largest change of a field probability, before vs after: {change:.4f}")

    context = ref["text"][0] + "\n###\n" + ref["text"][1] + "\n###\nRating:"
    pairs = [(context, f" {r}\nGenre: {g}") for r in range(1, 6) for g in ("mystery", "romance", "scifi", "history")]
    report(f"one context, {len(pairs)} multi-token continuations (worst case):",
           cpu_seconds({n: lambda n=n: asyncio.run(mimics[n].loglikelihood(pairs)) for n in mimics}, args.reps))

    prompt = "\n###\n".join(ref["text"][:8]) + "\n###\nRating:"
    requests = [GenerationRequest(prompt=prompt, max_tokens=32, seed=s, sample_index=s) for s in range(16)]
    models = {"flash attention auto": before.model, "flash attention off": after.model}
    report(f"generation, 16 samples x 32 tokens on a {len(after.model.prefix_tokens(prompt))}-token prompt:",
           cpu_seconds({n: lambda m=m: BatchedSampler(m).generate(requests, [m.prefix_tokens(prompt)] * 16) for n, m in models.items()}, args.reps))


if __name__ == "__main__":
    sys.exit(main())
