"""What a prompt token and a generated token cost on a run's backend, for `mimic plan --budget-minutes`.

Three sources, in order of preference: given (``--cost-prefill-ms X --cost-token-ms Y``); measured by a
probe that opens the pilot's model as the run did (its manifest's model spec, :func:`open_mimic`) and
times prefill-only calls (``max_tokens=1``, distinct prompts of the task's prompt length, so no cache
answers them) and decode-heavy calls (one short prompt, S samples, as the runner sends a context),
fitting ``seconds = a * prompt_tokens + b * generated_tokens + c`` by non-negative least squares (``c``:
a call's fixed overhead, charged once per context); or, without either, the pilot's own generate phase
(wall seconds over the tokens it processed), which cannot tell the two apart and uses one cost per token.
A context's prompt counts once (the backend prefills it once for its S samples).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from harness.errors import DataError, UsageError
from harness.mimic import ChatMessage, GenerationRequest, Mimic

PREFILL_SCALES = (0.5, 1.0, 1.5)  # prompt lengths of the prefill-only calls, in units of the pilot's prompt length
DECODE_CALLS = 2


@dataclass(frozen=True)
class Costs:
    """Milliseconds per prompt token (prefilled once per context), per generated token, and per call."""

    prefill_ms: float
    decode_ms: float
    source: str  # "given" | "measured" | "pilot manifest"
    call_ms: float = 0.0
    note: str = ""

    def describe(self) -> str:
        """One line: the costs and where they come from."""
        overhead = f" + {self.call_ms:.0f} ms per call" if self.call_ms else ""
        line = f"costs ({self.source}): {self.prefill_ms:.3g} ms per prompt token, {self.decode_ms:.3g} ms per generated token{overhead}"
        return f"{line}; {self.note}" if self.note else line


def given_costs(prefill_ms: float, decode_ms: float) -> Costs:
    """Costs from the command line."""
    return Costs(prefill_ms, decode_ms, "given")


def context_prompt_tokens(draws: pl.DataFrame) -> pl.DataFrame:
    """One row per context (pool, n_exemplars, context_id) with its prompt tokens and its draws' completion tokens."""
    keys = [c for c in ("pool", "n_exemplars", "context_id") if c in draws.columns]
    if not keys or "prompt_tokens" not in draws.columns or "completion_tokens" not in draws.columns:
        raise DataError("the pilot's draws have no prompt_tokens/completion_tokens", "give --cost-prefill-ms and --cost-token-ms")
    return draws.group_by(keys).agg(pl.col("prompt_tokens").first().fill_null(0), pl.col("completion_tokens").fill_null(0).sum())


def manifest_costs(manifest: dict[str, Any], draws: pl.DataFrame) -> Costs:
    """One cost per token from the pilot's generate phase: wall seconds over prompt (once per context) plus generated tokens.

    The seconds are the manifest's ``sampling`` total, summed over every invocation that made model
    calls: ``timings.generate`` times only the last invocation, so a resumed pilot would charge all its
    draws to its last part. Manifests written before ``sampling`` existed fall back to it.
    """
    counts = manifest.get("counts") or {}
    sampling = manifest.get("sampling") or {}
    seconds = float(sampling.get("seconds") or (manifest.get("timings") or {}).get("generate") or 0.0)
    if counts.get("done") and counts.get("cached", 0) >= counts["done"] or seconds <= 0:
        raise UsageError("the pilot's draws all came from the cache, so its manifest timed no model work",
                         "pass --measure-cost, or --cost-prefill-ms X --cost-token-ms Y")
    per_context = context_prompt_tokens(draws)
    share = 1.0 - float(counts.get("cached") or 0) / max(float(counts.get("done") or 1), 1.0)  # the part the model computed
    tokens = share * float(per_context.get_column("prompt_tokens").sum() + per_context.get_column("completion_tokens").sum())
    per_token = 1000.0 * seconds / max(tokens, 1.0)
    return Costs(per_token, per_token, "pilot manifest",
                 note="the manifest times the generate phase as a whole, so a prompt token and a generated token get one "
                      "cost (--measure-cost separates them)")


