"""The ``lm-eval`` mimic: sample any model lm-evaluation-harness can build.

A spec ``lm-eval:NAME?k=v&...`` builds lm-eval's model ``NAME`` (``hf``, ``vllm``,
``local-completions``, ``local-chat-completions``, ``gguf``...) with the options as its model args,
through lm-eval's registry (``get_model(NAME).create_from_arg_obj(args)``), and draws through
``generate_until``.

Sampling needs two things lm-eval does not do for evaluation, which is greedy and cached:

* **Distinct seeds per draw.** lm-eval's API models put one fixed ``seed`` (1234) in every payload
  and batch requests by identical ``gen_kwargs``. Each draw here carries its own ``seed`` inside
  its ``gen_kwargs``; the payload builders spread ``gen_kwargs`` after the fixed seed, so the draw's
  seed is what the server receives. Because draws then never share ``gen_kwargs``, lm-eval would
  send them one at a time; this module instead issues one single-request ``generate_until`` per
  draw from ``num_concurrent`` worker threads. In-process torch models (``hf``) cannot take a seed
  in ``gen_kwargs`` (transformers rejects unknown generate kwargs), so each draw runs alone after
  ``torch.manual_seed(seed)`` in a forked RNG state. vLLM builds one ``SamplingParams`` per request,
  so all draws go in one call with their seeds.
* **No response cache.** lm-eval's cache keys on (prompt, gen_kwargs) and would collapse repeated
  samples; no cache is ever attached here (``cache_hook`` stays lm-eval's no-op default).

Options that are not lm-eval model args: ``api_key_env`` (name of the environment variable that
holds the API key) and ``api_key`` (kept in memory only); either becomes a bearer header. For API
models ``max_retries`` defaults to 1 here (lm-eval: 3), because the harness does the retrying.

Completions report ``finish_reason`` and token counts: from the server's response for API models
(seen by wrapping ``parse_generations`` on the model instance), from the generated token ids for
``hf`` (wrapping ``_model_generate``), else by re-tokenising with lm-eval's tokenizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import inspect
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from harness import (Capability, Completion, GenerationRequest, ModelSpec, ModelSpecError, PermanentBackendError,
                     is_secret_option)

from mimic_lmeval.failures import Redactor, guard_lm_eval_logs, map_api_error, map_local_error, safe_url

# Options the harness consumes itself; everything else goes to lm-eval's model constructor.
HARNESS_OPTIONS = frozenset({"api_key_env", "api_key"})
# Options that change how requests are sent, not what is sampled: left out of model_id so that a
# cache stays valid when the user changes concurrency or timeouts.
OPERATIONAL_OPTIONS = frozenset(
    {"num_concurrent", "max_retries", "timeout", "batch_size", "max_batch_size", "verify_certificate",
     "ca_cert_path", "api_key_env", "header"}
)
_FEATURED = ("hf", "vllm", "local-completions", "local-chat-completions", "gguf", "openai-completions", "sglang")


# --------------------------------------------------------------------------------------------
# Building lm-eval's model from a spec


def lm_eval_args(options: dict[str, Any]) -> dict[str, Any]:
    """Model args for lm-eval from spec options, with lm-eval's own value parsing.

    Query-string values arrive as text; lm-eval's ``handle_arg_string`` turns ``none`` into None,
    ``"8"`` into 8 and keeps quoted values as strings, exactly as ``--model_args`` would.
    """
    from lm_eval.utils import handle_arg_string

    args = {}
    for key, value in options.items():
        if key in HARNESS_OPTIONS:
            continue
        args[key] = handle_arg_string(value) if isinstance(value, str) else value
    return args


def known_model_names() -> list[str]:
    """Every model name lm-eval's registry knows (loading none of them)."""
    from lm_eval.api.registry import model_registry

    if len(model_registry) == 0:
        import lm_eval.models  # noqa: F401  (fills the registry with lazy entries)
    return sorted(model_registry.keys())


