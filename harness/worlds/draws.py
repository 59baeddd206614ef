"""Build a task's world and draw R for many items at once.

Seeds are the caller's (``docs/contracts.md``: world draw j of a draw uses
``derive_seed(run_seed, "world", task, pool, context_id, sample_index, j)``).
"""

from __future__ import annotations

import numpy as np

from harness.errors import EXIT_RUNTIME, HarnessError, PluginError
from harness.factories import create_component
from harness.protocols import BuildContext, World
from harness.registry import Registries
from harness.taskspec import TaskSpec


class WorldError(HarnessError):
    """A world raised or broke its contract while drawing (a plugin or backend problem, not R=0)."""

    exit_code = EXIT_RUNTIME


def build_world(task: TaskSpec, registries: Registries, ctx: BuildContext) -> World | None:
    """The task's world, or None when the task defines none."""
    if task.world is None:
        return None
    world = create_component(registries.worlds, task.world.type, task.world.options, ctx, where=f"task {task.name}: world")
    if not isinstance(world, World):
        raise PluginError(f"world {task.world.type!r} built an object without an async draw(texts, seeds) method",
                          "fix the plugin that registers it")
    return world


async def world_matrix(world: World, texts: list[str], seeds: list[list[int]]) -> list[list[bool]]:
    """Draw R for every (text, seed): row i holds one bool per seed of ``seeds[i]``.

    The world is called ONCE with the flattened batch, so it can share work across draws (one
    sandbox per item, one judge batch). A world that raises is a :class:`WorldError` naming it;
    a world decides itself which failures of an item mean R=0.
    """
    if len(texts) != len(seeds):
        raise ValueError(f"world_matrix: {len(texts)} texts but {len(seeds)} seed lists")
    flat_texts: list[str] = []
    flat_seeds: list[int] = []
    for i, (text, row) in enumerate(zip(texts, seeds)):
        if not isinstance(text, str):
            raise WorldError(f"item {i} has no text ({text!r}) to draw R for", "drop rows with a null text first")
        if len(row) == 0:
            raise ValueError(f"world_matrix: item {i} has no seeds (need 1+K)")
        flat_texts.extend([text] * len(row))
        flat_seeds.extend(int(s) for s in row)
    if not flat_texts:
        return [[] for _ in texts]
    name = type(world).__name__
    try:
        flat = await world.draw(flat_texts, flat_seeds)
    except HarnessError:
        raise
    except Exception as exc:
        raise WorldError(f"world {name} failed drawing R for {len(texts)} items: {type(exc).__name__}: {exc}",
                         "fix the world's options or plugin; its traceback shows with --debug") from exc
    flat = list(flat)
    if len(flat) != len(flat_texts):
        raise WorldError(f"world {name} returned {len(flat)} draws for {len(flat_texts)} requested", "fix the world plugin")
    if not all(isinstance(r, (bool, np.bool_)) for r in flat):
        bad = next(r for r in flat if not isinstance(r, (bool, np.bool_)))
        raise WorldError(f"world {name} returned {bad!r}, not a bool", "a world's draw must return booleans")
    out, start = [], 0
    for row in seeds:
        out.append([bool(r) for r in flat[start:start + len(row)]])
        start += len(row)
    return out


async def close_world(world: World | None) -> None:
    """Release what a world holds (a judge model), when it has an ``aclose``."""
    closer = getattr(world, "aclose", None)
    if closer is not None:
        await closer()


__all__ = ["WorldError", "build_world", "close_world", "world_matrix"]
