"""Built-in feature extractors and featurize: exact values on crafted texts, dtypes, nulls, option errors."""

from __future__ import annotations

import polars as pl
import pytest

import harness.extractors as F
from harness.builtin import features as builtin_features
from harness.errors import PluginError, TaskError
from harness.featurize import build_features, compute_features
from harness.plugins import build_registries, get_plugin_manager, register_plugin
from harness.protocols import BuildContext, Feature
from harness.taskspec import FeatureRef, TaskSpec


@pytest.fixture(scope="module")
def registries():
    pm = get_plugin_manager(load_entrypoints=False)
    register_plugin(pm, builtin_features, "builtin-features")
    return build_registries(pm)


def extract(feature, texts):
    return feature.extract(pl.Series("t", texts, dtype=pl.Utf8)).to_list()


REVIEW = "Rating: 4\nGenre:  Mystery \nReview: The plot was wonderful.\nThe ending helps. It HELPED.\n\n"


def test_header_field_numeric_and_categorical():
    texts = [REVIEW, "rating : 4.5 stars\nGenre: scifi", "Rating: five\nGenre:", "no header"]
    assert extract(F.header_field({"field": "Rating", "numeric": True}), texts) == [4.0, 4.5, None, None]
    assert extract(F.header_field({"field": "Genre"}), texts) == ["Mystery", "scifi", None, None]
    assert extract(F.header_field({"field": "Genre", "lowercase": True, "values": ["mystery"]}), texts) == ["mystery", None, None, None]
    assert F.header_field({"field": "Rating", "numeric": True}).kind == "numeric"
    assert F.header_field({"field": "Genre"}).kind == "categorical"


def test_regex_and_keyword_counts():
    texts = [REVIEW, "nothing here", "c++ and C++ rock"]
    help_count = F.regex_count({"pattern": r"\bhelp(s|ed)?\b", "ignore_case": True})
    assert help_count.kind == "numeric" and extract(help_count, texts) == [2.0, 0.0, 0.0]
    help_any = F.regex_count({"pattern": r"\bhelps\b", "binary": True})
    assert help_any.kind == "binary" and extract(help_any, texts) == [1.0, 0.0, 0.0]
    words = F.keyword_count({"words": ["wonderful", "ending", "c++"]})
    assert extract(words, texts) == [2.0, 0.0, 0.0]  # `\b` needs a word character after "c++": no match, by design
    assert extract(F.keyword_count({"words": ["and", "rock"], "ignore_case": False, "binary": True}), texts) == [0.0, 0.0, 1.0]
    assert extract(F.keyword_count({"words": ["Plot"], "ignore_case": False}), texts) == [0.0, 0.0, 0.0]


def test_lengths_and_after():
    texts = [REVIEW, "one\n\n  \ntwo three", ""]
    assert extract(F.length_words({}), texts) == [14.0, 3.0, 0.0]
    assert extract(F.length_lines({}), texts) == [4.0, 2.0, 0.0]
    assert extract(F.length_words({"after": "Review"}), texts) == [9.0, None, None]
    assert extract(F.length_lines({"after": "Review"}), texts) == [2.0, None, None]


def test_vader_score_and_label():
    texts = ["What a wonderful, brilliant book.", "A dull and awful book.", "The book has pages.", "Review: awful"]
    scores = extract(F.vader({}), texts)
    assert scores[0] > 0.5 and scores[1] < -0.5 and scores[2] == 0.0
    assert extract(F.vader({"label": True}), texts) == ["positive", "negative", "neutral", "negative"]
    assert extract(F.vader({"label": True, "after": "Review"}), texts) == [None, None, None, "negative"]
    assert F.vader({"label": True}).kind == "categorical"


CODE_OK = '''def f(x: int) -> int:
    """Double x."""
    # a comment line
    if x > 0:
        return g(x) * 2
    return [y for y in range(x) if y][0] if x else 0
'''
CODE_NO_PARSE = "def f(:\n    pass\n"
CODE_NO_COMPILE = "return 3\n"  # parses, but `return` outside a function does not compile
FENCED = "Here is code:\n```python\ndef h(a):\n    return a\n```\nand prose after."


@pytest.mark.parametrize("measure, expected", [
    ("parses", [1.0, 0.0, 1.0, 1.0]),
    ("compiles", [1.0, 0.0, 0.0, 1.0]),
    ("has_docstring", [1.0, None, 0.0, 0.0]),
    ("has_type_hints", [1.0, None, 0.0, 0.0]),
    ("lines", [5.0, None, 1.0, 2.0]),
    ("branches", [3.0, None, 0.0, 0.0]),  # if, ternary, comprehension if (the comprehension's own for is not one)
    ("returns", [2.0, None, 1.0, 1.0]),
    ("calls", [2.0, None, 0.0, 0.0]),
])
def test_python_ast_measures(measure, expected):
    feature = F.python_ast({"measure": measure})
    assert feature.kind == F.PYTHON_MEASURES[measure]
    assert extract(feature, [CODE_OK, CODE_NO_PARSE, CODE_NO_COMPILE, FENCED]) == expected


def test_python_branches_counts_each_construct():
    code = ("def f(xs):\n    for x in xs:\n        while x:\n            x -= 1\n    try:\n        pass\n"
            "    except ValueError:\n        pass\n    except KeyError:\n        pass\n    if xs:\n        pass\n"
            "    elif xs is None:\n        pass\n    return [a for a in xs if a if a > 1]\n")
    # for, while, 2 excepts, if, elif (a nested If), 2 comprehension ifs
    assert extract(F.python_ast({"measure": "branches"}), [code]) == [8.0]