def resolve_model_class(name: str) -> type:
    """lm-eval's class for model ``name``; unknown names and missing packages become ModelSpecError."""
    from lm_eval.api.registry import get_model

    try:
        return get_model(name)
    except ValueError:
        known = known_model_names()
        close = difflib.get_close_matches(name, known, n=3)
        featured = [n for n in _FEATURED if n in known]
        listed = ", ".join(dict.fromkeys(close + featured))  # close matches first, no repeats
        raise ModelSpecError(
            f"lm-eval has no model named {name!r} (known include: {listed}; {len(known)} in all)",
            "write lm-eval:NAME with a name from lm-eval's registry, e.g. lm-eval:hf?pretrained=PATH",
        ) from None
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise ModelSpecError(
            f"lm-eval model {name!r} needs the Python package {missing!r}, which is not installed",
            f"pip install {missing}  (or lm-eval's extra for it, e.g. pip install 'lm-eval[{name}]')",
        ) from None


def _api_key(options: dict[str, Any]) -> str | None:
    """The API key named by ``api_key_env`` (or given as ``api_key``), if any."""
    env = options.get("api_key_env")
    if env:
        key = os.environ.get(str(env))
        if not key:
            raise ModelSpecError(
                f"api_key_env={env} names an environment variable that is not set",
                f"export {env}=... before running",
            )
        return key
    key = options.get("api_key")
    return str(key) if key else None


def public_model_id(spec: ModelSpec) -> str:
    """``spec.model_id`` computed without secrets and without operational options."""
    kept = {k: v for k, v in spec.options.items() if k not in OPERATIONAL_OPTIONS and not is_secret_option(k)}
    return ModelSpec(spec.backend, spec.model, kept).model_id


@dataclass(frozen=True)
class Route:
    """How draws reach one kind of lm-eval model."""

    kind: str  # "api" | "vllm" | "torch" | "greedy-only" | "plain"
    seed_in_gen_kwargs: bool  # the draw's seed travels in gen_kwargs
    seeded: bool  # declare Capability.SEEDED


def _is_hflm(lm: Any) -> bool:
    """lm-eval's HFLM or a subclass (checked by name: importing it would import torch)."""
    return any(c.__name__ == "HFLM" and c.__module__.startswith("lm_eval.") for c in type(lm).__mro__)


def _route_for(lm: Any) -> Route:
    """Pick how draws reach ``lm`` (see :class:`Route`)."""
    from lm_eval.models.api_models import TemplateAPI

    module = type(lm).__module__
    if isinstance(lm, TemplateAPI):
        return Route("api", seed_in_gen_kwargs=True, seeded=True)
    if module.endswith("vllm_causallms"):
        return Route("vllm", seed_in_gen_kwargs=True, seeded=True)
    if module.endswith(".gguf"):
        return Route("greedy-only", seed_in_gen_kwargs=False, seeded=False)
    try:
        import torch  # noqa: F401
    except ImportError:
        return Route("plain", seed_in_gen_kwargs=False, seeded=False)
    # Other in-process models may sample with RNGs torch does not own: seeded, but not declared so.
    return Route("torch", seed_in_gen_kwargs=False, seeded=_is_hflm(lm))


def _raises_not_implemented(fn: Any) -> bool:
    """True for an abstract method or one whose body raises NotImplementedError."""
    if fn is None or getattr(fn, "__isabstractmethod__", False):
        return True
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return False
    return "raise NotImplementedError" in source


def supports_loglikelihood(lm: Any) -> bool:
    """Whether this lm-eval model can score (context, continuation) pairs."""
    from lm_eval.api.model import TemplateLM
    from lm_eval.models.api_models import TemplateAPI

    if isinstance(lm, TemplateAPI):
        from lm_eval.models.openai_completions import LocalChatCompletion, OpenAICompletionsAPI

        if isinstance(lm, LocalChatCompletion) or lm.tokenizer is None:
            return False  # chat APIs give no prompt logprobs; lm-eval needs a tokenizer for context lengths
        if isinstance(lm, OpenAICompletionsAPI):
            return lm.model in ("babbage-002", "davinci-002")  # the only OpenAI models lm-eval allows
        return True
    cls = type(lm)
    method = getattr(cls, "loglikelihood", None)
    if method is getattr(TemplateLM, "loglikelihood", None):
        return not _raises_not_implemented(getattr(cls, "_loglikelihood_tokens", None))
    return not _raises_not_implemented(method)


