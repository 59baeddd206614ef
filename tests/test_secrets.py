"""API keys are written nowhere: a full evaluation against the fake server that requires a key.

Two recognisable fake keys, one in the environment and one in a ``--model-config`` file, go
through ``mimic run`` (twice), ``mimic sample``, runs that end in a 401 (with and without
``--debug``), ``mimic leaderboard`` and ``mimic cache stats``. Then every file written under the
working directory (results, cache, leaderboard pages; binary files too) and everything printed on
stdout and stderr is searched for the keys, their distinctive part and their base64 forms.
"""

from __future__ import annotations

import base64
import json

import pytest

from harness.cli import main
from harness.testing.fake_server import FakeOpenAIServer
from tests.helpers import books_reference_jsonl, books_task_yaml

pytest.importorskip("mimic_openai", reason="install plugins/mimic-openai")

ENV_KEY = "sk-LEAKCHECK-env-7f3a9c1d2e4b"
CONFIG_KEY = "sk-LEAKCHECK-cfg-5b8e0a4f61c2"
MARKER = "LEAKCHECK"
PLUGINS = "builtin-features,builtin-sources,builtin-controls,builtin-estimators,builtin-leaderboard,openai"
TASK = books_task_yaml("secret-books", 3, 3, max_tokens=10)
INPUTS = {"task.yaml", "ref.jsonl", "models.yaml"}  # files the user wrote (the config holds a key by design)


def needles() -> list[bytes]:
    out = [MARKER.encode()]
    for key in (ENV_KEY, CONFIG_KEY):
        raw = key.encode()
        out += [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), f"Bearer {key}".encode(), raw.hex().encode()]
        out.append(key.encode("utf-16-le"))
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "ref.jsonl").write_text(books_reference_jsonl())
    (tmp_path / "task.yaml").write_text(TASK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIMIC_PLUGINS", PLUGINS)
    monkeypatch.delenv("MIMIC_CACHE_DIR", raising=False)
    monkeypatch.setenv("LEAK_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)  # the default variable too: it must not leak either
    return tmp_path


def test_keys_are_written_nowhere(workdir, capfd):
    outputs: list[str] = []

    def mimic(*args: str) -> int:
        code = main(list(args))
        captured = capfd.readouterr()
        outputs.extend([captured.out, captured.err])
        return code

    with FakeOpenAIServer(api_key=ENV_KEY) as server:
        url = server.base_url
        env_spec = f"openai:fake?base_url={url}&api_key_env=LEAK_KEY"
        (workdir / "models.yaml").write_text(
            f"models:\n  leaky:\n    backend: openai\n    model: fake\n    base_url: {url}\n    api_key: {CONFIG_KEY}\n")
        common = ["-t", "task.yaml", "--out", "results", "--estimator", "control_success", "--n-boot", "100"]

        # 1. a full run with the key from the environment (plain progress lines, JSON result)
        assert mimic("run", "-m", env_spec, *common, "--progress", "plain", "--json") == 0, outputs[-1]
        assert server.count(status=200) == 18  # the server required the key, so it was sent
        # 2. a full run with the key from the model config file (another seed: new draws, new requests)
        server.configure(api_key=CONFIG_KEY)
        served = server.count(status=200)
        assert mimic("run", "-m", "leaky", "--model-config", "models.yaml", *common, "--seed", "7") == 0, outputs[-1]
        assert server.count(status=200) == served + 18
        # 3. sampling on the command line
        server.configure(api_key=ENV_KEY)
        assert mimic("sample", env_spec, "Rating: 5\\nReview:", "-n", "2", "--json") == 0, outputs[-1]
        # 4. the error path: the server rejects the key (401), for either source, with and without --debug
        server.configure(api_key="sk-server-wants-another-key")
        for args in (["-m", env_spec, "--seed", "11"], ["-m", "leaky", "--model-config", "models.yaml", "--seed", "12"],
                     ["--debug", "-m", env_spec, "--seed", "13"]):
            assert mimic("run", *args, *common) == 3
            assert "authentication failed (HTTP 401)" in outputs[-1]
        assert "Traceback" in outputs[-1]  # --debug did show the traceback
        assert server.count(status=401) >= 3

    # 5. the leaderboard and the cache
    assert mimic("leaderboard", "results/runs", "--out", "results/leaderboard") == 0, outputs[-1]
    assert mimic("cache", "stats") == 0 and mimic("cache", "stats", "--json") == 0
    assert json.loads(outputs[-2])["completions"] >= 36

    written = [p for p in workdir.rglob("*") if p.is_file() and p.name not in INPUTS]
    names = {p.name for p in written}
    assert {"manifest.json", "draws.parquet", "estimates.json", "index.html", "draws.sqlite"} <= names, names
    assert any(p.suffix == ".md" for p in written if "leaderboard" in p.parts)
    leaks = [(str(p.relative_to(workdir)), needle) for p in written for needle in needles() if needle in p.read_bytes()]
    assert not leaks, f"keys found in files: {leaks}"
    printed = "\n".join(outputs).encode()
    assert not [needle for needle in needles() if needle in printed], "a key was printed"
