"""Money and tokens of a run: price tables, usage so far, and the budget that stops a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UsageError


@dataclass(frozen=True)
class Price:
    """US dollars per 1M prompt and completion tokens."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Cost of the given token counts."""
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


def load_prices(path: str | Path) -> dict[str, Price]:
    """Read a price table: YAML ``model_id: {prompt: USD per 1M, completion: USD per 1M}``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"price file {path} does not exist", "pass a YAML file: MODEL: {prompt: 0.15, completion: 0.6}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"price file {path} is not valid YAML: {first}", "fix its syntax") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(f"price file {path} is not a mapping of models to prices", "write MODEL: {prompt: 0.15, completion: 0.6}")
    prices = {}
    for model, entry in data.items():
        try:
            prompt, completion = float(entry["prompt"]), float(entry["completion"])
        except (TypeError, KeyError, ValueError):
            raise UsageError(
                f"price file {path}: entry {model!r} needs numeric prompt and completion prices",
                "write MODEL: {prompt: 0.15, completion: 0.6} (USD per 1M tokens)",
            ) from None
        if prompt < 0 or completion < 0:
            raise UsageError(f"price file {path}: entry {model!r} has a negative price", "use prices of 0 or more")
        prices[str(model)] = Price(prompt, completion)
    return prices


@dataclass
class Usage:
    """Requests, tokens and cost so far (one run, one pool of it, or one phase)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    requests: int = 0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int, completion_tokens: int, price: Price | None, requests: int = 1) -> None:
        """Count one answered request (or ``requests`` of them)."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.requests += requests
        if price is not None:
            self.cost += price.cost(prompt_tokens, completion_tokens)

    def merged(self, other: Usage) -> Usage:
        """The sum of two usages."""
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cost + other.cost, self.requests + other.requests)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "cost": round(self.cost, 6),
                "requests": self.requests}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        """Inverse of :meth:`to_dict` (missing keys are 0)."""
        data = data or {}
        return cls(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0), float(data.get("cost") or 0.0),
                   int(data.get("requests") or 0))


@dataclass(frozen=True)
class Budget:
    """The most a run may spend: tokens, and dollars under a price."""

    max_tokens: int | None = None
    max_cost: float | None = None

    def reached(self, usage: Usage) -> str | None:
        """Which budget the spending so far has reached (a message), or None."""
        if self.max_tokens is not None and usage.tokens >= self.max_tokens:
            return f"token budget reached ({usage.tokens:,} of {self.max_tokens:,} tokens)"
        if self.max_cost is not None and usage.cost >= self.max_cost:
            return f"cost budget reached (${usage.cost:.4f} of ${self.max_cost:.4f})"
        return None


def draw_usage(rows: list[dict[str, Any]], price: Price | None) -> dict[str, Any]:
    """Requests, tokens and cost spent on draws, per pool: draws answered by the cache cost nothing."""
    total, pools = Usage(), {}
    for row in rows:
        if row.get("cached"):
            continue
        usage = pools.setdefault(row["pool"], Usage())
        for u in (total, usage):
            u.add(int(row.get("prompt_tokens") or 0), int(row.get("completion_tokens") or 0), price)
    return {**total.to_dict(), "pools": {p: u.to_dict() for p, u in sorted(pools.items())}}
