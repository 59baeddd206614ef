"""Worlds: python-exec (extraction, inputs, R per seed), judge (scripted), and world draws."""

import asyncio
import textwrap

import pytest

from harness.builtin import controls as builtin_controls
from harness.builtin import scripted as builtin_scripted
from harness.builtin import worlds as builtin_worlds
from harness.errors import ModelSpecError, PluginError, TaskError
from harness.factories import create_component
from harness.plugins import build_registries, get_plugin_manager, register_plugin
from harness.protocols import BuildContext
from harness.sandbox import SandboxLimits
from harness.taskspec import ComponentRef, ControlSpec, FeatureRef, ProxySpec, RenderSpec, TaskSpec, WorldSpec
from harness.worlds.draws import WorldError, build_world, close_world, world_matrix
from harness.worlds.python_exec import PythonExecWorld, draw_call, extract_function


@pytest.fixture(scope="module")
def registries():
    pm = get_plugin_manager(load_entrypoints=False)
    for name, module in (("builtin-worlds", builtin_worlds), ("builtin-scripted", builtin_scripted),
                         ("builtin-controls", builtin_controls)):
        register_plugin(pm, module, name)
    return build_registries(pm)


@pytest.fixture(scope="module")
def ctx(registries):
    return BuildContext(registries=registries)


def task(world=None):
    return TaskSpec(name="t", version=1, description="", reference=ComponentRef("csv"), render=RenderSpec(exemplar="{{ text }}"),
                    features=(FeatureRef("rating", "header_field"),), proxy=ProxySpec("rating", (5,)), latents=(),
                    controls=(ControlSpec("none"),), world=world)


def test_extract_whole_module_or_def_block():
    module = "import math\n\ndef area(r):\n    return math.pi * r * r\n\nprint('x')\n"
    source, node = extract_function(module)
    assert source == module and node.name == "area"  # the module runs, so `math` exists
    prose = "Here is my answer:\ndef add(a, b=1):\n    return a + b\nHope it helps!\n"
    source, node = extract_function(prose)
    assert source == "def add(a, b=1):\n    return a + b\n" and node.name == "add"
    wrapped = "Rating: great\ndef g(\n    x,\n):\n    return x\nThat's all\n"
    assert extract_function(wrapped)[0] == "def g(\n    x,\n):\n    return x\n"
    assert extract_function("no code here") is None
    assert extract_function("def broken(:\n    pass\n") is None
    assert extract_function("x = 1\nasync def h():\n    pass\n") is None  # not a plain def


def test_inputs_follow_the_signature_and_the_seed():
    node = extract_function("def f(a, b, c=3, *args, d, e=5, **kw):\n    pass\n")[1]
    call = draw_call(node, seed=7)
    assert len(call.args) == 2 and set(call.kwargs) == {"d"} and call.seed == 7
    assert draw_call(node, 7) == call
    kinds = {type(draw_call(node, s).args[0]).__name__ for s in range(200)}
    assert kinds == {"int", "float", "str", "list", "NoneType"}
    typed = extract_function("def f(n: int, s: str, xs: list[int], o: object):\n    pass\n")[1]
    for seed in range(30):
        n, s, xs, _ = draw_call(typed, seed, "typed").args
        assert isinstance(n, int) and isinstance(s, str) and isinstance(xs, list)


def test_python_exec_world_r_depends_on_code_and_seed():
    world = PythonExecWorld(SandboxLimits(timeout_s=1.0), concurrency=2)
    benign = "def f(x):\n    return repr(x)\n"
    fragile = "def f(x):\n    return x + 1\n"  # fails on strings, lists and None
    seeds = list(range(40))
    r_benign, r_fragile = asyncio.run(world_matrix(world, [benign, fragile], [seeds, seeds]))
    assert all(r_benign)
    assert 0 < sum(r_fragile) < len(seeds)
    again = asyncio.run(world.draw([fragile] * 5 + ["prose only"], seeds[:5] + [0]))
    assert again == r_fragile[:5] + [False]
    kinds_ok = {type(draw_call(extract_function(fragile)[1], s).args[0]) in (int, float) for s in seeds}
    assert kinds_ok == {True, False}
    assert [type(draw_call(extract_function(fragile)[1], s).args[0]) in (int, float) for s in seeds] == r_fragile


