"""Soak test: many draws through the runner and the openai backend against a faulty fake server.

    .venv/bin/python benchmarks/soak.py                          # 20,000 draws, concurrency 64, 10% faults
    .venv/bin/python benchmarks/soak.py --draws 2000 --concurrency 16 --fault-rate 0.2

The fake OpenAI server runs in a child process (so it does not share this process's GIL) and
injects every fault it knows, in equal shares adding up to ``--fault-rate`` of requests: 429 and
503 with Retry-After, 500, connection resets, hangs (cut by the request timeout), slow bodies,
truncated and non-JSON bodies, empty ``choices`` and corrupt logprobs. One ``mimic run`` (the
runner, with the draw cache and the fsync'd draw log) draws every planned sample. Printed:

- draws completed / lost (planned but not recorded: must be 0) / duplicates (a draw key recorded
  twice in the log: must be 0) / wrong values (a recorded completion that differs from what the
  server's deterministic generator gives for that prompt and seed: must be 0);
- faults injected (by kind, from the server), model calls and retries;
- peak memory of this process (``resource.getrusage``, max RSS) and wall time.

``soak()`` is also called by ``tests/test_network_faults.py::test_soak_small`` with 1,000 draws.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PLUGINS = "builtin-features,builtin-sources,builtin-controls,openai"
SAMPLES_PER_CONTEXT = 8
MODEL = "soak"
TASK = """\
name: soak
version: 1
reference: {{type: jsonl, path: ref.jsonl}}
render:
  exemplar: "Rating: {{{{ rating }}}}\\nReview: {{{{ review }}}}"
  separator: "\\n###\\n"
  open_prefix: "Rating:"
  stop: ["###"]
features:
  rating: {{type: header_field, field: Rating, numeric: true}}
  length: {{type: length_words}}
