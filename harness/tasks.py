"""Task files: YAML -> validated :class:`harness.taskspec.TaskSpec`.

A task file is plain data (``yaml.safe_load``); every mistake is a :class:`TaskError` whose one
line names the file and the field, e.g. ``tasks/x.yaml: field `plan.contexts` must be a positive
integer, got 'four' (fix: ...)``. Layout (see ``tasks/bookworld.yaml`` for a full example)::

    name: bookworld            # defaults to the file name
    version: 1
    description: ...
    reference: {type: bookworld, n: 2000, seed: 0}          # type + source options
    render: {exemplar: "Rating: {{ rating }}\\n...", separator: "\\n\\n###\\n\\n",
             preamble: "", open_prefix: "Rating:", prompt_prefix: "Rating: {{ value }}\\n", stop: ["###"]}
    # optional, for chat models (defaults: harness/chat/messages.py):
    #   render.chat: {system: "...", user: "... {{ examples }} ... {{ condition }}", condition: "Rate it {{ value }}."}
    features: {rating: {type: header_field, field: Rating, numeric: true}, ...}   # name -> type + options
    proxy: {feature: rating, values: [5, 1]}
    latents: [genre, helping]
    world: {type: bookworld-readers, k: 8}                  # type, K extra draws, options
    controls: [none, prompt, filter, reward@1, best-of-4, tilt@0.1, {type: reward, k: 8}]
    betas: [0.05, 0.2, 1.0]                                 # optional: the tilt sweep (for a bare `tilt`)
    context_sizes: [0, 1, 2, 4]                             # optional: the synchronisation curve
    plan: {contexts: 4, samples_per_context: 8, exemplars: 5, seed: 0}
    generation: {max_tokens: 96, temperature: 1.0, top_p: 1.0}
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from harness.errors import TaskError
from harness.paths import builtin_tasks_dir, display_path, local_tasks_dir
from harness.registry import Registries
from harness.taskspec import (
    ComponentRef,
    ControlSpec,
    FeatureRef,
    GenerationSpec,
    ProxySpec,
    RenderSpec,
    SamplingPlan,
    TaskSpec,
    WorldSpec,
)
from harness.values import target_label

TOP_LEVEL = ("name", "version", "description", "reference", "render", "features", "proxy", "latents",
             "controls", "plan", "generation", "world", "betas", "context_sizes")
REQUIRED = ("reference", "render", "features", "proxy", "controls")
RENDER_KEYS = ("exemplar", "separator", "preamble", "open_prefix", "prompt_prefix", "stop", "chat")
CHAT_KEYS = ("system", "user", "condition")
# What the chat templates see (harness.chat.messages fills them): the task's preamble, the rendered
# exemplars (``examples``: joined by the separator as the document shows them; ``exemplars``: a
# list), and for a ``prompt:<v>`` pool the condition in words; the condition template sees the target.
CHAT_VARIABLES = {
    "system": {"preamble", "n_examples"},
    "user": {"preamble", "examples", "exemplars", "n_examples", "separator", "condition"},
    "condition": {"value", "prefix"},
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FEATURE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def template_env() -> SandboxedEnvironment:
    """The one Jinja environment for task templates: sandboxed, strict, newlines kept as written."""
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def template_variables(source: str) -> set[str]:
    """Names a template reads from its context (columns, ``value``)."""
    return set(meta.find_undeclared_variables(template_env().parse(source)))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (a silent overwrite hides typos)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def task_folders() -> tuple[Path, Path]:
    """Where bare task names are looked up, in order: ``./tasks``, then the built-in tasks."""
    return local_tasks_dir(), builtin_tasks_dir()


def list_tasks() -> list[Path]:
    """Task files in ``./tasks`` then the built-in ones (a name found in both: the local one)."""
    found: dict[str, Path] = {}
    for folder in task_folders():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return sorted(found.values(), key=lambda p: p.stem)


@dataclass(frozen=True)
class TaskFile:
    """A task file a bare name can reach: ``origin`` is ``local`` (``./tasks``) or ``built-in``."""

    name: str
    path: Path
    origin: str
    shadowed: bool = False  # a built-in task that a local file of the same name hides


def task_files() -> list[TaskFile]:
    """Every local, then every built-in task file (run from the checkout, ``./tasks`` is the built-in folder)."""
    local, builtin = task_folders()
    origins = [("built-in", builtin)]
    if local.is_dir() and (not builtin.is_dir() or not local.samefile(builtin)):
        origins.insert(0, ("local", local))
    files: list[TaskFile] = []
    for origin, folder in origins:
        if folder.is_dir():
            local_names = {f.name for f in files}
            files += [TaskFile(p.stem, p, origin, shadowed=p.stem in local_names) for p in sorted(folder.glob("*.yaml"))]
    return files


def resolve_task_path(name_or_path: str | Path) -> Path:
    """A file path as given, or ``tasks/<name>.yaml`` under the working directory, then the built-in task."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.parent != Path(".") or path.is_file():
        if not path.is_file():
            raise TaskError(f"task file {text} does not exist", "check the path, or pass a task name from `tasks/`")
        return path
    for folder in task_folders():
        candidate = folder / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(p.stem for p in list_tasks()) or "none found"
    raise TaskError(f"unknown task {text!r} (known: {known})", "pass a known task name or a path to a task YAML file")