def test_python_exec_options(ctx, registries):
    world = create_component(registries.worlds, "python-exec", {"timeout_s": 1, "memory_mb": 128, "inputs": "typed"}, ctx)
    assert world.limits.timeout_s == 1.0 and world.limits.memory_mb == 128 and world.inputs == "typed"
    with pytest.raises(TaskError, match="unknown option"):
        create_component(registries.worlds, "python-exec", {"timeout": 1}, ctx)
    with pytest.raises(TaskError, match="inputs"):
        create_component(registries.worlds, "python-exec", {"inputs": "random"}, ctx)


JUDGE = {"model": "scripted:planted", "model_options": {"distribution": {" Yes, it is.": 0.3, "No": 0.5, "YES": 0.2}},
         "question": "Text: {{ text }}\nGood? Answer:"}


def test_judge_world_draws_yes_with_the_planted_probability(ctx, registries):
    world = create_component(registries.worlds, "judge", JUDGE, ctx)
    assert world.prompt("abc") == "Text: abc\nGood? Answer:"
    seeds = list(range(2000))
    draws = asyncio.run(world.draw(["an item"] * len(seeds), seeds))
    rate = sum(draws) / len(draws)
    assert abs(rate - 0.5) < 0.05  # " Yes, it is." (0.3) + "YES" (0.2); sd of the rate is 0.011
    assert asyncio.run(world.draw(["an item"] * 50, seeds[:50])) == draws[:50]  # same seed, same answer
    assert world._mimic.calls == 2  # one batch per draw call
    asyncio.run(close_world(world))
    assert world._mimic is None


def test_judge_options_are_checked(ctx, registries):
    with pytest.raises(TaskError, match="needs a 'model'"):
        create_component(registries.worlds, "judge", {}, ctx)
    with pytest.raises(TaskError, match="template"):
        create_component(registries.worlds, "judge", {**JUDGE, "question": "{{ text "}, ctx)
    with pytest.raises(ModelSpecError, match="unknown mimic backend 'nosuch'"):
        create_component(registries.worlds, "judge", {"model": "nosuch:model"}, ctx)
    with pytest.raises(ModelSpecError, match="backend:model"):
        create_component(registries.worlds, "judge", {"model": "no-colon"}, ctx)


def test_build_world_and_world_matrix_errors(ctx, registries):
    assert build_world(task(), registries, ctx) is None
    world = build_world(task(WorldSpec("python-exec", k=2, options={"timeout_s": 1})), registries, ctx)
    assert isinstance(world, PythonExecWorld)
    with pytest.raises(PluginError, match="unknown world"):
        build_world(task(WorldSpec("nosuch")), registries, ctx)

    class Broken:
        async def draw(self, texts, seeds):
            raise RuntimeError("judge server down")

    class Short:
        async def draw(self, texts, seeds):
            return [True]

    class Counting:
        calls = 0

        async def draw(self, texts, seeds):
            Counting.calls += 1
            return [s % 2 == 0 for s in seeds]

    with pytest.raises(WorldError, match="Broken failed.*judge server down"):
        asyncio.run(world_matrix(Broken(), ["a"], [[1, 2]]))
    with pytest.raises(WorldError, match="returned 1 draws for 3"):
        asyncio.run(world_matrix(Short(), ["a"], [[1, 2, 3]]))
    matrix = asyncio.run(world_matrix(Counting(), ["a", "b"], [[0, 1, 2], [3, 4, 6]]))
    assert matrix == [[True, False, True], [False, True, True]] and Counting.calls == 1
    assert asyncio.run(world_matrix(Counting(), [], [])) == []
    with pytest.raises(WorldError, match="no text"):
        asyncio.run(world_matrix(Counting(), [None], [[1]]))


def test_hostile_items_are_r_zero_and_the_world_keeps_going():
    world = PythonExecWorld(SandboxLimits(timeout_s=0.5), concurrency=2)
    items = [
        "def f():\n    while True:\n        pass\n",
        "import os\ndef f():\n    os.system('true')\n",
        "def f():\n    return bytearray(10 * 1024**3)\n",
        textwrap.dedent("""\
            def f(x):
                return 1
        """),
    ]
    assert asyncio.run(world.draw(items, [1, 2, 3, 4])) == [False, False, False, True]