proxy: {{feature: rating, values: [5]}}
latents: [length]
controls: [none]
plan: {{contexts: {contexts}, samples_per_context: {samples}, exemplars: 2, seed: 0}}
generation: {{max_tokens: {max_tokens}}}
"""


def fault_mix(rate: float) -> dict[str, float]:
    """Every fault the server knows, in equal shares summing to ``rate``."""
    from harness.testing.fake_payloads import FAULTS

    return {name: rate / len(FAULTS) for name in FAULTS}


def write_task(workdir: Path, draws: int, max_tokens: int) -> Path:
    rng = random.Random(0)
    with open(workdir / "ref.jsonl", "w") as fh:
        for _ in range(60):
            words = " ".join(rng.choice(["good", "bad", "slow", "warm", "dull", "long"]) for _ in range(rng.randint(3, 9)))
            fh.write(json.dumps({"rating": rng.randint(1, 5), "review": words}) + "\n")
    samples = SAMPLES_PER_CONTEXT if draws >= SAMPLES_PER_CONTEXT else 1
    contexts = -(-draws // samples)
    task = workdir / "soak.yaml"
    task.write_text(TASK.format(contexts=contexts, samples=samples, max_tokens=max_tokens))
    return task


def check_values(run_dir: Path, planned: list, stop: tuple[str, ...], max_tokens: int) -> tuple[int, int, int, int]:
    """(recorded unique draws, duplicate keys in the log, wrong completions, planned draws missing)."""
    from harness.records import DrawKey
    from harness.store import scan_log
    from harness.testing.fake_payloads import expected_completion

    rows = scan_log(run_dir / "draws.jsonl").rows
    keys = Counter(DrawKey.of(r) for r in rows)
    duplicates = sum(n - 1 for n in keys.values() if n > 1)
    by_key = {d.key: d for d in planned}
    wrong = 0
    for row in rows:
        draw = by_key.get(DrawKey.of(row))
        if draw is None:
            wrong += 1  # a draw nobody planned
            continue
        expected = expected_completion(draw.prompt, seed=draw.seed, model=MODEL, max_tokens=max_tokens, stop=stop)
        if row["completion"] != expected or row["seed"] != draw.seed:
            wrong += 1
    missing = sum(1 for key in by_key if key not in keys)
    return len(keys), duplicates, wrong, missing


def soak(draws: int = 20_000, concurrency: int = 64, fault_rate: float = 0.10, *, latency_ms: float = 2.0,
         max_tokens: int = 16, request_timeout: float = 1.0, workdir: Path | None = None, seed: int = 0) -> dict:
    """Run the soak and return its figures (see the module docstring)."""
    os.environ.setdefault("MIMIC_PLUGINS", PLUGINS)
    from harness.modelspec import ModelSpec
    from harness.plugins import build_registries
    from harness.run import RunConfig, run_async
    from harness.run.load import load_phase
    from harness.run.plan import plan_phase
    from harness.testing import start_fake_server_process

    own = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="mimic-soak-") if own else None
    work = Path(tmp.name) if tmp else Path(workdir)
    try:
        task = write_task(work, draws, max_tokens)
        settings = dict(latency_ms=latency_ms, faults=fault_mix(fault_rate), fault_seed=seed, retry_after=0.05,
                        slow_body_ms=15, hang_s=request_timeout * 3)
        with start_fake_server_process(**settings) as server:
            config = RunConfig(model=ModelSpec("openai", MODEL, {"base_url": server.base_url}), task=task,
                               out_dir=work / "out", cache_dir=work / "cache", samples=draws, concurrency=concurrency,
                               progress="off", summary_to="off", estimators=(), retry_wait=0.01, max_attempts=10,
                               request_timeout=request_timeout)
            registries = build_registries()
            started = time.perf_counter()
            error = None
            try:
                result = asyncio.run(run_async(config, registries))
                status, run_dir, calls = result.status, result.run_dir, result.model_calls
            except Exception as exc:  # a stop is a figure of the soak, not a crash of the benchmark
                error = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
                status, calls = "failed", None
                run_dir = next((work / "out" / "runs").iterdir())
            seconds = time.perf_counter() - started
            stats = server.stats()
        manifest = json.loads((run_dir / "manifest.json").read_text())
        loaded = load_phase(config.task, registries)
        planned = plan_phase(config.plan, loaded, loaded.task.plan.seed)
        recorded, duplicates, wrong, missing = check_values(run_dir, planned, loaded.task.render.stop, max_tokens)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return {
            "status": status, "error": error, "draws_planned": len(planned), "draws_completed": recorded,
            "draws_lost": missing, "duplicates": duplicates, "wrong_values": wrong,
            "faults_injected": sum(stats.get("faults", {}).values()), "faults": dict(sorted(stats.get("faults", {}).items())),
            "server_requests": stats.get("requests"), "model_calls": calls, "calls": manifest.get("calls"),
            "limiter_cuts": (manifest.get("calls") or {}).get("limiter_cuts"), "concurrency": concurrency,
            "fault_rate": fault_rate, "seconds": round(seconds, 2), "draws_per_s": round(recorded / seconds, 1) if seconds else None,
            "peak_rss_mib": round(peak_mib, 1),
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20_000, help="draws to plan (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--fault-rate", type=float, default=0.10, help="share of requests that get a fault (default 0.10)")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="server latency per request (default 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.draws < 1 or args.concurrency < 1 or not 0 <= args.fault_rate <= 1:
        parser.error("--draws and --concurrency must be >= 1, --fault-rate in [0, 1]")
    report = soak(args.draws, args.concurrency, args.fault_rate, latency_ms=args.latency_ms)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"status:           {report['status']}" + (f" ({report['error']})" if report["error"] else ""))
        print(f"draws completed:  {report['draws_completed']:,} of {report['draws_planned']:,}")
        print(f"draws lost:       {report['draws_lost']}")
        print(f"duplicates:       {report['duplicates']}")
        print(f"wrong values:     {report['wrong_values']}")
        print(f"faults injected:  {report['faults_injected']:,} of {report['server_requests']:,} requests "
              f"({', '.join(f'{k} {v}' for k, v in report['faults'].items())})")
        calls = report["calls"] or {}
        print(f"model calls:      {calls.get('calls', 0):,} (retries {calls.get('retries', 0):,}, timeouts {calls.get('timeouts', 0):,}, "
              f"rate limited {calls.get('rate_limited', 0):,}, limiter cuts {calls.get('limiter_cuts', 0)})")
        print(f"peak memory:      {report['peak_rss_mib']:.1f} MiB (max RSS of this process)")
        print(f"time:             {report['seconds']:.1f} s ({report['draws_per_s']} draws/s at concurrency {report['concurrency']})")
    ok = report["status"] == "complete" and report["draws_lost"] == 0 and report["duplicates"] == 0 and report["wrong_values"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
