"""Throughput and client CPU per request of each transport against the fake server (in a child process).

    python plugins/mimic-openai/benchmarks/http_client.py --latency-ms 50 --concurrency 64 --requests 3000

Ideal throughput is concurrency / latency. CPU per request is this process's CPU time divided by
the requests sent, so it does not depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from harness import GenerationRequest, ModelSpec
from harness.testing import start_fake_server_process

from mimic_openai.backend import OpenAIMimic
from mimic_openai.config import parse_config


async def measure(base_url: str, transport: str, concurrency: int, n: int, max_tokens: int) -> dict:
    """Send ``n`` requests through one mimic; return req/s and client CPU ms per request."""
    spec = ModelSpec("openai", "bench", {"base_url": base_url, "transport": transport, "concurrency": concurrency})
    mimic = OpenAIMimic(parse_config(spec))
    prompt = "Review: a quiet, funny book about a lighthouse keeper.\nRating: 4\n\nReview:"
    requests = [GenerationRequest(prompt, max_tokens=max_tokens, seed=i, sample_index=i) for i in range(n)]
    try:
        await mimic.generate(requests[: min(n, 2 * concurrency)])  # open the connections first
        wall, cpu = time.perf_counter(), time.process_time()
        await mimic.generate(requests)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await mimic.aclose()
    return {"transport": transport, "requests": n, "req_per_s": round(n / wall, 1), "cpu_ms_per_req": round(1000 * cpu / n, 3)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON line per transport."""
    parser = argparse.ArgumentParser(prog="http_client.py", description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--transport", action="append", choices=["aiohttp", "sdk"], help="repeatable; default both")
    args = parser.parse_args(argv)
    ideal = args.concurrency / (args.latency_ms / 1000) if args.latency_ms > 0 else None
    with start_fake_server_process(latency_ms=args.latency_ms) as server:
        for transport in args.transport or ["aiohttp", "sdk"]:
            row = asyncio.run(measure(server.base_url, transport, args.concurrency, args.requests, args.max_tokens))
            if ideal:
                row["ideal_req_per_s"] = round(ideal, 1)
                row["fraction_of_ideal"] = round(row["req_per_s"] / ideal, 3)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
