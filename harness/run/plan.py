"""The plan phase: every draw of a run (pools x contexts x samples, and the synchronisation sizes)."""

from __future__ import annotations

import math
from typing import Any

from harness.chat.renderings import COMPLETION
from harness.errors import UsageError
from harness.prompts import PlannedDraw, plan_draws
from harness.run.config import RunPlan
from harness.run.load import Loaded


def plan_phase(config: RunPlan, loaded: Loaded, seed: int, rendering: str = COMPLETION) -> list[PlannedDraw]:
    """Plan every draw in ``rendering``: pools x contexts x samples; ``-n`` caps the draws per pool (and context size)."""
    plan = loaded.task.plan
    contexts, per_context = config.contexts, config.samples_per_context
    if config.samples is not None:
        n = config.samples
        if contexts is None and per_context is None:
            per_context = min(plan.samples_per_context, n)
            contexts = math.ceil(n / per_context)
        elif per_context is None:
            per_context = math.ceil(n / contexts)
        elif contexts is None:
            contexts = math.ceil(n / per_context)
        elif contexts * per_context < n:
            raise UsageError(f"-n {n} is more than --contexts {contexts} x --samples-per-context {per_context}",
                             "drop one of them, or raise it")
    task = loaded.task
    planned = plan_draws(task, loaded.reference, seed=seed, pools=loaded.pools, n_exemplars=config.n_exemplars,
                         contexts=contexts, samples_per_context=per_context, rendering=rendering)
    main_k = task.plan.exemplars if config.n_exemplars is None else config.n_exemplars
    for k in task.context_sizes:  # the synchronisation curve: `none` draws at each context size
        if k != main_k or "none" not in loaded.pools:
            planned += plan_draws(task, loaded.reference, seed=seed, pools=["none"], n_exemplars=k,
                                  contexts=contexts, samples_per_context=per_context, rendering=rendering)
    if config.samples is not None:  # keep the first n draws (lowest contexts) of each pool and context size
        ordered = sorted(planned, key=lambda d: (d.pool, d.n_exemplars, d.context_id, d.sample_index))
        kept, seen = set(), {}
        for d in ordered:
            group = (d.pool, d.n_exemplars)
            if seen.get(group, 0) < config.samples:
                seen[group] = seen.get(group, 0) + 1
                kept.add(d.key)
        planned = [d for d in planned if d.key in kept]
    # Context-major: the pools (and renderings) of one context follow each other, so their groups are
    # in flight together and a backend that caches prompt prefixes decodes their shared exemplars once.
    # Nothing reads this order but the generate phase: rows are logged as draws finish, and a resumed
    # run skips the keys already logged.
    planned.sort(key=lambda d: (d.n_exemplars, d.context_id, d.pool, d.sample_index))
    keys = [d.key for d in planned]
    if len(set(keys)) != len(keys):
        raise UsageError("the plan has two draws with the same (task, pool, n_exemplars, context, sample) key",
                         "report this: harness.prompts.plan_draws must number contexts uniquely per pool")
    return planned


def plan_summary(main_k: int, planned: list[PlannedDraw]) -> dict[str, Any]:
    """The effective plan for the manifest: pools, C contexts x S samples at the main context size, all sizes,
    and the rendering(s) the draws were made in (``completion``, ``chat``, ``chat+prefill``; comma-joined if several)."""
    main = [d for d in planned if d.n_exemplars == main_k]
    return {"rendering": ",".join(sorted({d.rendering for d in planned})) or COMPLETION,
            "pools": sorted({d.pool for d in planned}), "contexts": len({d.context_id for d in main}),
            "samples_per_context": max((d.sample_index for d in main), default=-1) + 1, "n_exemplars": main_k,
            "context_sizes": sorted({d.n_exemplars for d in planned}), "draws": len(planned)}