def _is_chat_api(lm: Any) -> bool:
    from lm_eval.models.openai_completions import LocalChatCompletion

    return isinstance(lm, LocalChatCompletion)


def _has_chat_template(lm: Any) -> bool:
    tokenizer = getattr(lm, "tokenizer", None)
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(lm, "apply_chat_template")


_quiet_done = False
_quiet_lock = threading.Lock()


def quiet_api_progress_bars() -> None:
    """Silence the progress bars of lm-eval's API models (once per process).

    ``TemplateAPI.generate_until`` ignores its ``disable_tqdm`` argument, and this backend calls it
    once per draw, which would print one bar per draw. The module-level ``tqdm`` names of
    ``lm_eval.models.api_models`` are swapped for disabled ones; nothing else changes.
    """
    global _quiet_done
    with _quiet_lock:
        if _quiet_done:
            return
        import lm_eval.models.api_models as api
        from tqdm import tqdm
        from tqdm.asyncio import tqdm_asyncio

        class _QuietAsync:
            gather = staticmethod(functools.partial(tqdm_asyncio.gather, disable=True))

        api.tqdm = functools.partial(tqdm, disable=True)
        api.tqdm_asyncio = _QuietAsync
        _quiet_done = True


def build_lm(spec: ModelSpec) -> tuple[Any, Redactor]:
    """Construct lm-eval's model for ``spec``; configuration problems become ModelSpecError."""
    from lm_eval.models.api_models import TemplateAPI

    cls = resolve_model_class(spec.model)
    args = lm_eval_args(spec.options)
    key = _api_key(spec.options)
    secrets = [str(v) for k, v in spec.options.items() if is_secret_option(k) and v]
    header = spec.options.get("header")
    if isinstance(header, dict):  # a user-given header usually carries the Authorization value
        secrets += [str(v) for v in header.values()] + [str(v).split()[-1] for v in header.values() if str(v).strip()]
    secrets += [v for v in (key, os.environ.get("OPENAI_API_KEY")) if v]
    redact = Redactor(secrets)
    guard_lm_eval_logs(secrets)  # before construction: lm-eval may log while probing the server
    is_api = isinstance(cls, type) and issubclass(cls, TemplateAPI)
    if is_api:
        # The harness retries transient errors itself (honouring Retry-After); lm-eval's own
        # retries would also retry a 401 with backoff. One attempt unless the user asks for more.
        args.setdefault("max_retries", 1)
        if key:
            args.setdefault("header", {"Authorization": f"Bearer {key}"})
    try:
        lm = cls.create_from_arg_obj(args)
    except ModelSpecError:
        raise
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "a dependency"
        raise ModelSpecError(
            f"lm-eval model {spec.model!r} needs the Python package {missing!r}: {redact(exc)}",
            f"pip install {missing}",
        ) from None
    except Exception as exc:  # lm-eval validates args with asserts, ValueError, OSError (missing files)...
        hint = "check the options against lm-eval's model args for this model"
        if is_api and "tokenizer" in str(exc).lower():
            hint = "pass tokenizer_backend=none, or tokenizer=<local tokenizer dir>"
        raise ModelSpecError(
            f"lm-eval could not build model {spec.model!r}: {type(exc).__name__}: {redact(exc)}", hint
        ) from None
    if is_api:
        quiet_api_progress_bars()
    return lm, redact


