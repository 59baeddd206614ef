"""Frozen payloads passed to lifecycle hooks (one object per hook, so new fields break nobody)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunStarted:
    """A run is about to generate draws."""

    run_id: str
    run_dir: Path
    task: str
    model_id: str
    planned_draws: int
    resumed_draws: int = 0


@dataclass(frozen=True)
class SampleCompleted:
    """One draw was generated (or read from the cache) and recorded durably."""

    run_id: str
    task: str
    pool: str
    context_id: int
    sample_index: int
    text: str | None  # the item; None for a chat answer with no parsable item (draws column item_parsed false)
    cached: bool
    features: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFinished:
    """A run ended; ``status`` is ``complete``, ``interrupted``, ``budget`` or ``failed``."""

    run_id: str
    run_dir: Path
    status: str
    draws: int
    seconds: float