def fit_costs(calls: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Non-negative least squares of ``seconds = a * prompt + b * generated + c`` over (prompt, generated, seconds) calls."""
    from scipy.optimize import nnls

    x = np.array([[p, g, 1.0] for p, g, _ in calls], dtype=float)
    y = np.array([s for _, _, s in calls], dtype=float)
    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(x / scale, y)  # columns scaled: token counts and the intercept differ by orders of magnitude
    a, b, c = coef / scale
    return float(a), float(b), float(c)


def probe_prompts(texts: Sequence[str], target_chars: int, count: int, salt: str) -> list[str]:
    """``count`` distinct prompts of about ``target_chars`` characters, each starting differently (no prefix cache)."""
    pool = [t for t in texts if t] or ["a b c d e f g h"]
    out = []
    for i in range(count):
        parts, n, j = [f"Probe {salt}-{i}.\n"], 0, i * 7
        while n < target_chars:
            parts.append(pool[j % len(pool)])
            n, j = n + len(pool[j % len(pool)]) + 2, j + 1
        out.append("\n\n".join(parts)[:target_chars])
    return out


async def _timed(mimic: Mimic, requests: list[GenerationRequest]) -> tuple[float, float, float]:
    started = time.perf_counter()
    done = await mimic.generate(requests)
    seconds = time.perf_counter() - started
    return float(max(c.prompt_tokens for c in done)), float(sum(c.completion_tokens for c in done)), seconds


@dataclass(frozen=True)
class ProbeShape:
    """What the probe imitates: the pilot's prompt tokens per context, samples per context, tokens per draw."""

    prompt_tokens: float
    samples: int
    completion_tokens: float
    chat: bool = False


async def probe(mimic: Mimic, texts: Sequence[str], shape: ProbeShape) -> list[tuple[float, float, float]]:
    """Timed calls: a warm-up (dropped), prefill-only calls at several prompt lengths, decode-heavy calls."""
    def request(prompt: str, max_tokens: int, seed: int) -> GenerationRequest:
        payload = (ChatMessage("user", prompt),) if shape.chat else prompt
        return GenerationRequest(payload, max_tokens=max_tokens, seed=seed, sample_index=seed, context_id=f"probe-{seed}")

    chars = int(4 * shape.prompt_tokens)  # about 4 characters a token; the fit uses the counts the backend reports
    salt = f"{time.time_ns() % 1_000_000}"
    await _timed(mimic, [request(probe_prompts(texts, 64, 1, salt + "w")[0], 4, 0)])
    calls = []
    for i, scale in enumerate(PREFILL_SCALES):
        (prompt,) = probe_prompts(texts, int(chars * scale), 1, f"{salt}p{i}")
        calls.append(await _timed(mimic, [request(prompt, 1, i)]))
    decode = max(16, int(shape.completion_tokens))  # about a draw's length: enough tokens to time, few enough to stay quick
    for i in range(DECODE_CALLS):
        (prompt,) = probe_prompts(texts, max(64, chars // 8), 1, f"{salt}d{i}")
        calls.append(await _timed(mimic, [request(prompt, decode, 100 * i + k) for k in range(max(shape.samples, 1))]))
    return calls


def measure_costs(run_dir: Path, manifest: dict[str, Any], draws: pl.DataFrame) -> Costs:
    """Open the pilot's model as its run did and time a few calls (seconds, not minutes)."""
    from harness.plugins import build_registries
    from harness.records import ManifestModel
    from harness.run.config import RunConfig
    from harness.run.runner import open_mimic

    model = manifest.get("model") or {}
    if not model.get("backend"):
        raise DataError(f"{run_dir}/manifest.json records no model spec", "give --cost-prefill-ms and --cost-token-ms")
    spec = ManifestModel.from_dict(model).model_spec()
    per_context = context_prompt_tokens(draws)
    samples = int((manifest.get("plan") or {}).get("samples_per_context") or 1)
    shape = ProbeShape(float(per_context.get_column("prompt_tokens").mean() or 64.0), samples,
                       float(draws.get_column("completion_tokens").mean() or 16.0),
                       (manifest.get("plan") or {}).get("rendering", "completion") != "completion")
    texts = []
    if (run_dir / "reference.parquet").exists():
        ref = pl.read_parquet(run_dir / "reference.parquet", columns=["text"])
        texts = [t for t in ref.get_column("text").head(200).to_list() if t]
    registries = build_registries()
    mimic = open_mimic(RunConfig(model=spec, task=manifest.get("task_name") or "probe", use_cache=False), registries)

    async def timed_calls():
        try:
            return await probe(mimic, texts, shape)
        finally:
            await mimic.aclose()

    calls = asyncio.run(timed_calls())
    a, b, c = fit_costs(calls)
    return Costs(1000 * a, 1000 * b, "measured", call_ms=1000 * c,
                 note=f"{len(calls)} timed calls, {sum(s for *_, s in calls):.1f} s, load average {os.getloadavg()[0]:.1f}")
