"""Every model call of a run goes through one path (``harness.run.calls``): the field-probability
requests are cached, counted in the manifest's usage and the "model calls" figure, and budgeted,
exactly like draws; a rerun of a finished run makes no request of any kind."""

from __future__ import annotations

import asyncio
import json

import pytest

from harness.cache import DrawCache
from harness.errors import BudgetExceeded
from harness.mimic import Capability, Completion, GenerationRequest
from harness.modelspec import ModelSpec
from harness.run import RunConfig, Usage, run
from harness.run.budget import Budget
from harness.run.calls import ModelCalls
from harness.run.config import CallLimits
from harness.testing.fake_server import FakeOpenAIServer
from tests.test_network_faults import registries_with, write_sync_workdir

pytest.importorskip("mimic_openai", reason="install plugins/mimic-openai")


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.setenv("MIMIC_PLUGINS", "builtin-features,builtin-sources,builtin-controls,openai")


def test_rerun_of_a_finished_run_makes_no_request_and_usage_counts_every_request(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = write_sync_workdir(tmp_path)
    with FakeOpenAIServer() as server:
        config = RunConfig(model=ModelSpec("openai", "fake", {"base_url": server.base_url}), task=task, out_dir=tmp_path / "out",
                           cache_dir=tmp_path / "cache", concurrency=8, progress="off", summary_to="off", estimators=(),
                           retry_wait=0.001)
        first = run(config, registries_with())
        seen = server.records()
        assert first.status == "complete" and (first.run_dir / "field_probs.parquet").exists()
        logprob_requests = [r for r in seen if (r.params or {}).get("max_tokens") == 1]
        assert logprob_requests, "the field-probabilities phase asked the server nothing"
        manifest = json.loads((first.run_dir / "manifest.json").read_text())
        usage = manifest["usage"]
        # every request the server saw is in the books: draws plus field probabilities, and the calls figure
        assert usage["requests"] == len(seen) == first.model_calls
        assert usage["phases"]["field_probs"]["requests"] == len(logprob_requests)
        assert usage["phases"]["draws"]["requests"] == first.done == len(seen) - len(logprob_requests)
        assert usage["prompt_tokens"] > usage["phases"]["draws"]["prompt_tokens"]  # logprob prompts are counted too

        second = run(config, registries_with())
        assert second.status == "complete" and second.model_calls == 0
        assert len(server.records()) == len(seen)  # not one request, of any kind
        again = json.loads((second.run_dir / "manifest.json").read_text())["usage"]
        assert again["requests"] == usage["requests"]  # the rerun spent nothing and forgot nothing

        # a fresh run directory of the same measurement finds every call in the cache
        third = run(RunConfig(**{**config.__dict__, "out_dir": tmp_path / "other"}), registries_with())
        assert third.status == "complete" and third.model_calls == 0 and len(server.records()) == len(seen)


class _Scored:
    """A mimic that answers one-token requests and scores pairs, counting what it was asked."""

    model_id = "scored"
    capabilities = frozenset({Capability.COMPLETION, Capability.LOGPROBS, Capability.LOGLIKELIHOOD})
    context_window = None

    def __init__(self):
        self.requests = 0
        self.pairs = 0

    async def generate(self, requests):
        self.requests += len(requests)
        return [Completion(" x", "length", prompt_tokens=3, completion_tokens=1) for _ in requests]

    async def loglikelihood(self, pairs):
        self.pairs += len(pairs)
        return [-float(len(c)) for _, c in pairs]

    async def aclose(self):
        pass


def test_measuring_calls_are_cached_counted_and_budgeted(tmp_path):
    mimic = _Scored()
    requests = [GenerationRequest(f"prompt {i}", max_tokens=1, top_logprobs=20) for i in range(4)]
    pairs = [("context", " a"), ("context", " bb")]

    async def go(budget: Budget, spent: Usage):
        with DrawCache.open(tmp_path / "cache") as cache:
            calls = ModelCalls(mimic, mimic.model_id, CallLimits(budget=budget), None, spent)
            measuring = calls.measuring("field_probs", cache)
            out = await measuring.generate(requests), await measuring.loglikelihood(pairs)
            return calls, measuring, out

    calls, measuring, (completions, scores) = asyncio.run(go(Budget(), Usage()))
    assert [c.text for c in completions] == [" x"] * 4 and scores == [-2.0, -3.0]
    assert calls.stats.calls == 5 and mimic.requests == 4 and mimic.pairs == 2
    assert calls.by_phase["field_probs"].requests == 6 and calls.spent.tokens == 16

    # the same calls again: all from the cache, nothing counted, nothing asked
    calls, measuring, (completions, scores) = asyncio.run(go(Budget(), Usage()))
    assert measuring.cached == 6 and calls.stats.calls == 0 and mimic.requests == 4 and mimic.pairs == 2
    assert scores == [-2.0, -3.0] and "field_probs" not in calls.by_phase

    # a spent budget stops a measurement before it calls the model
    requests.append(GenerationRequest("a new prompt", max_tokens=1, top_logprobs=20))
    with pytest.raises(BudgetExceeded, match="token budget reached"):
        asyncio.run(go(Budget(max_tokens=10), Usage(prompt_tokens=10)))
    assert mimic.requests == 4


def test_a_local_compute_backend_is_never_timed_out():
    """An in-process backend's call waits only for compute: --request-timeout (for networks) does not apply."""
    import asyncio

    from harness.mimic import Capability, Completion
    from harness.run.budget import Usage
    from harness.run.calls import ModelCalls
    from harness.errors import TransientBackendError
    from harness.run.config import CallLimits

    class Slow:
        model_id = "slow"
        context_window = 1000

        def __init__(self, capabilities):
            self.capabilities = frozenset(capabilities)

        async def generate(self, requests):
            await asyncio.sleep(0.3)
            return [Completion(text="x", finish_reason="stop") for _ in requests]

    limits = CallLimits(1, 0.05, 1, 0.01)
    local = ModelCalls(Slow({Capability.COMPLETION, Capability.LOCAL_COMPUTE}), "slow", limits, None, Usage())
    remote = ModelCalls(Slow({Capability.COMPLETION}), "slow", limits, None, Usage())
    assert local.policy.timeout is None and remote.policy.timeout == 0.05
    assert [c.text for c in asyncio.run(local.call(["r"]))] == ["x"]
    with pytest.raises(TransientBackendError, match="timed out"):
        asyncio.run(remote.call(["r"]))