def test_python_require_compiles():
    texts = [CODE_OK, CODE_NO_PARSE, '"""doc"""\nreturn 1\n']
    assert extract(F.python_ast({"measure": "has_docstring"}), texts) == [1.0, None, 1.0]
    assert extract(F.python_ast({"measure": "has_docstring", "require_compiles": True}), texts) == [1.0, 0.0, 0.0]
    assert extract(F.python_ast({"measure": "lines", "require_compiles": True}), texts) == [5.0, None, None]
    assert extract(F.python_ast({"measure": "python_lines"}), texts) == extract(F.python_ast({"measure": "lines"}), texts)


def test_python_first_definition_measures_the_first_function_only():
    first = '# docstring: yes\n@cache\ndef f(a,\n      b):\n    """Doc."""\n\n    return a\n'
    rambling = first + "    \ndef g(x):\n    if x:\n        return [x,"  # a second function, cut off mid-line
    closing = "def h(\n    a,\n):\n    return a\n"  # a bracket at column 0 continues the signature
    assert F.first_definition(rambling) == first + "    \n"
    assert F.first_definition(closing) == closing
    assert F.first_definition("x = 1\n") == "x = 1\n"  # no definition: unchanged
    whole = F.python_ast({"measure": "has_docstring", "require_compiles": True})
    first_only = F.python_ast({"measure": "has_docstring", "require_compiles": True, "first_definition": True})
    assert extract(whole, [rambling]) == [0.0]  # the cut-off second function breaks compilation
    assert extract(first_only, [rambling]) == [1.0]
    assert extract(F.python_ast({"measure": "returns", "first_definition": True}), [rambling]) == [1.0]


@pytest.mark.parametrize("factory, options, fragment", [
    (F.regex_count, {}, "pattern"),
    (F.regex_count, {"pattern": "(a"}, "not a valid regex"),
    (F.regex_count, {"pattern": "a", "binary": "yes"}, "`binary` must be true or false"),
    (F.keyword_count, {"words": []}, "`words`"),
    (F.header_field, {"field": "Ra:ting"}, "`field`"),
    (F.header_field, {"field": "Rating", "after": "Review"}, "after"),
    (F.python_ast, {"measure": "loc"}, "`measure` must be one of"),
    (F.length_words, {"after": "a\nb"}, "`after`"),
    (F.vader, {"labels": True}, "unknown option(s) labels"),
])
def test_bad_options_raise_value_errors(factory, options, fragment):
    with pytest.raises(ValueError, match=None) as err:
        factory(options)
    assert fragment in str(err.value)


def _task(features: tuple[FeatureRef, ...]) -> TaskSpec:
    from harness.taskspec import ComponentRef, ProxySpec, RenderSpec

    return TaskSpec(name="t", version=1, description="", reference=ComponentRef("csv", {}), render=RenderSpec("{{ x }}"),
                    features=features, proxy=ProxySpec(features[0].name, (1,)), latents=(), controls=())


def test_build_and_compute_features(registries):
    refs = (FeatureRef("rating", "header_field", {"field": "Rating", "numeric": True}),
            FeatureRef("genre", "header_field", {"field": "Genre", "lowercase": True}),
            FeatureRef("helps", "regex_count", {"pattern": r"\bhelps\b", "binary": True}))
    features = build_features(_task(refs), registries, BuildContext(registries=registries))
    assert list(features) == ["rating", "genre", "helps"] and all(isinstance(f, Feature) for f in features.values())
    frame = compute_features(features, pl.Series("text", [REVIEW, None, "Genre: X"], dtype=pl.Utf8))
    assert frame.columns == ["feat_rating", "feat_genre", "feat_helps"]
    assert frame.schema["feat_rating"] == pl.Float64 and frame.schema["feat_genre"] == pl.Utf8 and frame.schema["feat_helps"] == pl.Float64
    assert frame.rows() == [(4.0, "mystery", 1.0), (None, None, None), (None, "x", 0.0)]


def test_build_features_errors_name_the_feature(registries):
    ctx = BuildContext(registries=registries)
    with pytest.raises(TaskError, match=r"field `features.h.type` names unknown feature 'nope' \(known: header_field"):
        build_features(_task((FeatureRef("h", "nope"),)), registries, ctx)
    with pytest.raises(TaskError, match=r"field `features.h`.*not a valid regex"):
        build_features(_task((FeatureRef("h", "regex_count", {"pattern": "[a"}),)), registries, ctx)


class _Broken:
    kind = "numeric"

    def extract(self, texts):
        return pl.Series([1.0])


def test_compute_features_rejects_a_wrong_length_result():
    with pytest.raises(PluginError, match="returned 1 values for 2 texts"):
        compute_features({"broken": _Broken()}, pl.Series(["a", "b"]))


def test_python_measures_keep_the_compilers_warnings_about_an_item_quiet(recwarn):
    F.analyse_python.cache_clear()
    assert extract(F.python_ast({"measure": "compiles"}), ["def f():\n    return [1, 2] [0]\n", "x = [1](2)\n"]) == [1.0, 1.0]
    assert not [w for w in recwarn.list if issubclass(w.category, SyntaxWarning)]
