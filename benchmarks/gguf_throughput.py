"""Throughput of the gguf backend against a plain shared-prefill loop over llama-cpp-python, in one run.

Workload: bookworld's ``none`` pool as a run renders it (C contexts x S samples, five exemplars per
prompt, the task's stop strings, at most T tokens per draw), the embedded Gemma ``gguf:default``.

  (a)  the backend as the runner calls it: one ``generate`` per context, from as many concurrent
       workers as the runner starts for it (``effective_concurrency``: the backend's ``max_concurrency``);
  (b)  the backend with every context in one ``generate`` call;
  (c)  a plain loop written here with llama.cpp's C API: each context's prompt decoded once, its cells
       copied to its S sequences, one ``llama_decode`` per step for every live sequence (all C x S at
       once), one seeded ``dist`` sampler per sequence, the same stop strings.

Last, one token drawn from a real logits row, 200 times: llama.cpp's ``llama_sampler_sample`` (what
(c) calls) against the backend's numpy sampler (``mimic_gguf.sampling``), where most of the gap goes.

The paths run in turn, ``--rounds`` times, so drifting load on a shared machine touches all of them;
the ratios (a)/(c) and (b)/(c) are taken per round and the machine's load average is printed beside them.

Usage: .venv/bin/python benchmarks/gguf_throughput.py [--contexts 4] [--samples 8] [--tokens 48]
       [--threads 2] [--rounds 1] [--pool none]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import os
import statistics
import time
from collections import deque

import llama_cpp as C
import numpy as np

from harness.plugins import build_registries
from harness.mimic import GenerationRequest
from harness.modelspec import parse_model_spec
from harness.prompts import plan_draws, request_for
from harness.protocols import BuildContext
from harness.reference import load_reference
from harness.run.calls import effective_concurrency
from harness.run.config import RunConfig
from harness.run.generate import LAUNCH_WINDOW
from harness.tasks import load_task

from mimic_gguf.plugin import create_gguf
from mimic_gguf.sampling import TokenSampler
from mimic_gguf.text import find_stop


def bookworld_groups(contexts: int, samples: int, tokens: int, pool: str) -> list[list[GenerationRequest]]:
    """The requests of ``pool``'s first contexts, one list per context, as the runner builds them."""
    registries = build_registries()
    task = load_task("bookworld", registries)
    reference = load_reference(task, registries, BuildContext(registries))
    planned = plan_draws(task, reference, seed=0, pools=[pool], contexts=contexts, samples_per_context=samples)
    generation = dataclasses.replace(task.generation, max_tokens=tokens)
    groups: dict[str, list[GenerationRequest]] = {}
    for draw in planned:
        req = request_for(draw, generation, task.render.stop)
        groups.setdefault(req.context_id, []).append(req)
    return list(groups.values())


async def runner_like(mimic, groups: list[list[GenerationRequest]], workers: int) -> list:
    """Worker coroutines taking one context per ``generate`` call, launched as the runner spreads them."""
    queue, out = deque(groups), []

    async def worker(delay: float) -> None:
        await asyncio.sleep(delay)
        while queue:
            out.extend(await mimic.generate(queue.popleft()))

    n = min(workers, len(groups))
    await asyncio.gather(*(worker(k * LAUNCH_WINDOW / n) for k in range(n)))
    return out


class PlainLoop:
    """Shared prefill, KV copies and one decode per step for all sequences, with llama.cpp's C API."""

    def __init__(self, model, threads: int, n_ctx: int, n_seq: int):
        self.model, self.n_seq = model, n_seq
        self.vocab = C.llama_model_get_vocab(model)
        params = C.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, 512, 512
        params.n_seq_max, params.n_threads, params.n_threads_batch = n_seq, threads, threads
        params.kv_unified, params.swa_full, params.no_perf = True, True, True
        params.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the backend loads it
        self.ctx = C.llama_init_from_model(model, params)
        self.memory = C.llama_get_memory(self.ctx)
        self.batch = C.llama_batch_init(max(512, n_seq), 0, n_seq)
        self.buf = ctypes.create_string_buffer(256)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(entries)
        if C.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def _piece(self, tok: int) -> bytes:
        n = C.llama_token_to_piece(self.vocab, tok, self.buf, len(self.buf), 0, False)
        return self.buf.raw[: max(n, 0)]

    def run(self, prompts: list[list[int]], groups: list[list[GenerationRequest]]) -> list[int]:
        """Sample every request; returns each draw's completion tokens."""
        C.llama_memory_clear(self.memory, True)
        seqs = []  # [seq id, pos, last token, sampler, bytes, n tokens, request]
        for c, (tokens, group) in enumerate(zip(prompts, groups)):
            base = len(seqs)
            for lo in range(0, len(tokens), 512):
                chunk = tokens[lo:lo + 512]
                self._decode([(t, lo + j, base, lo + j == len(tokens) - 1) for j, t in enumerate(chunk)])
            for k, req in enumerate(group):
                if k:
                    C.llama_memory_seq_cp(self.memory, base, base + k, -1, -1)
                sampler = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
                C.llama_sampler_chain_add(sampler, C.llama_sampler_init_dist(req.seed & 0xFFFFFFFF))
                seqs.append([base + k, len(tokens), C.llama_sampler_sample(sampler, self.ctx, -1), sampler, b"", 1, req])
        produced = {}
        live = [s for s in seqs if not self._finished(s)]
        for s in seqs:
            if s not in live:
                produced[s[0]] = s[5]
        while live:
            self._decode([(s[2], s[1], s[0], True) for s in live])
            still = []
            for j, s in enumerate(live):
                s[1] += 1
                s[2] = C.llama_sampler_sample(s[3], self.ctx, j)
                s[5] += 1
                if self._finished(s):
                    produced[s[0]] = s[5]
                    C.llama_memory_seq_rm(self.memory, s[0], -1, -1)
                else:
                    still.append(s)
            live = still
        for s in seqs:
            C.llama_sampler_free(s[3])
        return list(produced.values())

    def _finished(self, s: list) -> bool:
        tok, req = s[2], s[6]
        if C.llama_vocab_is_eog(self.vocab, tok):
            return True
        s[4] += self._piece(tok)
        if find_stop(s[4].decode("utf-8", errors="ignore"), req.stop) >= 0:
            return True
        return s[5] >= req.max_tokens

    def sampling_seconds(self, prompt: list[int], draws: int) -> tuple[float, float]:
        """Seconds per token drawn from one real logits row: llama.cpp's ``dist`` sampler, then the backend's."""
        C.llama_memory_clear(self.memory, True)
        self._decode([(t, j, 0, j == len(prompt) - 1) for j, t in enumerate(prompt[:512])])
        sampler = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        C.llama_sampler_chain_add(sampler, C.llama_sampler_init_dist(1))
        start = time.perf_counter()
        for _ in range(draws):
            C.llama_sampler_sample(sampler, self.ctx, -1)
        theirs = (time.perf_counter() - start) / draws
        C.llama_sampler_free(sampler)
        row = np.ctypeslib.as_array(C.llama_get_logits_ith(self.ctx, -1), shape=(C.llama_vocab_n_tokens(self.vocab),))
        ours, scratch = TokenSampler(1.0, 1.0, 1), np.empty(row.shape[0], dtype=np.float32)
        start = time.perf_counter()
        for _ in range(draws):
            ours.sample(row, scratch)
        return theirs, (time.perf_counter() - start) / draws

    def close(self) -> None:
        C.llama_batch_free(self.batch)
        C.llama_free(self.ctx)


