"""The OpenAI wire format, shared by both transports: request bodies, response checks, error classes.

A response that is not exactly what was asked for (no choices, missing text, logprobs that do not
line up) raises :class:`TransientBackendError`: a wrong value is never returned as a completion.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from harness import (
    BackendError,
    ChatMessage,
    Completion,
    GenerationRequest,
    PermanentBackendError,
    RateLimitedError,
    TokenLogprob,
    TransientBackendError,
)

from mimic_openai.config import OpenAIConfig

# vLLM's extra chat-completion fields for assistant prefill: render the conversation without opening a
# new assistant turn, and let the model continue the last (assistant) message, whose text the answer
# then extends (the response holds only the continuation).
CONTINUE_FINAL_MESSAGE = {"continue_final_message": True, "add_generation_prompt": False}
_FINISH = {"stop": "stop", "length": "length", "eos": "stop", "eos_token": "stop", "end_turn": "stop",
           "stop_sequence": "stop", "max_tokens": "length"}


def endpoint(config: OpenAIConfig) -> str:
    """The path under base_url that this mode posts to."""
    return "/completions" if config.mode == "completions" else "/chat/completions"


def build_payload(request: GenerationRequest, config: OpenAIConfig) -> dict[str, Any]:
    """The JSON body of one request: one sample (n=1) with the request's own seed."""
    body: dict[str, Any] = {
        "model": config.model,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "n": 1,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if config.mode == "completions":
        if not isinstance(request.prompt, str):
            raise PermanentBackendError(
                f"openai:{config.model} is in completions mode but got a chat prompt",
                "add mode=chat to the model spec, or give the task a text prompt",
            )
        body["prompt"] = request.prompt
        if request.top_logprobs > 0:
            body["logprobs"] = request.top_logprobs
    else:
        messages = [ChatMessage("user", request.prompt)] if isinstance(request.prompt, str) else request.prompt
        body["messages"] = [{"role": m.role, "content": m.content} for m in messages]
        if config.prefill and messages[-1].role == "assistant":
            body.update(CONTINUE_FINAL_MESSAGE)
        if request.top_logprobs > 0:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
    return body


def _malformed(config: OpenAIConfig, what: str) -> TransientBackendError:
    return TransientBackendError(f"malformed response from {config.public_url}: {what}", "the server may be overloaded; retrying can help")


def _logprob(value: Any, *, sampled: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"logprob {value!r} is not a number")
    value = float(value)
    if math.isnan(value) or value > 1e-4 or (sampled and math.isinf(value)):
        raise ValueError(f"logprob {value!r} is not a log probability")
    return value


def _completion_logprobs(lp: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(lp, dict):
        raise ValueError("no logprobs object")
    tokens, values, tops = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise ValueError("tokens and token_logprobs differ in length")
    if tops is not None and (not isinstance(tops, list) or len(tops) != len(tokens)):
        raise ValueError("top_logprobs has the wrong length")
    out = []
    for i, (token, value) in enumerate(zip(tokens, values)):
        top = tops[i] if tops is not None else None
        if not isinstance(token, str) or not (top is None or isinstance(top, dict)):
            raise ValueError("a token or its alternatives have the wrong type")
        alts = {str(t): _logprob(v, sampled=False) for t, v in (top or {}).items()}
        out.append(TokenLogprob(token, _logprob(value, sampled=True), alts))
    return tuple(out)


def _chat_logprobs(lp: Any) -> tuple[TokenLogprob, ...]:
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        raise ValueError("no logprobs.content list")
    out = []
    for item in content:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise ValueError("a logprobs entry has no token")
        top = item.get("top_logprobs") or []
        if not isinstance(top, list) or not all(isinstance(t, dict) and isinstance(t.get("token"), str) for t in top):
            raise ValueError("top_logprobs is not a list of {token, logprob}")
        alts = {t["token"]: _logprob(t.get("logprob"), sampled=False) for t in top}
        out.append(TokenLogprob(item["token"], _logprob(item.get("logprob"), sampled=True), alts))
    return tuple(out)


def _count(usage: Any, name: str) -> int:
    value = usage.get(name, 0) if isinstance(usage, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_completion(body: bytes, request: GenerationRequest, config: OpenAIConfig) -> Completion:
    """Check a 200 response body and turn it into a :class:`Completion`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        snippet = body[:60].decode("utf-8", "replace").replace("\n", " ")
        raise _malformed(config, f"body is not JSON ({len(body)} bytes: {config.scrub(snippet)!r}...)") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _malformed(config, "no choices")
    choice = choices[0]
    finish = choice.get("finish_reason")
    if config.mode == "completions":
        text = choice.get("text")
    else:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if text is None and isinstance(message, dict) and isinstance(message.get("refusal"), str):
            text, finish = "", "refusal"  # the model declined: an answer, not a fault
    if not isinstance(text, str):
        raise _malformed(config, "the choice has no text")
    if not isinstance(finish, str):
        raise _malformed(config, "the choice has no finish_reason")
    logprobs = None
    if request.top_logprobs > 0 and finish != "refusal":
        try:
            parse = _completion_logprobs if config.mode == "completions" else _chat_logprobs
            logprobs = parse(choice.get("logprobs"))
        except ValueError as exc:
            raise _malformed(config, f"logprobs: {exc}") from None
    usage = data.get("usage")
    return Completion(
        text=text,
        finish_reason=_FINISH.get(finish, finish),
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        logprobs=logprobs,
    )


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = (lowered.get("retry-after") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _server_message(body: bytes) -> tuple[str, str]:
    """The error's message and code from an OpenAI-style error body (empty when absent)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:120].decode("utf-8", "replace"), ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or ""), str(error.get("code") or error.get("type") or "")
    if isinstance(error, str):
        return error, ""
    return (str(data.get("message", "")) if isinstance(data, dict) else ""), ""


def prefill_rejected(headers: Mapping[str, str], body: bytes, config: OpenAIConfig) -> PermanentBackendError:
    """The error of a 400 to a request that carried ``continue_final_message``: the server has no prefill."""
    rejected = classify_status(400, headers, body, config)
    said = "" if "continue_final_message" in rejected.message else " (the request carried continue_final_message)"
    return PermanentBackendError(
        f"{rejected.message}{said}",
        f"this server does not take assistant prefill: drop prefill=true from openai:{config.model} "
        "(the run then parses items from the chat answers)",
    )


def classify_status(status: int, headers: Mapping[str, str], body: bytes, config: OpenAIConfig) -> BackendError:
    """The error a non-2xx response stands for (the runner retries transient ones)."""
    url = config.public_url
    message, code = _server_message(body)
    detail = config.scrub(" ".join(message.split()))[:200]
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        # No server text here: providers echo part of the rejected key in it.
        return PermanentBackendError(f"authentication failed (HTTP {status}) at {url}", config.key_hint())
    if status == 429 and code == "insufficient_quota":
        return PermanentBackendError(f"quota exhausted (HTTP 429) at {url}{suffix}", "add credit to the account or use another key")
    if status in (429, 503):
        return RateLimitedError(f"rate limited (HTTP {status}) at {url}", retry_after=parse_retry_after(headers))
    if status == 404:
        return PermanentBackendError(
            f"model {config.model!r} or endpoint {endpoint(config)} not found (HTTP 404) at {url}{suffix}",
            f"check the model name (GET {url}/models lists them) and that base_url ends in /v1",
        )
    if status in (408, 409) or status >= 500:
        return TransientBackendError(f"server error (HTTP {status}) at {url}{suffix}", "the server may recover; the run retries it")
    return PermanentBackendError(
        f"request rejected (HTTP {status}) at {url}{suffix}",
        "check the sampling options, and mode=completions|chat against what the model supports",
    )