# --------------------------------------------------------------------------------------------
# The mimic


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; True when one was found."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class LmEvalMimic:
    """A mimic over one lm-eval model object."""

    def __init__(self, spec: ModelSpec, lm: Any, redact: Redactor):
        self.model_id = public_model_id(spec)
        self._lm = lm
        self._redact = redact
        self._name = spec.model
        self._route = _route_for(lm)
        self._url = getattr(lm, "base_url", None)
        self._tls = threading.local()  # per-thread capture of raw API responses / generated tokens
        self._chat_api = _is_chat_api(lm)
        # API draws run num_concurrent at a time; in-process models one at a time (one worker).
        # An own pool, not asyncio.to_thread's default one, which caps at min(32, cores + 4).
        self._concurrency = max(1, int(getattr(lm, "_concurrent", 1) or 1)) if self._route.kind == "api" else 1
        self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="mimic-lm-eval")
        caps = {Capability.COMPLETION}
        if self._chat_api or _has_chat_template(lm):
            caps.add(Capability.CHAT)
        if supports_loglikelihood(lm):
            caps.add(Capability.LOGLIKELIHOOD)
        if self._route.seeded:
            caps.add(Capability.SEEDED)
        self.capabilities = frozenset(caps)
        self.context_window = self._context_window(spec, lm)
        self._install_observers()

    # -- setup ---------------------------------------------------------------------------

    def _context_window(self, spec: ModelSpec, lm: Any) -> int | None:
        if self._route.kind == "api":
            # lm-eval's API default max_length (2048) is a guess, not the server's window.
            value = spec.option("max_length")
            return int(value) if value not in (None, "", "none", "None") else None
        try:
            value = lm.max_length
        except Exception:  # some models compute it lazily from config files
            return None
        return int(value) if isinstance(value, int) else None

    def _install_observers(self) -> None:
        """Wrap two lm-eval methods on this instance to see what its string results hide.

        ``parse_generations`` sees the raw API response (finish_reason, usage); HFLM's
        ``_model_generate`` sees the generated token ids. Results pass through unchanged.
        """
        lm, tls = self._lm, self._tls
        if self._route.kind == "api":
            parse = lm.parse_generations

            def parse_generations(*args: Any, **kwargs: Any) -> Any:
                tls.outputs = kwargs.get("outputs", args[0] if args else None)
                return parse(*args, **kwargs)

            lm.parse_generations = parse_generations
            tokenizer = getattr(lm, "tokenizer", None)
            if tokenizer is not None and getattr(lm, "tokenizer_backend", None) == "huggingface":
                # A fast tokenizer raises "Already borrowed" when two threads use it at once.
                encode, lock = lm.tok_encode, threading.Lock()

                def tok_encode(*args: Any, **kwargs: Any) -> Any:
                    with lock:
                        return encode(*args, **kwargs)

                lm.tok_encode = tok_encode
        elif _is_hflm(lm):
            generate = lm._model_generate

            def _model_generate(context: Any, *args: Any, **kwargs: Any) -> Any:
                out = generate(context, *args, **kwargs)
                tls.generated = out[0, context.shape[1]:].tolist() if out.shape[0] == 1 else None
                return out

            lm._model_generate = _model_generate

    # -- generation ----------------------------------------------------------------------

    def _gen_kwargs(self, req: GenerationRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"until": list(req.stop), "max_gen_toks": int(req.max_tokens)}
        if req.temperature > 0:
            kwargs.update(temperature=float(req.temperature), top_p=float(req.top_p), do_sample=True)
        else:
            kwargs.update(temperature=0.0, do_sample=False)
        if self._route.seed_in_gen_kwargs:
            kwargs["seed"] = int(req.seed)
        return kwargs

    def _context(self, req: GenerationRequest) -> Any:
        """The request's prompt in the form this lm-eval model takes."""
        from lm_eval.models.api_models import JsonChatStr

        if isinstance(req.prompt, str):
            if self._chat_api:  # a chat endpoint takes messages only
                return JsonChatStr(json.dumps([{"role": "user", "content": req.prompt}], ensure_ascii=False))
            return req.prompt
        messages = [{"role": m.role, "content": m.content} for m in req.prompt]
        if self._chat_api:
            return JsonChatStr(json.dumps(messages, ensure_ascii=False))
        if Capability.CHAT in self.capabilities:
            return self._lm.apply_chat_template(messages, add_generation_prompt=True)
        raise PermanentBackendError(
            f"lm-eval {self._name} takes plain-text prompts, and this request is a chat",
            "use a completion task, or a model with a chat template / local-chat-completions",
        )

    def _instance(self, req: GenerationRequest, idx: int) -> Any:
        from lm_eval.api.instance import Instance

        return Instance(request_type="generate_until", doc={}, arguments=(self._context(req), self._gen_kwargs(req)), idx=idx)

    def _check(self, requests: Sequence[GenerationRequest]) -> None:
        for req in requests:
            if req.top_logprobs > 0:
                raise PermanentBackendError(
                    f"lm-eval {self._name} returns text only, not token logprobs",
                    "leave top_logprobs at 0 with the lm-eval backend",
                )
            if self._route.kind == "greedy-only" and req.temperature > 0:
                raise PermanentBackendError(
                    f"lm-eval's {self._name} model always decodes greedily (temperature 0), so it cannot sample",
                    "point lm-eval:local-completions?base_url=http://HOST:PORT/v1/completions&tokenizer_backend=none at the llama.cpp server",
                )

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        """Run a blocking lm-eval call in this mimic's worker threads."""
        if self._lm is None:
            raise PermanentBackendError(f"lm-eval {self._name} mimic is closed", "create a new mimic")
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """One completion per request, in request order."""
        requests = list(requests)
        if not requests:
            return []
        self._check(requests)
        if self._route.kind == "api":
            # One single-draw generate_until per request: each carries its own seed (see module doc).
            return list(await asyncio.gather(*(self._in_worker(self._draw_api, r, i) for i, r in enumerate(requests))))
        if self._route.kind == "vllm":
            return await self._in_worker(self._draw_all_at_once, requests)
        return await self._in_worker(self._draw_one_by_one, requests)

    def _draw_api(self, req: GenerationRequest, idx: int) -> Completion:
        self._tls.outputs = None
        try:
            (text,) = self._lm.generate_until([self._instance(req, idx)], disable_tqdm=True)
        except PermanentBackendError:
            raise
        except Exception as exc:
            raise map_api_error(exc, model=self._name, url=self._url, redact=self._redact) from exc
        return self._api_completion(req, text, self._tls.outputs)

    def _api_completion(self, req: GenerationRequest, text: str, outputs: Any) -> Completion:
        first = outputs[0] if isinstance(outputs, list) and outputs else outputs
        choice = {}
        usage = {}
        if isinstance(first, dict):
            choices = first.get("choices") or [{}]
            choice = choices[0] if isinstance(choices[0], dict) else {}
            usage = first.get("usage") or {}
        text = text or ""
        text, cut = _cut_at_stop(text, req.stop)
        reason = "stop" if cut else (choice.get("finish_reason") or None)
        completion_tokens = usage.get("completion_tokens")
        prompt_tokens = usage.get("prompt_tokens")
        if completion_tokens is None:
            completion_tokens = self._count_tokens(text)
        if prompt_tokens is None:
            prompt_tokens = self._count_tokens(req.prompt if isinstance(req.prompt, str) else "")
        if reason not in ("stop", "length"):
            # Servers without finish_reason: a completion that used every token was cut by length.
            reason = "length" if completion_tokens and completion_tokens >= req.max_tokens else "stop"
        return Completion(text=text, finish_reason=reason, prompt_tokens=int(prompt_tokens or 0),
                          completion_tokens=int(completion_tokens or 0))

    def _count_tokens(self, text: str) -> int | None:
        """Tokens in ``text`` by the model's own tokenizer, or None when lm-eval has none."""
        if not text or getattr(self._lm, "tokenizer", None) is None:
            return 0 if not text else None
        try:
            return len(self._lm.tok_encode(text))
        except Exception:  # a remote or odd tokenizer: counts are bookkeeping, not worth a failure
            return None

    def _draw_all_at_once(self, requests: list[GenerationRequest]) -> list[Completion]:
        instances = [self._instance(r, i) for i, r in enumerate(requests)]
        try:
            texts = self._lm.generate_until(instances, disable_tqdm=True)
        except Exception as exc:
            raise map_local_error(exc, model=self._name, redact=self._redact) from exc
        return [self._local_completion(r, t, None) for r, t in zip(requests, texts, strict=True)]

    def _draw_one_by_one(self, requests: list[GenerationRequest]) -> list[Completion]:
        out = []
        for idx, req in enumerate(requests):
            instance = self._instance(req, idx)
            self._tls.generated = None
            try:
                with self._seeded(req.seed):
                    (text,) = self._lm.generate_until([instance], disable_tqdm=True)
            except PermanentBackendError:
                raise
            except Exception as exc:
                raise self._mapped(exc) from exc
            out.append(self._local_completion(req, text, self._tls.generated))
        return out

    def _mapped(self, exc: Exception) -> Exception:
        """The harness error for a failure of this model (HTTP for API models and gguf)."""
        if self._route.kind in ("api", "greedy-only"):  # lm-eval's gguf model talks HTTP to llama.cpp
            return map_api_error(exc, model=self._name, url=self._url, redact=self._redact)
        return map_local_error(exc, model=self._name, redact=self._redact)

    def _seeded(self, seed: int) -> Any:
        """A context in which torch's RNG is seeded with ``seed`` and restored afterwards."""
        if self._route.kind != "torch":
            return contextlib.nullcontext()
        import torch

        device = getattr(self._lm, "device", None)
        cuda = [device.index or 0] if getattr(device, "type", None) == "cuda" else []
        stack = contextlib.ExitStack()
        stack.enter_context(torch.random.fork_rng(devices=cuda))
        torch.manual_seed(int(seed))
        return stack

    def _local_completion(self, req: GenerationRequest, text: str, generated: list[int] | None) -> Completion:
        text = text or ""
        text, cut = _cut_at_stop(text, req.stop)
        prompt_tokens = self._count_tokens(req.prompt if isinstance(req.prompt, str) else "") or 0
        if generated is not None:
            completion_tokens = len(generated)  # one row per call: no padding to discount
            # lm-eval cuts the decoded text at a stop string (or EOS); a draw that used all its
            # tokens and ended on neither was cut by the length limit.
            hit_stop = cut or self._ended_on_stop(generated, req.stop)
            reason = "length" if completion_tokens >= req.max_tokens and not hit_stop else "stop"
        else:
            completion_tokens = self._count_tokens(text) or 0
            reason = "length" if completion_tokens >= req.max_tokens and not cut else "stop"
        return Completion(text=text, finish_reason=reason, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens)

    def _ended_on_stop(self, tokens: list[int], stop: Sequence[str]) -> bool:
        eos = getattr(self._lm, "eot_token_id", None)
        if eos is not None and eos in tokens:
            return True
        if not stop:
            return False
        try:
            raw = self._lm.tok_decode(tokens)
        except Exception:
            return False
        return any(s and s in raw for s in stop)

    # -- scoring -------------------------------------------------------------------------

    async def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """log P(continuation | context) for each pair, by lm-eval's ``loglikelihood``."""
        if Capability.LOGLIKELIHOOD not in self.capabilities:
            raise PermanentBackendError(
                f"lm-eval {self._name} cannot score continuations as configured",
                "use a completions model with a tokenizer (not tokenizer_backend=none), hf, vllm or gguf",
            )
        pairs = [(str(c), str(x)) for c, x in pairs]
        if not pairs:
            return []
        return await self._in_worker(self._score, pairs)

    def _score(self, pairs: list[tuple[str, str]]) -> list[float]:
        from lm_eval.api.instance import Instance

        instances = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]
        try:
            results = self._lm.loglikelihood(instances, disable_tqdm=True)
        except PermanentBackendError:
            raise
        except Exception as exc:
            raise self._mapped(exc) from exc
        return [float(r[0]) for r in results]

    async def aclose(self) -> None:
        """Stop the worker threads, drop the model object (weights, HTTP state), free cached GPU memory."""
        lm, self._lm = self._lm, None
        if lm is None:
            return
        # Draws still running finish on their own (bounded by lm-eval's timeout); queued ones are dropped.
        self._pool.shutdown(wait=False, cancel_futures=True)
        del lm
        import gc
        import sys

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"LmEvalMimic({self.model_id!r}, route={self._route.kind}, url={safe_url(self._url) if self._url else None})"


def create_lmeval_mimic(spec: ModelSpec, ctx: Any = None) -> LmEvalMimic:
    """Factory for ``lm-eval:<model name>?<lm-eval model args>``."""
    lm, redact = build_lm(spec)
    return LmEvalMimic(spec, lm, redact)

