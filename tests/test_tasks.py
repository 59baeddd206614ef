"""Task YAML -> TaskSpec: the shipped tasks load, and every kind of mistake is a one-line TaskError."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

import harness.builtin.bookworld
import harness.builtin.controls
import harness.builtin.features
import harness.builtin.sources
import harness.builtin.worlds
from harness.errors import TaskError
from harness.plugins import build_registries, get_plugin_manager, register_plugin
from harness.protocols import BuildContext
from harness.reference import load_reference
from harness.taskspec import ControlSpec
from harness.paths import builtin_tasks_dir
from harness.tasks import list_tasks, load_task


def make_registries():
    """The real built-in plugins this test needs, registered without the entry points of unrelated ones."""
    pm = get_plugin_manager(load_entrypoints=False)
    for name, module in (("builtin-features", harness.builtin.features), ("builtin-sources", harness.builtin.sources),
                         ("builtin-bookworld", harness.builtin.bookworld), ("builtin-controls", harness.builtin.controls),
                         ("builtin-worlds", harness.builtin.worlds)):
        register_plugin(pm, module, name)
    return build_registries(pm)


@pytest.fixture(scope="module")
def registries():
    return make_registries()


BASE = {
    "name": "mini",
    "version": 2,
    "description": "a small valid task",
    "reference": {"type": "bookworld", "n": 50, "seed": 1},
    "render": {"exemplar": "Rating: {{ rating }}\nGenre: {{ genre }}\nReview: {{ review }}", "separator": "\n###\n",
               "open_prefix": "Rating:", "prompt_prefix": "Rating: {{ value }}\n", "stop": ["###"]},
    "features": {"rating": {"type": "header_field", "field": "Rating", "numeric": True},
                 "helping": {"type": "regex_count", "pattern": r"\bhelps\b", "binary": True},
                 "length": "length_words"},
    "proxy": {"feature": "rating", "values": [5, 1]},
    "latents": ["helping", "length"],
    "world": {"type": "bookworld-readers", "k": 8},
    "controls": ["none", "prompt", "filter", "reward@1", {"type": "reward", "k": 8}, "best-of-4", "tilt@0.1", "tilt"],
    "betas": [0.05, "1e-2", 1],
    "context_sizes": [0, 1, 2],
    "plan": {"contexts": 2, "samples_per_context": 3, "exemplars": 2, "seed": 7},
    "generation": {"max_tokens": 64, "temperature": 1.0, "top_p": 0.9},
}


def write(tmp_path: Path, data, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def mutate(change):
    data = copy.deepcopy(BASE)
    change(data)
    return data


def test_valid_task_parses_every_field(tmp_path, registries):
    spec = load_task(write(tmp_path, BASE, "mini.yaml"), registries)
    assert (spec.name, spec.version, spec.description) == ("mini", 2, "a small valid task")
    assert spec.reference.type == "bookworld" and spec.reference.options == {"n": 50, "seed": 1}
    assert [f.name for f in spec.features] == ["rating", "helping", "length"]
    assert spec.feature("length").type == "length_words" and spec.feature("rating").column == "feat_rating"
    assert spec.proxy.values == (5, 1) and spec.latents == ("helping", "length")
    assert spec.world.type == "bookworld-readers" and spec.world.k == 8 and spec.world.options == {}
    assert spec.controls == (
        ControlSpec("none"), ControlSpec("prompt"), ControlSpec("filter"), ControlSpec("reward", {"k": 1}),
        ControlSpec("reward", {"k": 8}), ControlSpec("best-of-n", {"n": 4}), ControlSpec("tilt", {"beta": 0.1}),
        ControlSpec("tilt"),
    )
    assert spec.betas == (0.05, 0.01, 1.0) and spec.context_sizes == (0, 1, 2)
    assert (spec.plan.contexts, spec.plan.samples_per_context, spec.plan.exemplars, spec.plan.seed) == (2, 3, 2, 7)
    assert (spec.generation.max_tokens, spec.generation.top_p) == (64, 0.9)
    assert spec.render.stop == ("###",) and spec.source_path == (tmp_path / "mini.yaml").resolve()
    json.dumps(spec.to_dict())  # the manifest records it


def test_defaults_name_from_file_and_stop_from_separator(tmp_path):
    data = mutate(lambda d: (d.pop("name"), d["render"].pop("stop"), d.pop("plan"), d.pop("generation")))
    spec = load_task(write(tmp_path, data, "my-task.yaml"))
    assert spec.name == "my-task" and spec.render.stop == ("\n###\n",)
    assert spec.plan.contexts == 4 and spec.generation.max_tokens == 96


def test_shipped_tasks_load_with_registries(registries):
    names = {p.stem for p in list_tasks()}
    assert {"bookworld", "python-functions", "reviews"} <= names
    for name in ("bookworld", "python-functions", "reviews"):
        spec = load_task(name, registries)
        assert spec.source_path == (builtin_tasks_dir() / f"{name}.yaml").resolve()
        assert spec.generation.max_tokens <= 128  # short items keep the default suite within its 30 minutes
    book = load_task("bookworld", registries)
    assert book.proxy.values == (5, 1) and book.world.k == 8
    assert {"genre", "sentiment", "helping", "length"} == set(book.latents)
    assert ControlSpec("reward", {"k": 8}) in book.controls and ControlSpec("best-of-n", {"n": 4}) in book.controls
    py = load_task("python-functions", registries)
    assert py.world.type == "python-exec" and py.world.options == {"timeout_s": 2}


def test_bare_name_prefers_working_directory(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    write(tmp_path / "tasks", mutate(lambda d: d.update(description="local copy")), "bookworld.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_task("bookworld").description == "local copy"
    assert Path("tasks/bookworld.yaml").resolve() in [p.resolve() for p in list_tasks()]


def test_unknown_task_name_lists_known():
    with pytest.raises(TaskError) as err:
        load_task("no-such-task")
    assert "known:" in err.value.one_line() and "bookworld" in err.value.one_line()


def test_missing_task_file():
    with pytest.raises(TaskError, match="does not exist"):
        load_task("nowhere/missing.yaml")


# (description, YAML text or mutation of BASE, field the message must name, fragment it must contain)
MISTAKES = [
    ("yaml syntax", "name: x\nrender: {exemplar: 'a'\nproxy: [", None, "YAML syntax error at line"),
    ("not a mapping", "- a\n- b\n", None, "must be a YAML mapping"),
    ("duplicate key", "name: a\nname: b\n", None, "appears twice"),
    ("unknown top-level key", lambda d: d.update(featurs={}), "featurs", "did you mean `features`"),
    ("missing required field", lambda d: d.pop("proxy"), "proxy", "is required"),
    ("wrong type (contexts)", lambda d: d["plan"].update(contexts="four"), "plan.contexts", "got 'four'"),
    ("bool is not an int", lambda d: d["plan"].update(contexts=True), "plan.contexts", "positive integer"),
    ("negative samples", lambda d: d["plan"].update(samples_per_context=-3), "plan.samples_per_context", "-3"),
    ("negative exemplars", lambda d: d["plan"].update(exemplars=-1), "plan.exemplars", "non-negative"),
    ("unknown plan key", lambda d: d["plan"].update(context=3), "plan.context", "not a known key"),
    ("world k of 0", lambda d: d["world"].update(k=0), "world.k", "positive integer"),
    ("reward k of 0", lambda d: d.update(controls=["reward@0"]), "controls[0].k", "positive integer"),
    ("reward k above world", lambda d: d.update(controls=["reward@20"]), "controls[0].k", "1 + K = 9"),
    ("best-of-0", lambda d: d.update(controls=["none", "best-of-0"]), "controls[1].n", "positive integer"),
    ("tilt beta negative", lambda d: d.update(controls=["tilt@-1"]), "controls[0].beta", "> 0"),
    ("bare tilt, no betas", lambda d: (d.pop("betas"), d.update(controls=["tilt"])), "controls[0].beta", "betas"),
    ("reward without world", lambda d: (d.pop("world"), d.update(controls=["reward@1"])), "controls[0]", "needs a world"),
    ("garbled control", lambda d: d.update(controls=["reward@@1!"]), "controls[0].k", "positive integer"),
    ("control not a string", lambda d: d.update(controls=[3]), "controls[0]", "string or a mapping"),
    ("duplicate control", lambda d: d.update(controls=["none", "none"]), "controls[1]", "repeats"),
    ("empty controls", lambda d: d.update(controls=[]), "controls", "non-empty list"),
    ("options on none", lambda d: d.update(controls=[{"type": "none", "k": 2}]), "controls[0]", "takes no options"),
    ("proxy not a feature", lambda d: d["proxy"].update(feature="stars"), "proxy.feature", "not a declared feature"),
    ("empty proxy values", lambda d: d["proxy"].update(values=[]), "proxy.values", "non-empty list"),
    ("repeated proxy value", lambda d: d["proxy"].update(values=[5, 5.0]), "proxy.values", "repeats target 5"),
    ("latent not a feature", lambda d: d.update(latents=["genre"]), "latents[0]", "not a declared feature"),
    ("latent is the proxy", lambda d: d.update(latents=["rating"]), "latents[0]", "proxy"),
    ("bad feature name", lambda d: d["features"].update({"my-feat": "length_words"}), "features.my-feat", "not a valid feature name"),
    ("feature without type", lambda d: d["features"].update(x={"field": "A"}), "features.x.type", "is required"),
    ("no features", lambda d: d.update(features={}), "features", "at least one"),
    ("bad template syntax", lambda d: d["render"].update(exemplar="Rating: {{ rating "), "render.exemplar", "not a valid Jinja"),
    ("missing exemplar", lambda d: d["render"].pop("exemplar"), "render.exemplar", "is required"),
    ("prefix uses a column", lambda d: d["render"].update(open_prefix="{{ genre }}"), "render.open_prefix", "genre"),
    ("prompt prefix lacks value", lambda d: d["render"].update(prompt_prefix="Rating:"), "render.prompt_prefix", "{{ value }}"),
    ("unknown render key", lambda d: d["render"].update(stops=["x"]), "render.stops", "not a known key"),
    ("empty stop string", lambda d: d["render"].update(stop=[""]), "render.stop", "non-empty string"),
    ("top_p above 1", lambda d: d["generation"].update(top_p=1.5), "generation.top_p", "<= 1"),
    ("max_tokens of 0", lambda d: d["generation"].update(max_tokens=0), "generation.max_tokens", "positive integer"),
    ("negative beta in sweep", lambda d: d.update(betas=[0.1, -2]), "betas[1]", "> 0"),
    ("repeated context size", lambda d: d.update(context_sizes=[1, 1]), "context_sizes", "repeats"),
    ("bad task name", lambda d: d.update(name="my task!"), "name", "letters, digits"),
    ("version zero", lambda d: d.update(version=0), "version", "positive integer"),
]


@pytest.mark.parametrize("label, change, field, fragment", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistakes_are_one_line_task_errors(tmp_path, label, change, field, fragment):
    data = change if isinstance(change, str) else mutate(change)
    with pytest.raises(TaskError) as err:
        load_task(write(tmp_path, data))
    line = err.value.one_line()
    assert "\n" not in line and "bad.yaml: " in line
    if field is not None:
        assert f"field `{field}`" in line
    assert fragment in line
    assert err.value.hint  # every message says how to fix it


REGISTRY_MISTAKES = [
    ("unknown source", lambda d: d["reference"].update(type="bookwrld"), "reference.type", "unknown reference source 'bookwrld'"),
    ("unknown feature", lambda d: d["features"].update(x={"type": "sentiment"}), "features.x.type", "unknown feature 'sentiment'"),
    ("unknown world", lambda d: d["world"].update(type="readers"), "world.type", "unknown world 'readers'"),
    ("unknown control", lambda d: d.update(controls=["none", "nudge@3"]), "controls[1]", "unknown control 'nudge'"),
    ("bad feature option", lambda d: d["features"].update(x={"type": "regex_count", "pattern": "(a"}), "features.x", "not a valid regex"),
    ("unknown feature option", lambda d: d["features"].update(x={"type": "length_words", "feild": 1}), "features.x", "feild"),
]


@pytest.mark.parametrize("label, change, field, fragment", REGISTRY_MISTAKES, ids=[m[0] for m in REGISTRY_MISTAKES])
def test_registry_mistakes_name_the_known_components(tmp_path, registries, label, change, field, fragment):
    path = write(tmp_path, mutate(change))
    load_task(path)  # syntactically fine: only the registries can tell
    with pytest.raises(TaskError) as err:
        load_task(path, registries)
    line = err.value.one_line()
    assert "\n" not in line and "bad.yaml" in line and f"field `{field}" in line and fragment in line
    if label.startswith("unknown") and "option" not in label:
        assert "known:" in line


def test_template_naming_a_missing_column_fails_when_reference_loads(tmp_path, registries):
    data = mutate(lambda d: d["render"].update(exemplar="Rating: {{ stars }}\n{{ review }}"))
    spec = load_task(write(tmp_path, data), registries)
    with pytest.raises(TaskError) as err:
        load_reference(spec, registries, BuildContext(registries=registries))
    line = err.value.one_line()
    assert "bad.yaml" in line and "field `render.exemplar`" in line and "'stars'" in line and "columns: genre" in line