def timed(fn) -> tuple[float, int]:
    """Seconds and completion tokens of one path."""
    start = time.perf_counter()
    produced = fn()
    return time.perf_counter() - start, produced


def main() -> None:
    """Run the three paths in turn and print draws/s, the ratios and the machine load."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--pool", default="none")
    ap.add_argument("--spec", default="gguf:default", help="the backend's model spec (n_threads is added)")
    args = ap.parse_args()

    groups = bookworld_groups(args.contexts, args.samples, args.tokens, args.pool)
    sep = "&" if "?" in args.spec else "?"
    mimic = create_gguf(parse_model_spec(f"{args.spec}{sep}n_threads={args.threads}"))
    workers = effective_concurrency(mimic, RunConfig.concurrency)
    prompts = [mimic.render_prompt(g[0].prompt) for g in groups]
    draws = sum(len(g) for g in groups)
    # Every prompt once plus every draw's tokens: the plain loop holds all sequences at once.
    n_ctx = sum(len(p) for p in prompts) + draws * args.tokens + 64
    plain = PlainLoop(mimic.model.model, args.threads, n_ctx, draws)
    print(f"bookworld pool {args.pool!r}: {len(groups)} contexts x {args.samples} samples x <= {args.tokens} tokens "
          f"(stops {groups[0][0].stop}); prompt tokens {[len(p) for p in prompts]}; threads {args.threads}; "
          f"backend {mimic.model_id} max_sequences {mimic.model.config.max_sequences}, runner workers {workers}", flush=True)

    names = {"a": f"(a) backend, generate() per context, {workers} workers", "b": "(b) backend, one generate() for all",
             "c": f"(c) plain C-API loop, {draws} sequences per decode"}
    def fresh(fn):
        # Every path starts from an empty KV cache: the backend keeps prompts cached between calls,
        # and the previous path's prompts (the same ones) would spare it every prefill.
        return lambda: (mimic.model.clear(), fn())[1]

    paths = {
        "a": fresh(lambda: sum(c.completion_tokens for c in asyncio.run(runner_like(mimic, groups, workers)))),
        "b": fresh(lambda: sum(c.completion_tokens for c in asyncio.run(mimic.generate([r for g in groups for r in g])))),
        "c": lambda: sum(plain.run(prompts, groups)),
    }
    results: dict[str, list[tuple[float, int]]] = {k: [] for k in paths}
    for r in range(args.rounds):
        for key, fn in paths.items():
            results[key].append(timed(fn))
        line = ", ".join(f"{k} {results[k][-1][0]:.1f}s" for k in paths)
        print(f"round {r + 1}: {line}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    theirs, ours = plain.sampling_seconds(prompts[0], 200)
    n_vocab = mimic.model.n_vocab
    plain.close()
    asyncio.run(mimic.aclose())

    for key, runs in results.items():
        seconds, produced = sum(s for s, _ in runs), sum(p for _, p in runs)
        print(f"{names[key]:48s} {draws * len(runs) / seconds:6.2f} draws/s  {produced / seconds:6.1f} tokens/s"
              f"  ({produced / len(runs) / draws:.1f} tokens per draw)")
    for key in ("a", "b"):
        ratios = [c[0] / x[0] for x, c in zip(results[key], results["c"])]
        per_token = [(x[1] / x[0]) / (c[1] / c[0]) for x, c in zip(results[key], results["c"])]
        print(f"ratio {key}/c per round, draws/s: {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}); "
              f"tokens/s: {', '.join(f'{x:.2f}' for x in per_token)} (median {statistics.median(per_token):.2f})")
    print(f"one token from a real logits row ({n_vocab} tokens): llama_sampler_sample {theirs * 1e3:.2f} ms, "
          f"the backend's numpy sampler {ours * 1e3:.2f} ms ({theirs / ours:.1f}x)")
    print(f"load average (1, 5, 15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores {os.cpu_count()}")


if __name__ == "__main__":
    main()
