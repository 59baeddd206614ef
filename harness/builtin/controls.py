"""Plugin ``builtin-controls``: registers the control methods of :mod:`harness.controls`."""

from __future__ import annotations

from harness.controls import create_best_of_n, create_filter, create_none, create_prompt, create_reward, create_tilt
from harness.hookspecs import hookimpl


@hookimpl
def register_controls(register):
    """Register the built-in control methods."""
    register("none", create_none, "the unconditioned pool: P(X)")
    register("prompt", create_prompt, "the proxy value in the prompt: P(X | Z=z) by Bayesian conditioning")
    register("filter", create_filter, "none-pool draws whose proxy equals the target: exact conditioning")
    register("reward", create_reward, "keep draws whose first k world draws all succeed (reward@k)")
    register("best-of-n", create_best_of_n, "the best-scoring draw of each n consecutive draws")
    register("tilt", create_tilt, "reweight the pool by exp(r/beta): the KL-regularised RL optimum")
