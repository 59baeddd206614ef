"""The bad-input corpus (``tests/bad_inputs/*.yaml``, one case per file; format in its README).

Each case runs ``mimic`` in a subprocess, in a temporary directory holding a valid task, its
reference data and a finished run under ``results/``, and checks that the harness answers with the
expected exit code and exactly one stderr line ``error: ... (fix: ...)`` (no traceback unless
``--debug``), and that the finished run's files are byte-for-byte as they were.

The cases are independent subprocesses: a session fixture starts those selected for this session
on a small thread pool, and each parametrised test waits for its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tests.helpers import books_reference_jsonl, books_task_yaml

CASES_DIR = Path(__file__).parent / "bad_inputs"
CASES = sorted(CASES_DIR.glob("*.yaml"))
REPO = Path(__file__).resolve().parent.parent
# Plugins loaded unless a case says otherwise: enough for a run up to generation, and fast to import.
DEFAULT_PLUGINS = "builtin-features,builtin-sources,builtin-controls,builtin-scripted,openai"
CASE_TIMEOUT = 60
CASE_FIELDS = {"argv", "files", "replace", "remove", "env", "plugins", "exit", "error", "debug", "no_new_files"}

TASK = books_task_yaml("hard-books", 2, 3)

GOLDEN_MODELS = """\
models:
  golden:
    backend: scripted
    model: planted
    distribution:
      - {text: " 5\\nReview: warm and good", p: 0.4}
      - {text: " 1\\nReview: dull and slow", p: 0.3}
      - {text: "Review: a good warm book", p: 0.3}
"""


def default_files() -> dict[str, str]:
    return {"task.yaml": TASK, "ref.jsonl": books_reference_jsonl()}


PYCACHE = Path(os.environ.get("TMPDIR", "/tmp")) / f"mimic-bad-inputs-pycache-{os.getuid()}"


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIMIC_", "OPENAI_", "PYTEST_", "PYTHONDONTWRITEBYTECODE"))}
    env["MIMIC_PLUGINS"] = DEFAULT_PLUGINS
    env["PYTHONUNBUFFERED"] = "1"
    # Dozens of short `mimic` processes: keep their bytecode (outside the tree) so each does not recompile.
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return env


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Golden:
    """A finished run made once per session, copied into every case's ``results/``."""

    results: Path
    run_id: str
    hashes: dict[str, str]


@pytest.fixture(scope="session")
def golden(tmp_path_factory) -> Golden:
    work = tmp_path_factory.mktemp("golden")
    for name, text in default_files().items():
        (work / name).write_text(text)
    (work / "models.yaml").write_text(GOLDEN_MODELS)
    env = base_env()
    env["MIMIC_PLUGINS"] = DEFAULT_PLUGINS + ",builtin-estimators"
    cmd = [sys.executable, "-m", "harness.cli", "run", "-m", "golden", "--model-config", "models.yaml", "-t", "task.yaml",
           "--out", "results", "--no-cache", "--estimator", "control_success", "--n-boot", "100", "--progress", "off",
           "--json"]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "complete" and result["done"] == result["planned"] == 12
    results = work / "results"
    names = {p.name for p in (results / "runs" / result["run_id"]).iterdir()}
    assert {"manifest.json", "draws.parquet", "draws.jsonl", "estimates.parquet", "summary.md"} <= names
    return Golden(results, result["run_id"], tree_hashes(results))


@dataclass
class Outcome:
    """What one case's subprocess did."""

    returncode: int
    stdout: str
    stderr: str
    hashes_after: dict[str, str]
    workdir: Path


def load_case(path: Path) -> dict:
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict), f"{path.name}: a case is a mapping"
    unknown = set(case) - CASE_FIELDS
    assert not unknown, f"{path.name}: unknown case field(s) {sorted(unknown)}"
    assert isinstance(case.get("argv"), list) and "exit" in case and case.get("error"), f"{path.name}: needs argv, exit, error"
    assert path.read_text(encoding="utf-8").startswith("#"), f"{path.name}: start with a comment saying what it checks"
    return case


def write_file(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, dict) and "hex" in content:
        path.write_bytes(bytes.fromhex(content["hex"]))
    elif isinstance(content, dict) and "base64" in content:
        path.write_bytes(base64.b64decode(content["base64"]))
    elif isinstance(content, dict) and "sparse" in content:
        # A file of this size with only `head` written: the filesystem stores no data for the rest.
        with open(path, "wb") as fh:
            fh.write(str(content.get("head", "")).encode("utf-8"))
            fh.truncate(int(content["sparse"]))
    else:
        raise AssertionError(f"unsupported file content for {path.name}: {content!r}")


