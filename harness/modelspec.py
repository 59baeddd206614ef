"""Model specs: ``backend:model`` on the command line, with options from the spec or a file.

Forms accepted::

    gguf:default
    openai:gpt-4o-mini?base_url=http://127.0.0.1:8000/v1&api_key_env=MY_KEY
    lm-eval:hf?pretrained=EleutherAI/pythia-70m
    my-model                      # a name defined in a --model-config YAML/TOML file

Options whose names look secret (``api_key``, ``token``...) are kept in memory only:
:meth:`ModelSpec.public` drops them, and every file the harness writes uses ``public()``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

from harness.errors import ModelSpecError

_SECRET_NAME = re.compile(r"(api_?key|token|secret|password|authorization|^headers?$)(?!_env)", re.I)
_SPEC = re.compile(r"^(?P<backend>[A-Za-z0-9_.-]+):(?P<model>[^?]*)(\?(?P<query>.*))?$")


def is_secret_option(name: str) -> bool:
    """True for option names that carry credentials (``api_key``), not their env-var names."""
    return bool(_SECRET_NAME.search(name))


def _coerce(value: str) -> Any:
    """Turn query-string text into bool/int/float where it clearly is one."""
    lowered = value.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class ModelSpec:
    """A backend name, a model name and backend options."""

    backend: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # a display name (from a config file entry)

    def public(self) -> dict[str, Any]:
        """The spec as data with every secret option removed (safe to write anywhere)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "options": {k: v for k, v in sorted(self.options.items()) if not is_secret_option(k)},
            "label": self.label,
        }

    @property
    def model_id(self) -> str:
        """A stable, secret-free identifier: ``backend:model`` plus a hash of public options."""
        public = self.public()["options"]
        base = f"{self.backend}:{self.model}"
        if not public:
            return base
        digest = hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()
        return f"{base}#{digest[:8]}"

    @property
    def display_name(self) -> str:
        """What leaderboards show: the label, else ``backend:model``."""
        return self.label or f"{self.backend}:{self.model}"

    def option(self, name: str, default: Any = None) -> Any:
        """Return one option, or ``default``."""
        return self.options.get(name, default)


def load_model_config(path: str | Path) -> dict[str, ModelSpec]:
    """Read named model specs from a YAML or TOML file (a ``models:`` mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"model config {path} does not exist", "pass an existing YAML or TOML file")
    try:
        raw_text = path.read_text(encoding="utf-8")
        data = tomllib.loads(raw_text) if path.suffix == ".toml" else yaml.safe_load(raw_text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelSpecError(f"model config {path} is not valid: {first}", "fix the file's syntax") from None
    models = (data or {}).get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not models:
        raise ModelSpecError(
            f"model config {path} has no 'models' mapping",
            "write models: {NAME: {backend: openai, model: ..., ...}}",
        )
    specs = {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or "backend" not in entry:
            raise ModelSpecError(f"model config {path}: models.{name} needs a 'backend' field", "add backend: gguf|openai|...")
        entry = dict(entry)
        backend = str(entry.pop("backend"))
        model = str(entry.pop("model", "default"))
        specs[str(name)] = ModelSpec(backend, model, entry, label=str(name))
    return specs


def parse_model_spec(text: str, config: dict[str, ModelSpec] | None = None, **extra_options: Any) -> ModelSpec:
    """Parse ``backend:model?k=v`` (or a name from ``config``) into a :class:`ModelSpec`."""
    text = (text or "").strip()
    if config and text in config:
        spec = config[text]
        return ModelSpec(spec.backend, spec.model, {**spec.options, **extra_options}, spec.label)
    match = _SPEC.match(text)
    if not match and config is not None:  # a bare name the user meant to look up in --model-config
        raise ModelSpecError(
            f"model {text!r} is neither defined in the model config (names: {', '.join(sorted(config)) or 'none'}) "
            "nor of the form backend:model",
            "use one of the config's names, or write backend:model (see `mimic models`)",
        )
    if not match or not match.group("model"):
        raise ModelSpecError(
            f"model spec {text!r} is not of the form backend:model",
            "write e.g. gguf:default or openai:gpt-4o-mini; see `mimic models`",
        )
    options: dict[str, Any] = {}
    for key, value in parse_qsl(match.group("query") or "", keep_blank_values=True, strict_parsing=False):
        options[key] = _coerce(value)
    options.update(extra_options)
    return ModelSpec(match.group("backend"), match.group("model"), options)