def load_task(name_or_path: str | Path, registries: Registries | None = None) -> TaskSpec:
    """Read, validate and return a task; with ``registries``, every component name and feature option is checked."""
    path = resolve_task_path(name_or_path)
    where = display_path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{where}: file is not valid UTF-8 (byte {exc.start})", "save the task file as UTF-8") from None
    try:
        data = yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TaskError(f"{where}: YAML syntax error{at}: {problem}", "fix the YAML (check indentation, colons and quotes)") from None
    spec = parse_task(data, where, path, default_name=path.stem)
    if registries is not None:
        check_names(spec, registries, where)
    return spec


class _Checker:
    """Field validators that raise one-line TaskErrors naming the file and the field."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, field: str, problem: str, hint: str) -> TaskError:
        """The error for one field (returned, so callers `raise` it and linters see the flow)."""
        return TaskError(f"{self.where}: field `{field}` {problem}", hint)

    def mapping(self, value: Any, field: str, allowed: tuple[str, ...] | None = None) -> dict:
        """A mapping whose keys (when ``allowed`` is given) are all known."""
        if not isinstance(value, Mapping):
            raise self.fail(field, f"must be a mapping, got {_show(value)}", f"write `{field}:` as `key: value` lines")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.fail(f"{field}.{key}", "is not a known key", f"use one of: {', '.join(allowed)}")
        return dict(value)

    def string(self, value: Any, field: str, allow_empty: bool = True) -> str:
        """A string."""
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            what = "a string" if allow_empty else "a non-empty string"
            raise self.fail(field, f"must be {what}, got {_show(value)}", "quote the text in the YAML file")
        return value

    def integer(self, value: Any, field: str, minimum: int, hint: str = "") -> int:
        """An int (not a bool) >= ``minimum``."""
        word = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(field, f"must be {word}, got {_show(value)}", hint or f"write a whole number >= {minimum}")
        return value

    def number(self, value: Any, field: str, low: float, high: float = math.inf, low_open: bool = False) -> float:
        """A finite number in the given range."""
        number = _as_float(value)
        ok = number is not None and math.isfinite(number) and (number > low if low_open else number >= low) and number <= high
        if not ok:
            rng = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high != math.inf else "")
            raise self.fail(field, f"must be a number {rng}, got {_show(value)}", f"write a number {rng}")
        return float(number)

    def template(self, value: Any, field: str, allowed_vars: set[str] | None) -> str:
        """A Jinja template that parses and reads only ``allowed_vars`` (any, when None)."""
        text = self.string(value, field)
        try:
            names = template_variables(text)
        except jinja2.TemplateSyntaxError as exc:
            raise self.fail(field, f"is not a valid Jinja template (line {exc.lineno}: {exc.message})",
                            "fix the {{ }} / {% %} syntax") from None
        if allowed_vars is not None:
            extra = sorted(names - allowed_vars)
            if extra:
                allowed = ", ".join(sorted(allowed_vars)) or "none"
                raise self.fail(field, f"uses variable(s) {', '.join(extra)}, which it cannot see (allowed: {allowed})",
                                "remove them, or move them into render.exemplar")
        return text


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_float(value: Any) -> float | None:
    """Numbers, and numeric strings (PyYAML reads `1e-2` without a dot as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_task(data: Any, where: str, path: Path | None = None, default_name: str = "task") -> TaskSpec:
    """Validate already-loaded YAML data into a TaskSpec (``where`` names the file in errors)."""
    c = _Checker(where)
    if not isinstance(data, Mapping):
        raise TaskError(f"{where}: a task file must be a YAML mapping of fields, got {type(data).__name__}",
                        "start the file with `name:`, `reference:`, `render:` ... lines")
    for key in data:
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(str(key), TOP_LEVEL, n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"known fields: {', '.join(TOP_LEVEL)}"
            raise c.fail(str(key), "is not a known task field", hint)
    for key in REQUIRED:
        if key not in data or data[key] is None:
            raise c.fail(key, "is required but missing", f"add a `{key}:` section (see tasks/bookworld.yaml)")

    name = data.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise c.fail("name", f"must be a name of letters, digits, '-', '_' or '.', got {_show(name)}", "e.g. name: my-task")
    version = c.integer(data.get("version", 1), "version", 1)
    description = c.string(data.get("description", ""), "description")

    reference = _component(c, data["reference"], "reference")
    render = _render(c, data["render"], data.get("controls"))
    features = _features(c, data["features"])
    names = [f.name for f in features]
    proxy = _proxy(c, data["proxy"], names)
    latents = _latents(c, data.get("latents", []), names, proxy.feature)
    world = _world(c, data["world"]) if data.get("world") is not None else None
    betas = _float_list(c, data.get("betas", []), "betas")
    context_sizes = _int_list(c, data.get("context_sizes", []), "context_sizes")
    controls = _controls(c, data["controls"], world, betas)
    plan = _plan(c, data.get("plan", {}))
    generation = _generation(c, data.get("generation", {}))
    return TaskSpec(name=name, version=version, description=description, reference=reference, render=render,
                    features=features, proxy=proxy, latents=latents, controls=controls, plan=plan,
                    generation=generation, world=world, betas=betas, context_sizes=context_sizes,
                    source_path=path.resolve() if path is not None else None)


_TYPE_EXAMPLES = {"reference": "csv", "world": "bookworld-readers", "features": "length_words", "controls": "reward"}


def _component(c: _Checker, value: Any, field: str) -> ComponentRef:
    if isinstance(value, str):
        value = {"type": value}
    raw = c.mapping(value, field)
    if "type" not in raw:
        example = _TYPE_EXAMPLES.get(field.split(".")[0].split("[")[0], "name")
        raise c.fail(f"{field}.type", "is required but missing", f"name a registered type, e.g. type: {example}")
    kind = c.string(raw.pop("type"), f"{field}.type", allow_empty=False)
    if isinstance(raw.get("options"), Mapping) and len(raw) == 1:  # also accept {type, options: {...}}
        raw = dict(raw["options"])
    return ComponentRef(kind, raw)


def _render(c: _Checker, value: Any, controls: Any) -> RenderSpec:
    raw = c.mapping(value, "render", RENDER_KEYS)
    if "exemplar" not in raw:
        raise c.fail("render.exemplar", "is required but missing", "write a Jinja template over the reference columns")
    exemplar = c.template(raw["exemplar"], "render.exemplar", None)  # columns are checked in load_reference
    if not exemplar.strip():
        raise c.fail("render.exemplar", "must not be empty", "write a Jinja template over the reference columns")
    separator = c.string(raw.get("separator", "\n\n"), "render.separator")
    preamble = c.template(raw.get("preamble", ""), "render.preamble", set())
    open_prefix = c.template(raw.get("open_prefix", ""), "render.open_prefix", set())
    prompt_prefix = c.template(raw.get("prompt_prefix", ""), "render.prompt_prefix", {"value"})
    uses_prompt = isinstance(controls, list) and any(
        (x == "prompt") or (isinstance(x, Mapping) and x.get("type") == "prompt") for x in controls)
    if uses_prompt and "value" not in template_variables(prompt_prefix):
        raise c.fail("render.prompt_prefix", "must contain {{ value }} when the `prompt` control is used",
                     "e.g. prompt_prefix: \"Rating: {{ value }}\\n\"")
    stop_raw = raw.get("stop", [separator] if separator else [])
    stops = [stop_raw] if isinstance(stop_raw, str) else stop_raw
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise c.fail("render.stop", f"must be a non-empty string or a list of them, got {_show(stop_raw)}",
                     "e.g. stop: [\"###\"]")
    chat = _chat(c, raw.get("chat", {}))
    return RenderSpec(exemplar=exemplar, separator=separator, preamble=preamble, open_prefix=open_prefix,
                      prompt_prefix=prompt_prefix, stop=tuple(stops), chat_system=chat.get("system", ""),
                      chat_user=chat.get("user", ""), chat_condition=chat.get("condition", ""))


def _chat(c: _Checker, value: Any) -> dict[str, str]:
    """``render.chat``: optional system / user / condition templates (each reads only its own variables)."""
    raw = c.mapping({} if value is None else value, "render.chat", CHAT_KEYS)
    out = {key: c.template(raw[key], f"render.chat.{key}", CHAT_VARIABLES[key]) for key in CHAT_KEYS if key in raw}
    if "user" in out and "examples" not in template_variables(out["user"]) and "exemplars" not in template_variables(out["user"]):
        raise c.fail("render.chat.user", "shows no examples (it reads neither {{ examples }} nor {{ exemplars }})",
                     "put {{ examples }} where the examples go")
    return out


def _features(c: _Checker, value: Any) -> tuple[FeatureRef, ...]:
    raw = c.mapping(value, "features")
    if not raw:
        raise c.fail("features", "must declare at least one feature", "add e.g. `length: {type: length_words}`")
    out = []
    for name, spec in raw.items():
        field = f"features.{name}"
        if not isinstance(name, str) or not FEATURE_NAME_RE.match(name):
            raise c.fail(field, "is not a valid feature name", "use letters, digits and '_' (it becomes column feat_<name>)")
        ref = _component(c, spec, field)
        out.append(FeatureRef(name, ref.type, ref.options))
    return tuple(out)


def _proxy(c: _Checker, value: Any, names: list[str]) -> ProxySpec:
    raw = c.mapping(value, "proxy", ("feature", "values", "value"))
    if "feature" not in raw:
        raise c.fail("proxy.feature", "is required but missing", "name the feature the operator controls on")
    feature = c.string(raw["feature"], "proxy.feature", allow_empty=False)
    if feature not in names:
        raise c.fail("proxy.feature", f"names {feature!r}, which is not a declared feature (declared: {', '.join(names)})",
                     "declare it under `features:` or fix the name")
    values = raw.get("values", [raw["value"]] if "value" in raw else None)
    if not isinstance(values, list) or not values:
        raise c.fail("proxy.values", f"must be a non-empty list of target values, got {_show(values)}", "e.g. values: [5, 1]")
    labels = []
    for i, v in enumerate(values):
        if not isinstance(v, (str, int, float, bool)) or (isinstance(v, float) and not math.isfinite(v)):
            raise c.fail(f"proxy.values[{i}]", f"must be a number or a string, got {_show(v)}", "write plain scalar values")
        labels.append(target_label(v))
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise c.fail("proxy.values", f"repeats target {dup[0]}", "list each target value once")
    return ProxySpec(feature, tuple(values))


def _latents(c: _Checker, value: Any, names: list[str], proxy: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise c.fail("latents", f"must be a list of feature names, got {_show(value)}", "e.g. latents: [genre, helping]")
    for i, v in enumerate(value):
        if v not in names:
            raise c.fail(f"latents[{i}]", f"names {v!r}, which is not a declared feature (declared: {', '.join(names)})",
                         "declare it under `features:` or fix the name")
        if v == proxy:
            raise c.fail(f"latents[{i}]", f"names the proxy feature {v!r}", "a latent is a feature you do NOT control on")
    if len(set(value)) != len(value):
        raise c.fail("latents", "lists a feature twice", "list each latent once")
    return tuple(value)


def _world(c: _Checker, value: Any) -> WorldSpec:
    ref = _component(c, value, "world")
    options = dict(ref.options)
    k = c.integer(options.pop("k", 8), "world.k", 1, "K = extra world draws per item for the forcing-set mass; use 1 or more")
    return WorldSpec(ref.type, k, options)


_CONTROL_RE = re.compile(r"^(?:(?P<bon>best-of)-(?P<n>[^@]+)|(?P<type>[A-Za-z][\w-]*)(?:@(?P<arg>.+))?)$")
_CONTROL_ARG = {"reward": "k", "tilt": "beta", "best-of-n": "n"}


def _controls(c: _Checker, value: Any, world: WorldSpec | None, betas: tuple[float, ...]) -> tuple[ControlSpec, ...]:
    if not isinstance(value, list) or not value:
        raise c.fail("controls", f"must be a non-empty list, got {_show(value)}", "e.g. controls: [none, prompt, filter, reward@1]")
    out: list[ControlSpec] = []
    for i, item in enumerate(value):
        field = f"controls[{i}]"
        if isinstance(item, str):
            m = _CONTROL_RE.match(item.strip())
            if not m:
                raise c.fail(field, f"is not a control ({item!r})", "write none, prompt, filter, reward@4, best-of-4 or tilt@0.1")
            if m["bon"]:
                kind, options = "best-of-n", {"n": m["n"]}
            else:
                kind = m["type"]
                options = {_CONTROL_ARG.get(kind, "arg"): m["arg"]} if m["arg"] is not None else {}
        elif isinstance(item, Mapping):
            ref = _component(c, item, field)
            kind, options = ref.type, dict(ref.options)
        else:
            raise c.fail(field, f"must be a string or a mapping, got {_show(item)}", "e.g. reward@4 or {type: reward, k: 4}")
        out.append(ControlSpec(kind, _control_options(c, field, kind, options, world, betas)))
    seen = set()
    for i, spec in enumerate(out):
        key = (spec.type, tuple(sorted((k, str(v)) for k, v in spec.options.items())))
        if key in seen:
            raise c.fail(f"controls[{i}]", f"repeats control {spec.type} {spec.options or ''}".rstrip(), "list each control once")
        seen.add(key)
    return tuple(out)


def _control_options(c: _Checker, field: str, kind: str, options: dict, world: WorldSpec | None,
                     betas: tuple[float, ...]) -> dict:
    """Type-check the options of the built-in controls; other controls keep theirs as written."""
    if kind in ("reward", "tilt") and world is None:
        raise c.fail(field, f"uses `{kind}`, which needs a world to draw rewards from, and the task has none",
                     "add a `world:` section or remove this control")
    if kind == "reward":
        if "k" not in options:
            raise c.fail(f"{field}.k", "is required for `reward`", "write reward@1 or {type: reward, k: 4}")
        k = _int_like(options["k"])
        if k is None or k < 1:
            raise c.fail(f"{field}.k", f"must be a positive integer, got {_show(options['k'])}", "write reward@1 or more")
        assert world is not None
        if k > world.k + 1:
            raise c.fail(f"{field}.k", f"is {k}, but the world gives only 1 + K = {world.k + 1} draws per item",
                         f"raise world.k to at least {k - 1} or lower the reward k")
        options["k"] = k
    elif kind == "best-of-n":
        n = _int_like(options.get("n"))
        if n is None or n < 1:
            raise c.fail(f"{field}.n", f"must be a positive integer, got {_show(options.get('n'))}", "write best-of-4")
        options["n"] = n
    elif kind == "tilt":
        if "beta" in options:
            options["beta"] = c.number(options["beta"], f"{field}.beta", 0.0, low_open=True)
        elif not betas:
            raise c.fail(f"{field}.beta", "is missing: a bare `tilt` needs the top-level `betas` sweep",
                         "write tilt@0.1 or add betas: [0.05, 0.2, 1.0]")
    elif kind in ("none", "prompt", "filter") and options:
        raise c.fail(field, f"`{kind}` takes no options, got {_show(options)}", f"write just {kind}")
    return options


def _int_like(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _float_list(c: _Checker, value: Any, field: str) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise c.fail(field, f"must be a list of numbers, got {_show(value)}", "e.g. betas: [0.05, 0.2, 1.0]")
    out = tuple(c.number(v, f"{field}[{i}]", 0.0, low_open=True) for i, v in enumerate(value))
    if len(set(out)) != len(out):
        raise c.fail(field, "repeats a value", "list each value once")
    return out


def _int_list(c: _Checker, value: Any, field: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise c.fail(field, f"must be a list of integers, got {_show(value)}", "e.g. context_sizes: [0, 1, 2, 4, 8]")
    out = tuple(c.integer(v, f"{field}[{i}]", 0) for i, v in enumerate(value))
    if len(set(out)) != len(out):
        raise c.fail(field, "repeats a value", "list each value once")
    return out


def _plan(c: _Checker, value: Any) -> SamplingPlan:
    raw = c.mapping(value, "plan", ("contexts", "samples_per_context", "exemplars", "seed"))
    d = SamplingPlan()
    return SamplingPlan(
        contexts=c.integer(raw.get("contexts", d.contexts), "plan.contexts", 1, "write a whole number of contexts, e.g. 4"),
        samples_per_context=c.integer(raw.get("samples_per_context", d.samples_per_context), "plan.samples_per_context", 1),
        exemplars=c.integer(raw.get("exemplars", d.exemplars), "plan.exemplars", 0, "write how many reference items each prompt shows, e.g. 5"),
        seed=c.integer(raw.get("seed", d.seed), "plan.seed", 0),
    )


def _generation(c: _Checker, value: Any) -> GenerationSpec:
    raw = c.mapping(value, "generation", ("max_tokens", "temperature", "top_p"))
    d = GenerationSpec()
    return GenerationSpec(
        max_tokens=c.integer(raw.get("max_tokens", d.max_tokens), "generation.max_tokens", 1),
        temperature=c.number(raw.get("temperature", d.temperature), "generation.temperature", 0.0),
        top_p=c.number(raw.get("top_p", d.top_p), "generation.top_p", 0.0, 1.0, low_open=True),
    )


def check_names(spec: TaskSpec, registries: Registries, where: str) -> None:
    """Every component the task names must be registered; feature options are checked by building them."""
    c = _Checker(where)

    def need(registry, name: str, field: str) -> None:
        if name not in registry:
            known = ", ".join(registry.names()) or "none installed"
            raise c.fail(field, f"names unknown {registry.kind} {name!r} (known: {known})",
                         f"use a known {registry.kind} or install the plugin that adds it")

    need(registries.reference_sources, spec.reference.type, "reference.type")
    for ref in spec.features:
        need(registries.features, ref.type, f"features.{ref.name}.type")
    if spec.world is not None:
        need(registries.worlds, spec.world.type, "world.type")
    for i, control in enumerate(spec.controls):
        need(registries.controls, control.type, f"controls[{i}]")
    from harness.featurize import build_features  # late: featurize imports this module's helpers
    from harness.protocols import BuildContext

    build_features(spec, registries, BuildContext(registries=registries))
