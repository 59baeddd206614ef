"""mimic-harness backend for OpenAI-compatible APIs: ``openai:MODEL?option=value&...``.

Options (query string, ``--option``, or a ``--model-config`` entry):

- ``base_url``: default ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1`` (as the openai SDK).
  A list of URLs (in a ``--model-config`` file: ``base_url: [http://h1:8000/v1, http://h2:8000/v1]``;
  on the command line: URLs joined by commas, ``base_url=http://h1:8000/v1,http://h2:8000/v1``) names
  replicas of one model: each request goes to the endpoint with the fewest in flight, a 429 slows
  only the endpoint that sent it, and an endpoint that goes down is drained and retried later
  (:mod:`mimic_openai.pool`). The model id then leaves the URLs out, so any list of the replicas
  shares one cache.
- ``api_key_env``: the environment variable holding the key (default ``OPENAI_API_KEY``); a config
  file may give ``api_key`` instead. A loopback server (127.0.0.1, localhost) needs no key. The key is
  kept in memory only: never in ``model_id``, logs, errors or files.
- ``mode``: ``completions`` (default; base models, the purest mimics) or ``chat``.
- ``prefill`` (``mode=chat`` only; default false): the server continues a trailing assistant message
  (vLLM, and servers that copy its API). The backend then declares ``Capability.ASSISTANT_PREFILL``,
  so the harness renders tasks as ``chat+prefill`` (the item's prefix in an open assistant turn), and
  a request whose last message is the assistant's carries vLLM's extra body fields
  ``"continue_final_message": true, "add_generation_prompt": false``; the answer holds only the
  continuation. A server without them (OpenAI's own API) answers 400, which the run reports as one
  line naming this option. Part of the model id when true. Chat-mode logprobs
  (``logprobs: true, top_logprobs: k``) are read into ``Completion.logprobs`` as in completions mode,
  so with prefill the exact header-field route works for chat models too.
- ``concurrency``: requests in flight and connections kept open; default the run's ``--concurrency``
  (``BuildContext.concurrency``), else 64.
- ``endpoint_concurrency``: with several base URLs, requests in flight per endpoint; default an even
  share of ``concurrency`` (rounded up).
- ``timeout`` (default 60): seconds per request.
- ``transport``: ``auto`` (default, = ``aiohttp``), ``aiohttp`` or ``sdk``. Both speak the same wire
  protocol and share one parser. ``auto`` picks aiohttp on CPU cost: measured with
  ``plugins/mimic-openai/benchmarks/http_client.py`` (client CPU per request against the fake
  server), aiohttp spends about 0.3 ms at any concurrency, the SDK 3.2 ms at concurrency 8 and
  6.2 ms at 64 (most of it in httpcore's connection pool, which rescans every connection per
  request). The harness must sustain 64 concurrent requests at 50 ms latency (1280 req/s): about
  0.4 of a core with aiohttp, and more than a core (so out of reach) with the SDK.

Examples::

    mimic sample "openai:gpt-3.5-turbo-instruct" "Once upon a time" -n 3
    mimic sample "openai:gemma?base_url=http://127.0.0.1:8000/v1" "Review:" --max-tokens 20
    mimic sample "openai:gpt-4o-mini?mode=chat&api_key_env=MY_KEY" "Say hi"
    mimic sample "openai:gemma?base_url=http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1" "Review:"
    mimic run --task bookworld --model "openai:Qwen/Qwen2.5-0.5B-Instruct?base_url=http://127.0.0.1:8000/v1&mode=chat&prefill=true"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness import ModelSpec, hookimpl

from mimic_openai.backend import OpenAIMimic
from mimic_openai.config import OpenAIConfig, parse_config

if TYPE_CHECKING:  # the protocols module imports polars; the plugin only names the type
    from harness import BuildContext

__version__ = "0.1.0"
__all__ = ["OpenAIMimic", "OpenAIConfig", "create_openai", "parse_config"]


def create_openai(spec: ModelSpec, ctx: BuildContext | None = None) -> OpenAIMimic:
    """Factory for ``openai:MODEL`` specs; without a ``concurrency`` option the pool follows the run's."""
    run_concurrency = ctx.concurrency if ctx is not None else None
    return OpenAIMimic(parse_config(spec, default_concurrency=run_concurrency))


@hookimpl
def register_mimics(register):
    """Register the ``openai`` backend."""
    register("openai", create_openai, "OpenAI-compatible HTTP APIs (OpenAI, vLLM, llama.cpp server): completions or chat")
