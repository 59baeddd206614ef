"""Draws per second of one plan run in a single process vs sharded over Ray with two worker nodes.

    .venv/bin/python benchmarks/ray_overhead.py                 # bookworld -n 120 (840 draws), 20 ms of CPU each
    .venv/bin/python benchmarks/ray_overhead.py --draws 60 --burn-ms 10

The model is the ``scripted`` backend with a callable that burns ``--burn-ms`` of CPU per draw (a
busy loop on this thread's CPU clock) before echoing the prompt's last line: CPU-bound work, which
one process does one draw at a time, so a second worker process on the second core can help.
Both runs are real ``mimic run``s of the bookworld task (no cache, no estimators) with the same
plan; the Ray run joins a fresh local cluster of two nodes of one CPU each (separate raylets,
:class:`harness.testing.ray_cluster.LocalRayCluster`, started before and not timed). The rate is
draws / the generate phase's wall seconds, which for Ray include joining the cluster, starting the
two workers (each loads the plugins and the task) and merging the shards. Ray's overhead per draw
is that wall time beyond the work, divided by the draws: ``(wall - draws x burn / workers) / draws``;
the same figure for the single process (``workers`` = 1) is the harness's own cost per draw. A second
Ray run of a third of the plan splits Ray's wall time into a fixed part and a marginal part per draw.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def burning_echo(burn_s: float) -> Callable:
    """A scripted model's ``fn``: burn ``burn_s`` of this thread's CPU, then echo the prompt's last line.

    A closure, so Ray ships it by value: a worker need not import this file.
    """

    def burn(request) -> str:
        until = time.thread_time() + burn_s
        while time.thread_time() < until:
            pass
        payload = str(request.prompt_payload())
        return payload.splitlines()[-1] if payload else ""

    return burn


def _run(out: Path, draws: int, burn_ms: float, **execution) -> dict:
    from harness.modelspec import ModelSpec
    from harness.plugins import build_registries
    from harness.run import RunConfig, run
    from harness.store import load_draws

    spec = ModelSpec("scripted", "burn", {"fn": burning_echo(burn_ms / 1000)})
    config = RunConfig(model=spec, task="bookworld", out_dir=out, samples=draws, use_cache=False, estimators=(),
                       progress="off", summary_to="off", **execution)
    result = run(config, build_registries())
    if result.status != "complete":
        raise RuntimeError(f"the {execution or 'local'} run ended {result.status}: {result.message}")
    table = load_draws(result.run_dir).drop("cached").sort("pool", "n_exemplars", "context_id", "sample_index")
    return {"seconds": result.timings["generate"], "draws": result.done, "table": table}


def measure_ray(draws: int = 120, burn_ms: float = 20.0, nodes: int = 2) -> dict:
    """Single process vs Ray with ``nodes`` one-CPU nodes on this machine: draws/s, ratio, overhead per draw.

    ``draws`` is the plan's ``-n`` (draws per pool and context size); the figures count every draw the
    runs made. Ray also runs a plan a third the size, so its wall time splits into a fixed part (join
    the cluster, start the workers) and a part per draw (the slope between the two sizes). The draws
    tables of the single-process and the Ray run are checked to be equal.
    """
    from harness.testing.ray_cluster import LocalRayCluster

    with tempfile.TemporaryDirectory() as tmp:
        local = _run(Path(tmp) / "local", draws, burn_ms)
        with LocalRayCluster(nodes=nodes, cpus_per_node=1) as cluster:
            small = _run(Path(tmp) / "ray-small", max(1, draws // 3), burn_ms, executor="ray", ray_address=cluster.address)
            sharded = _run(Path(tmp) / "ray", draws, burn_ms, executor="ray", ray_address=cluster.address)
    if not sharded["table"].equals(local["table"]):
        raise RuntimeError("the Ray run's draws differ from the single-process run's")
    n, burn = local["draws"], burn_ms / 1000
    local_rate, ray_rate = n / local["seconds"], n / sharded["seconds"]
    slope = (sharded["seconds"] - small["seconds"]) / (n - small["draws"])  # Ray's wall seconds per extra draw
    return {
        "draws": n, "burn_ms_per_draw": burn_ms, "ray_nodes": nodes,
        "single_process_s": round(local["seconds"], 3), "ray_s": round(sharded["seconds"], 3),
        "single_process_draws_per_s": round(local_rate, 1), "ray_draws_per_s": round(ray_rate, 1),
        "ray_vs_single_ratio": round(ray_rate / local_rate, 2),
        "single_process_overhead_ms_per_draw": round(1000 * (local["seconds"] - n * burn) / n, 2),
        "ray_overhead_ms_per_draw": round(1000 * (sharded["seconds"] - n * burn / nodes) / n, 2),
        "ray_fixed_s": round(sharded["seconds"] - slope * n, 2),  # joining the cluster, starting the workers
        "ray_marginal_overhead_ms_per_draw": round(1000 * (slope - burn / nodes), 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Print :func:`measure_ray`'s figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=120, help="the plan's -n: draws per pool and context size")
    parser.add_argument("--burn-ms", type=float, default=20.0, help="CPU milliseconds of work per draw")
    parser.add_argument("--nodes", type=int, default=2, help="Ray nodes of one CPU each")
    args = parser.parse_args(argv)
    print(json.dumps(measure_ray(args.draws, args.burn_ms, args.nodes), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
