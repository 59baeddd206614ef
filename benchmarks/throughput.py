"""Requests per second of the harness against lm-eval and a bare aiohttp client, on the fake server.

    .venv/bin/python benchmarks/throughput.py                 # 2,000 requests, 32 tokens, concurrency 64
    .venv/bin/python benchmarks/throughput.py --requests 500  # quicker

For each server latency (50 ms, then 0 ms) the fake OpenAI server runs in a child process (so it
does not share this process's GIL), and three clients send the same number of completion requests:

- harness: a real ``mimic run`` (``harness.run.run_async``) of a one-pool task whose plan is
  exactly N draws, with the ``openai`` backend: planning, cache lookups and writes, the limiter and
  retries, item text, a feature, the fsync'd draw log. Its rate is N / the generate phase's seconds.
- lm-eval: ``local-completions`` (``LocalCompletionsAPI``) at ``num_concurrent`` = the concurrency,
  ``generate_until`` over N distinct prompts.
- aiohttp: a bare client (one session, a semaphore) posting the same payloads, on the same event
  loop as the harness (uvloop where installed; ``MIMIC_EVENT_LOOP=asyncio`` for asyncio's own).

The ideal at latency L is concurrency / L. Each client runs ``--repeats`` times (default 3), the
three interleaved, and the table shows each one's median run. Numbers depend on the machine's load:
run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MIMIC_PLUGINS", "builtin-features,builtin-sources,builtin-controls,openai")

TASK = """\
name: throughput
version: 1
reference: {{type: jsonl, path: {ref}}}
render:
  exemplar: "Review: {{{{ review }}}}"
  separator: "\\n\\n"
  open_prefix: "Review:"
  stop: ["\\n\\n"]
features:
  length: {{type: length_words}}
  lines: {{type: length_lines}}
proxy: {{feature: length, values: [10]}}
latents: [lines]
controls: [none]
plan: {{contexts: {contexts}, samples_per_context: {samples}, exemplars: 2, seed: 0}}
generation: {{max_tokens: {max_tokens}}}
"""


def prompts(n: int) -> list[str]:
    """Distinct prompts, so no client can answer one request from another."""
    return [f"Reviews from a book club.\n\nReview: a quiet book, number {i}.\n\nReview:" for i in range(n)]


async def harness_rate(base_url: str, n: int, concurrency: int, max_tokens: int, workdir: Path) -> dict:
    """A real run of n draws; the rate is n / the generate phase's wall time."""
    from harness.modelspec import ModelSpec
    from harness.plugins import build_registries
    from harness.run import RunConfig, run_async

    ref = workdir / "ref.jsonl"
    ref.write_text("".join(json.dumps({"review": f"A book about item {i}, calm and long."}) + "\n" for i in range(50)))
    samples = 8 if n % 8 == 0 else 1
    task = workdir / "throughput.yaml"
    task.write_text(TASK.format(ref=ref, contexts=n // samples, samples=samples, max_tokens=max_tokens))
    config = RunConfig(model=ModelSpec("openai", "bench", {"base_url": base_url}), task=task, out_dir=workdir / "out",
                       cache_dir=workdir / "cache", concurrency=concurrency, progress="off", summary_to="off",
                       estimators=())
    cpu = time.process_time()
    result = await run_async(config, build_registries())
    cpu = time.process_time() - cpu
    assert result.done == n and result.model_calls == n, result
    seconds = result.timings["generate"]
    return {"req_per_s": n / seconds, "seconds": seconds, "cpu_ms_per_req": 1000 * cpu / n,
            "generate_cpu_ms_per_req": 1000 * result.cpu_seconds["generate"] / n,
            "completion_tokens": result.usage["completion_tokens"] / n}


def lm_eval_rate(base_url: str, n: int, concurrency: int, max_tokens: int) -> dict:
    """lm-eval's local-completions model, generate_until over n prompts."""
    import logging

    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    lm = LocalCompletionsAPI(base_url=f"{base_url}/completions", model="bench", num_concurrent=concurrency,
                             tokenizer_backend=None, tokenized_requests=False, max_gen_toks=max_tokens, max_retries=3, timeout=60)
    gen = {"until": ["\n\n"], "max_gen_toks": max_tokens, "do_sample": True, "temperature": 1.0}
    requests = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(gen)), idx=i) for i, p in enumerate(prompts(n))]
    start, cpu = time.perf_counter(), time.process_time()
    out = lm.generate_until(requests, disable_tqdm=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(out) == n
    return {"req_per_s": n / seconds, "seconds": seconds, "cpu_ms_per_req": 1000 * cpu / n}


async def aiohttp_rate(base_url: str, n: int, concurrency: int, max_tokens: int) -> dict:
    """A bare aiohttp client: one session, a semaphore, JSON in and out."""
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int, prompt: str) -> str:
            payload = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0, "seed": i, "stop": ["\n\n"]}
            async with gate, session.post(f"{base_url}/completions", json=payload) as response:
                body = await response.json()
            return body["choices"][0]["text"]

        start, cpu = time.perf_counter(), time.process_time()
        out = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts(n))))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(out) == n
    return {"req_per_s": n / seconds, "seconds": seconds, "cpu_ms_per_req": 1000 * cpu / n}