def install_plugins(work: Path, plugins: list[dict]) -> tuple[Path, list[str]]:
    """Write each plugin module plus a ``*.dist-info`` with its entry point, so importlib.metadata finds it."""
    site = work / "_plugins"
    names = []
    for i, plugin in enumerate(plugins):
        name = plugin["name"]
        module = f"badplugin_{i}_{name.replace('-', '_')}"
        dist = f"badplugin-{i}-{name}"
        (site / f"{module}.py").parent.mkdir(parents=True, exist_ok=True)
        (site / f"{module}.py").write_text(textwrap.dedent(plugin["code"]), encoding="utf-8")
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[mimic_harness]\n{name} = {module}\n")
        names.append(name)
    return site, names


def run_case(path: Path, golden: Golden, root: Path) -> Outcome:
    case = load_case(path)
    work = root / path.stem
    work.mkdir()
    shutil.copytree(golden.results, work / "results")
    files = default_files()
    for name, edits in (case.get("replace") or {}).items():
        for old, new in edits:
            assert old in files[name], f"{path.name}: {old!r} is not in the default {name}"
            files[name] = files[name].replace(old, new)
    for name in case.get("remove") or []:
        files.pop(name)
    for name, text in files.items():
        write_file(work / name, text)
    for name, content in (case.get("files") or {}).items():
        write_file(work / name, content)
    env = base_env()
    if case.get("plugins"):
        site, names = install_plugins(work, case["plugins"])
        env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
        env["MIMIC_PLUGINS"] = ",".join([env["MIMIC_PLUGINS"], *names])
    for key, value in (case.get("env") or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value).replace("{work}", str(work))
    argv = [str(a).replace("{golden}", golden.run_id).replace("{work}", str(work)) for a in case["argv"]]
    # Output goes to files, not pipes: several cases run at once, each from its own thread.
    with open(work / "_stdout", "w+b") as out, open(work / "_stderr", "w+b") as err:
        done = subprocess.run([sys.executable, "-m", "harness.cli", *argv], cwd=work, env=env, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err, timeout=CASE_TIMEOUT)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    return Outcome(done.returncode, stdout, stderr, tree_hashes(work / "results"), work)


@pytest.fixture(scope="session")
def outcomes(request, golden, tmp_path_factory):
    """Run every selected case (a few at a time); ``outcomes[name]`` is a Future of its Outcome."""
    wanted = [item.callspec.params["case"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_bad_input" and hasattr(item, "callspec")]
    root = tmp_path_factory.mktemp("bad_inputs")
    pool = ThreadPoolExecutor(max_workers=max(2, min(4, (os.cpu_count() or 2) * 2)))
    futures: dict[str, Future] = {p.name: pool.submit(run_case, p, golden, root) for p in wanted}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_corpus_is_big_enough_and_well_formed():
    assert len(CASES) >= 40
    for path in CASES:
        load_case(path)


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_bad_input(case: Path, outcomes, golden):
    spec = load_case(case)
    out: Outcome = outcomes[case.name].result(timeout=CASE_TIMEOUT * 4)
    detail = f"\n--- exit {out.returncode}\n--- stderr:\n{out.stderr}\n--- stdout:\n{out.stdout[-2000:]}"
    assert out.returncode == spec["exit"], detail
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines, detail
    line = lines[-1]
    if spec.get("debug"):
        assert "Traceback (most recent call last)" in out.stderr, detail
    else:
        assert len(lines) == 1, "stderr must be exactly one line" + detail
        assert "Traceback" not in out.stderr, detail
    assert line.startswith("error: "), detail
    assert "(fix: " in line and line.rstrip().endswith(")"), "the error must say how to fix it" + detail
    assert "internal error" not in line, "a user mistake must not surface as an internal error" + detail
    wanted = spec["error"] if isinstance(spec["error"], list) else [spec["error"]]
    for fragment in wanted:
        assert str(fragment) in line, f"{fragment!r} missing from the error line" + detail
    # nothing already in results/ was lost or changed
    after = out.hashes_after
    lost = {name for name in golden.hashes if name not in after}
    changed = {name for name, digest in golden.hashes.items() if name in after and after[name] != digest}
    assert not lost and not changed, f"results/ damaged: lost {sorted(lost)}, changed {sorted(changed)}"
    if spec.get("no_new_files"):  # refused before any work: no new file or folder (run, cache) under results/
        def tree(root: Path) -> set[str]:
            return {str(p.relative_to(root)) for p in root.rglob("*")}

        added = sorted(tree(out.workdir / "results") - tree(golden.results))
        assert not added, f"a refused command wrote {added}"
