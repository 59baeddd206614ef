"""Draws per second of a real ``mimic run`` over 1 endpoint vs 3 replicas of one model, each replica capped.

    .venv/bin/python benchmarks/scale_out.py                    # 1,200 draws, 50 ms latency, cap 8 per server
    .venv/bin/python benchmarks/scale_out.py --draws 600 --repeats 1

Three fake OpenAI servers run as child processes (so they do not share this process's GIL), each
with ``--latency-ms`` of latency and a concurrency cap (``max_concurrency``: requests beyond it wait
in the server's queue, as on a real server). The cap binds: the run's ``--concurrency`` is three
caps, so one server alone queues two thirds of what it is sent. Each measurement is a real run
(``harness.run.run_async``, as ``benchmarks/throughput.py`` does) of a plan of exactly ``--draws``
draws through the ``openai`` backend, once with ``base_url`` one server, once with ``base_url`` the
list of the three (``endpoint_concurrency`` defaults to an even share: one cap each). The rate is
draws / the generate phase's seconds; the ideal is servers x cap / latency. The two runs alternate
``--repeats`` times and the median of each is shown.

When ``benchmarks/ray_overhead.py`` exists, its ``measure_ray()`` (single process vs Ray with two
worker nodes) runs afterwards and its figures are printed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.throughput import harness_rate  # noqa: E402  (sets MIMIC_PLUGINS for the openai backend)

RAY_BENCHMARK = Path(__file__).with_name("ray_overhead.py")


def _median(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["req_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "all": [round(r["req_per_s"], 1) for r in runs]}


def measure_endpoints(draws: int, latency_ms: float, cap: int, repeats: int, servers: int = 3) -> dict:
    """Median draws/s over 1 endpoint and over ``servers`` endpoints, each server capped at ``cap``."""
    from harness import eventloop
    from harness.testing.fake_process import start_fake_server_process

    concurrency = servers * cap
    runs: dict[str, list[dict]] = {"one": [], "many": []}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        procs = [stack.enter_context(start_fake_server_process(latency_ms=latency_ms, max_concurrency=cap)) for _ in range(servers)]
        urls = [p.base_url for p in procs]
        for attempt in range(repeats):  # alternated, so a burst of load elsewhere hits both alike
            for name, base_url in (("one", urls[0]), ("many", urls)):
                workdir = Path(tmp) / f"{name}{attempt}"
                workdir.mkdir()
                runs[name].append(eventloop.run(harness_rate(base_url, draws, concurrency, 32, workdir)))
        peaks = [p.stats()["max_in_flight"] for p in procs]
    return {"draws": draws, "latency_ms": latency_ms, "cap": cap, "servers": servers, "concurrency": concurrency,
            "one": _median(runs["one"]), "many": _median(runs["many"]), "peak_in_flight": peaks,
            "ideal_one": cap / (latency_ms / 1000), "ideal_many": servers * cap / (latency_ms / 1000)}


def print_endpoints(row: dict) -> None:
    """The endpoints table: draws/s, the ideal, and the ratio."""
    one, many = row["one"]["req_per_s"], row["many"]["req_per_s"]
    print(f"\n{row['draws']} draws per run, {row['latency_ms']:g} ms latency, cap {row['cap']} requests per server, "
          f"run concurrency {row['concurrency']} (draws/s, median of {len(row['one']['all'])})")
    print(f"{'endpoints':>10} {'draws/s':>9} {'ideal':>8} {'of ideal':>9} {'CPU ms/draw':>12}  every run")
    for label, key, ideal in (("1", "one", row["ideal_one"]), (str(row["servers"]), "many", row["ideal_many"])):
        r = row[key]
        print(f"{label:>10} {r['req_per_s']:>9.1f} {ideal:>8.1f} {r['req_per_s'] / ideal:>9.3f} {r['cpu_ms_per_req']:>12.3f}  {r['all']}")
    print(f"ratio {row['servers']} endpoints / 1 endpoint: {many / one:.2f}x (target >= 2.7x); "
          f"peak requests in flight per server (queued included): {row['peak_in_flight']}")


def print_ray() -> None:
    """Run ``benchmarks/ray_overhead.py``'s ``measure_ray()`` and print what it returns."""
    spec = importlib.util.spec_from_file_location("ray_overhead", RAY_BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The endpoint half restricts the plugins to the openai backend's; the Ray half runs bookworld
    # on a scripted mimic and needs every built-in plugin (its workers inherit MIMIC_* variables).
    restricted = os.environ.pop("MIMIC_PLUGINS", None)
    try:
        figures = module.measure_ray()
    finally:
        if restricted is not None:
            os.environ["MIMIC_PLUGINS"] = restricted
    print("\nsingle process vs Ray (benchmarks/ray_overhead.py measure_ray()):")
    if isinstance(figures, dict):
        for name, value in figures.items():
            print(f"  {name}: {value:.3f}" if isinstance(value, float) else f"  {name}: {value}")
    else:
        print(f"  {figures}")


def main(argv: list[str] | None = None) -> int:
    """Measure 1 vs 3 endpoints (and Ray, where its benchmark exists); print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1200)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--cap", type=int, default=8, help="requests each fake server serves at once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print the endpoints figures as one JSON object")
    parser.add_argument("--no-ray", action="store_true", help="skip benchmarks/ray_overhead.py even where it exists")
    args = parser.parse_args(argv)
    if min(args.draws, args.cap, args.repeats) < 1 or args.latency_ms <= 0:
        print("error: --draws, --cap and --repeats must be >= 1 and --latency-ms > 0 (write e.g. --draws 600)", file=sys.stderr)
        return 2
    row = measure_endpoints(args.draws, args.latency_ms, args.cap, args.repeats)
    if args.json:
        print(json.dumps(row))
    print_endpoints(row)
    if RAY_BENCHMARK.exists() and not args.no_ray:
        print_ray()
    elif not args.no_ray:
        print(f"\n{RAY_BENCHMARK.relative_to(ROOT)} does not exist yet: no Ray figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