def _median_run(runs: list[dict]) -> dict:
    """The run with the median rate, plus every run's rate (the spread shows the machine's noise)."""
    ordered = sorted(runs, key=lambda r: r["req_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "all_req_per_s": [round(r["req_per_s"], 1) for r in runs]}


def main(argv: list[str] | None = None) -> int:
    """Run every client at each latency and print one table (and JSON lines with --json)."""
    from harness import eventloop
    from harness.testing.fake_process import start_fake_server_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, action="append", help="repeatable (default: 50 then 0)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three clients, interleaved; the median is shown")
    parser.add_argument("--json", action="store_true", help="also print one JSON object per latency")
    args = parser.parse_args(argv)
    rows = []
    for latency in args.latency_ms or [50.0, 0.0]:
        ideal = args.concurrency / (latency / 1000) if latency > 0 else None
        row = {"latency_ms": latency, "requests": args.requests, "concurrency": args.concurrency, "ideal": ideal}
        runs: dict[str, list[dict]] = {"harness": [], "lm_eval": [], "aiohttp": []}
        with start_fake_server_process(latency_ms=latency) as server, tempfile.TemporaryDirectory() as tmp:
            for attempt in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every client alike
                workdir = Path(tmp) / str(attempt)
                workdir.mkdir()
                runs["harness"].append(eventloop.run(harness_rate(server.base_url, args.requests, args.concurrency, args.max_tokens, workdir)))
                runs["lm_eval"].append(lm_eval_rate(server.base_url, args.requests, args.concurrency, args.max_tokens))
                runs["aiohttp"].append(eventloop.run(aiohttp_rate(server.base_url, args.requests, args.concurrency, args.max_tokens)))
        row.update({name: _median_run(r) for name, r in runs.items()})
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    print(f"\n{args.requests} requests, max_tokens {args.max_tokens}, concurrency {args.concurrency} (requests/s, median of "
          f"{args.repeats}); harness and bare aiohttp on the {eventloop.loop_name()} event loop, lm-eval on its own")
    print(f"{'latency':>8} {'harness':>9} {'lm-eval':>9} {'aiohttp':>9} {'ideal':>8} {'h/ideal':>8} {'h/lm-eval':>9} {'h/aiohttp':>9}")
    for row in rows:
        h, lm, raw, ideal = row["harness"]["req_per_s"], row["lm_eval"]["req_per_s"], row["aiohttp"]["req_per_s"], row["ideal"]
        print(f"{row['latency_ms']:>6.0f}ms {h:>9.1f} {lm:>9.1f} {raw:>9.1f} {ideal or float('inf'):>8.1f} "
              f"{(h / ideal if ideal else float('nan')):>8.3f} {h / lm:>9.3f} {h / raw:>9.3f}")
    for row in rows:
        print(f"every run at {row['latency_ms']:.0f} ms: " + "; ".join(
            f"{name} {row[name]['all_req_per_s']}" for name in ("harness", "lm_eval", "aiohttp")))
    for row in rows:  # CPU per request depends far less on other load than requests/s does
        print(f"client CPU per request at {row['latency_ms']:.0f} ms: " + ", ".join(
            f"{name} {row[name]['cpu_ms_per_req']:.3f} ms" for name in ("harness", "lm_eval", "aiohttp")))
        print(f"  harness generate phase alone: {row['harness']['generate_cpu_ms_per_req']:.3f} ms "
              f"(the rest is load, plan, compaction); mean completion {row['harness']['completion_tokens']:.1f} tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
