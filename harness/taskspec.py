"""The typed task spec. ``harness.tasks`` parses and validates YAML into these objects.

Everything a task references (features, worlds, controls, reference sources) is named by its
registry name plus an options mapping: no code in YAML.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ComponentRef:
    """A registry name plus the options passed to its factory."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureRef:
    """A feature instance: its column name in tables (``feat_<name>``), extractor type and options."""

    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str:
        """Column holding this feature in the reference and draws tables."""
        return f"feat_{self.name}"


@dataclass(frozen=True)
class ProxySpec:
    """The feature the operator controls on and the target values it conditions on."""

    feature: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class WorldSpec:
    """The world R is drawn from, and K: the number of draws per item beyond the first."""

    type: str
    k: int = 8
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ControlSpec:
    """A control method: ``none``, ``prompt``, ``filter``, ``reward`` (k), ``best-of-n`` (n), ``tilt`` (beta)."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderSpec:
    """How reference items become text and prompts (Jinja templates).

    ``exemplar`` renders one reference row (its columns are template variables). A prompt is
    ``preamble`` + exemplars joined by ``separator`` + ``separator`` + a prefix: ``open_prefix``
    for the unconditioned pool, ``prompt_prefix`` (with ``value`` = the proxy target) for a
    ``prompt`` pool. The generated item is prefix + completion cut at the first ``stop`` string.

    The ``chat_*`` templates (YAML ``render.chat: {system, user, condition}``) render the same
    context as a conversation for chat models (:mod:`harness.chat.messages`); empty means the default
    derived from ``exemplar``.
    """

    exemplar: str
    separator: str = "\n\n"
    preamble: str = ""
    open_prefix: str = ""
    prompt_prefix: str = ""
    stop: tuple[str, ...] = ()
    chat_system: str = ""
    chat_user: str = ""
    chat_condition: str = ""


@dataclass(frozen=True)
class SamplingPlan:
    """C contexts x S samples per pool; k exemplars per context; the run's base seed."""

    contexts: int = 4
    samples_per_context: int = 8
    exemplars: int = 5
    seed: int = 0

    @property
    def draws_per_pool(self) -> int:
        """Number of draws generated for each pool."""
        return self.contexts * self.samples_per_context


@dataclass(frozen=True)
class GenerationSpec:
    """Sampling settings for the mimic (temperature 1 and top_p 1 make it an honest mimic)."""

    max_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class TaskSpec:
    """A validated task definition."""

    name: str
    version: int
    description: str
    reference: ComponentRef
    render: RenderSpec
    features: tuple[FeatureRef, ...]
    proxy: ProxySpec
    latents: tuple[str, ...]
    controls: tuple[ControlSpec, ...]
    plan: SamplingPlan = field(default_factory=SamplingPlan)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    world: WorldSpec | None = None
    betas: tuple[float, ...] = ()  # the tilt@beta sweep
    context_sizes: tuple[int, ...] = ()  # the synchronisation curve (numbers of exemplars)
    source_path: Path | None = None

    def feature(self, name: str) -> FeatureRef:
        """Look up a feature instance by name."""
        for ref in self.features:
            if ref.name == name:
                return ref
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the manifest records this)."""
        data = asdict(self)
        data["source_path"] = str(self.source_path) if self.source_path else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        """Rebuild a TaskSpec from :meth:`to_dict` (a manifest's ``task``)."""
        world, render, source = data.get("world"), data["render"], data.get("source_path")
        return cls(
            name=data["name"], version=int(data.get("version", 1)), description=data.get("description", ""),
            reference=ComponentRef(**data["reference"]), render=RenderSpec(**{**render, "stop": tuple(render.get("stop", ()))}),
            features=tuple(FeatureRef(**f) for f in data["features"]),
            proxy=ProxySpec(data["proxy"]["feature"], tuple(data["proxy"]["values"])), latents=tuple(data.get("latents", ())),
            controls=tuple(ControlSpec(**c) for c in data.get("controls", ())), plan=SamplingPlan(**data.get("plan", {})),
            generation=GenerationSpec(**data.get("generation", {})), world=WorldSpec(**world) if world else None,
            betas=tuple(data.get("betas", ())), context_sizes=tuple(data.get("context_sizes", ())),
            source_path=Path(source) if source else None,
        )
