"""What the fake OpenAI server says: deterministic completions and the JSON bodies that carry them.

Text is a pure function of (prompt, seed, model, choice index, max_tokens, stop), so a test can
compute the exact expected completion with :func:`expected_completion`. Tokens are whitespace tokens:
each is a separator (a space, sometimes a newline) followed by a word, so ``text.split()`` counts them.
With ``temperature == 0`` the seed and choice index are ignored (greedy decoding).

Chat mode: by default the assistant's content is such words too. With ``answers`` (the server's
``chat_answers`` setting) it is one of those texts, picked by the same deterministic stream, so a
test can plant parsable items, chatter and refusals. A request with vLLM's
``continue_final_message`` (the last message is the assistant's, left open) is answered with words
that continue that message: the response holds the continuation only, never the prefix again.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass
from typing import Any

# Names of the faults the server can inject (see FakeServerSettings.faults).
FAULTS = (
    "rate_limit",  # 429 with Retry-After
    "server_error",  # 500
    "unavailable",  # 503 with Retry-After
    "reset",  # the connection is closed with no response
    "hang",  # no response until the client gives up (or the server stops)
    "slow_body",  # a valid body sent in slow chunks
    "truncated",  # 200 whose JSON body is cut in half
    "non_json",  # 200 with an HTML body
    "empty_choices",  # 200 with "choices": []
    "bad_logprobs",  # 200 whose logprobs are inconsistent (lengths differ, a value is not a number)
)

_WORDS = (
    "the a of and to in is it that was he for on are as with his they at be this from I have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up out them "
    "then she many some so these would other into has more her two like him see time could no make than first "
    "been its who now people my made over did down only way find use may water long little very after words"
).split()
_EOS_PROBABILITY = 1 / 24  # mean completion length about 24 tokens when max_tokens allows
_NEWLINE_PROBABILITY = 0.12


def prompt_text(prompt: Any) -> str:
    """A canonical string form of a completions prompt or a chat message list."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_hash(prompt: Any) -> str:
    """First 16 hex digits of the sha256 of the prompt (what the request log records)."""
    return hashlib.sha256(prompt_text(prompt).encode("utf-8")).hexdigest()[:16]


def prompt_tokens(prompt: Any) -> int:
    """Whitespace tokens of a prompt (chat: of all message contents)."""
    if isinstance(prompt, str):
        return len(prompt.split())
    return sum(len(str(m.get("content", "")).split()) for m in prompt if isinstance(m, dict))


@dataclass(frozen=True)
class FakeChoice:
    """One generated choice: its text, whitespace tokens, their logprobs and why it ended."""

    text: str
    tokens: tuple[str, ...]
    logprobs: tuple[float, ...]
    finish_reason: str

    def top_logprobs(self, k: int, key: str) -> list[list[tuple[str, float]]]:
        """k alternatives per token (the sampled token first), deterministic in ``key``."""
        rng = random.Random(f"top\x1f{key}")
        out = []
        for token, lp in zip(self.tokens, self.logprobs):
            alts = [(token, lp)]
            sep = token[0] if token[:1].isspace() else " "
            for j in range(1, k):
                alts.append((f"{sep}{_WORDS[rng.getrandbits(16) % len(_WORDS)]}#{j}", round(lp - 0.25 * j - rng.random(), 4)))
            out.append(alts)
        return out


def _rng_key(phash: str, seed: int | None, model: str, index: int, temperature: float) -> str:
    if temperature == 0:
        seed, index = 0, 0
    return f"{model}\x1f{seed}\x1f{index}\x1f{phash}"


_EOS_CUT = int(_EOS_PROBABILITY * 0x10000)
_NEWLINE_CUT = int(_NEWLINE_PROBABILITY * 0x100)
_BYTES_PER_TOKEN = 5  # end-of-text (2), separator (1), word (1), logprob (1)
_LOGPROBS = tuple(round(-0.05 - 2.5 * b / 256, 4) for b in range(256))


def generate(prompt: Any, *, seed: int | None, model: str, index: int = 0, max_tokens: int = 16,
             stop: tuple[str, ...] | list[str] = (), temperature: float = 1.0, phash: str | None = None) -> FakeChoice:
    """Generate one choice deterministically (see module docstring); ``phash`` saves rehashing the prompt."""
    # SHAKE-128 is an extendable-output hash: one call yields all the random bytes the choice can
    # need, and a longer digest starts with the shorter one, so max_tokens never changes the prefix.
    key = _rng_key(phash or prompt_hash(prompt), seed, model, index, temperature).encode()
    limit = max(0, int(max_tokens))
    stream = hashlib.shake_128(key).digest(_BYTES_PER_TOKEN * min(limit, 64))
    tokens: list[str] = []
    lps: list[float] = []
    finish = "length"
    n_words = len(_WORDS)
    for i in range(limit):
        at = _BYTES_PER_TOKEN * i
        if at >= len(stream):
            stream = hashlib.shake_128(key).digest(_BYTES_PER_TOKEN * limit)
        if tokens and (stream[at] | stream[at + 1] << 8) < _EOS_CUT:
            finish = "stop"
            break
        sep = "\n" if stream[at + 2] < _NEWLINE_CUT else " "
        tokens.append(sep + _WORDS[stream[at + 3] % n_words])
        lps.append(_LOGPROBS[stream[at + 4]])
    text = "".join(tokens)
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        text, finish = text[:cut], "stop"
        kept, used = 0, 0
        while kept < len(tokens) and used + len(tokens[kept]) <= cut:
            used += len(tokens[kept])
            kept += 1
        tokens, lps = tokens[:kept], lps[:kept]
    return FakeChoice(text, tuple(tokens), tuple(lps), finish)


def canned_choice(answers: tuple[str, ...] | list[str], *, phash: str, seed: int | None, model: str, index: int = 0,
                  max_tokens: int = 16, temperature: float = 1.0) -> FakeChoice:
    """One of ``answers``, picked deterministically by (prompt, seed, model, index); cut at ``max_tokens`` tokens."""
    key = _rng_key(phash, seed, model, index, temperature).encode()
    stream = hashlib.shake_128(key).digest(4 + _BYTES_PER_TOKEN)
    text = answers[int.from_bytes(stream[:4], "little") % len(answers)]
    tokens = re.findall(r"\s*\S+", text) or [text]
    kept = tokens[: max(0, int(max_tokens))]
    finish = "stop" if len(kept) == len(tokens) else "length"
    return FakeChoice("".join(kept), tuple(kept), tuple(_LOGPROBS[stream[4]] for _ in kept), finish)


def expected_completion(prompt: Any, *, seed: int | None, model: str, max_tokens: int = 16,
                        stop: tuple[str, ...] | list[str] = (), temperature: float = 1.0, index: int = 0) -> str:
    """The text the fake server returns for these request parameters."""
    return generate(prompt, seed=seed, model=model, index=index, max_tokens=max_tokens, stop=stop,
                    temperature=temperature).text


def _completion_logprobs(choice: FakeChoice, k: int, key: str) -> dict:
    offsets, pos = [], 0
    for token in choice.tokens:
        offsets.append(pos)
        pos += len(token)
    return {
        "tokens": list(choice.tokens),
        "token_logprobs": list(choice.logprobs),
        "top_logprobs": [dict(alts) for alts in choice.top_logprobs(k, key)] if k > 0 else None,
        "text_offset": offsets,
    }


def _chat_logprobs(choice: FakeChoice, k: int, key: str) -> dict:
    tops = choice.top_logprobs(k, key) if k > 0 else [[] for _ in choice.tokens]
    return {
        "content": [
            {"token": token, "logprob": lp, "bytes": list(token.encode()),
             "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alts]}
            for token, lp, alts in zip(choice.tokens, choice.logprobs, tops)
        ]
    }


def corrupt_logprobs(body: dict, chat: bool) -> None:
    """Make every choice's logprobs inconsistent (the ``bad_logprobs`` fault)."""
    for choice in body.get("choices", []):
        if chat:
            choice["logprobs"] = {"content": [{"token": " x", "logprob": "not-a-number", "top_logprobs": {}}]}
        else:
            lp = choice.get("logprobs") or {"tokens": [" x"], "token_logprobs": [-1.0]}
            lp["token_logprobs"] = ["not-a-number", *lp.get("token_logprobs", [])[:-2]]
            choice["logprobs"] = lp


def build_body(path: str, payload: dict, *, seed_fallback: int, request_id: int, phash: str | None = None,
               answers: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """The response body for a valid generation request and a summary for the request log.

    ``payload`` is the parsed request JSON; ``path`` is ``/v1/completions`` or ``/v1/chat/completions``;
    ``phash`` is the prompt's hash when the caller already has it; ``answers``: canned chat answers
    (module docstring), not used to continue a final message.
    """
    chat = path.endswith("/chat/completions")
    prompt = payload["messages"] if chat else payload["prompt"]
    model = str(payload["model"])
    seed = payload.get("seed")
    seed = seed_fallback if seed is None else int(seed)
    n = int(payload.get("n") or 1)
    max_tokens = payload.get("max_tokens", payload.get("max_completion_tokens"))
    max_tokens = 16 if max_tokens is None else int(max_tokens)
    stop = payload.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    temperature = float(payload.get("temperature", 1.0))
    if chat:
        k = int(payload.get("top_logprobs") or 0) if payload.get("logprobs") else -1
    else:
        k = int(payload["logprobs"]) if payload.get("logprobs") is not None else -1
    phash = phash or prompt_hash(prompt)
    canned = answers if chat and answers and not payload.get("continue_final_message") else None
    choices, used = [], 0
    for index in range(n):
        if canned:
            choice = canned_choice(canned, phash=phash, seed=seed, model=model, index=index, max_tokens=max_tokens,
                                   temperature=temperature)
        else:
            choice = generate(prompt, seed=seed, model=model, index=index, max_tokens=max_tokens, stop=stop,
                              temperature=temperature, phash=phash)
        used += len(choice.tokens)
        key = _rng_key(phash, seed, model, index, temperature)
        entry: dict[str, Any] = {"index": index, "finish_reason": choice.finish_reason}
        if chat:
            entry["message"] = {"role": "assistant", "content": choice.text}
            entry["logprobs"] = _chat_logprobs(choice, k, key) if k >= 0 else None
        else:
            entry["text"] = choice.text
            entry["logprobs"] = _completion_logprobs(choice, k, key) if k >= 0 else None
        choices.append(entry)
    n_prompt = prompt_tokens(prompt)
    body = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-fake{request_id}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": used, "total_tokens": n_prompt + used},
    }
    return body, {"model": model, "seed": seed, "prompt_hash": phash, "n": n}


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """An OpenAI-style error body."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def validate_request(path: str, payload: Any) -> str | None:
    """Return why a generation request is invalid (HTTP 400), or None."""
    if not isinstance(payload, dict):
        return "the request body must be a JSON object"
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return "you must provide a model parameter"
    if payload.get("stream"):
        return "streaming is not supported by the fake server"
    chat = path.endswith("/chat/completions")
    if chat:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return "'messages' must be a non-empty list of objects"
        if payload.get("continue_final_message"):  # vLLM's own checks
            if payload.get("add_generation_prompt", True):
                return "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            if messages[-1].get("role") != "assistant":
                return "`continue_final_message` needs the last message to be the assistant's"
    elif not isinstance(payload.get("prompt"), str):
        return "'prompt' must be a string"
    for name in ("n", "max_tokens", "max_completion_tokens", "seed", "logprobs", "top_logprobs"):
        value = payload.get(name)
        if value is not None and not isinstance(value, (int, bool)):
            return f"'{name}' must be an integer"
    if int(payload.get("n") or 1) < 1 or int(payload.get("max_tokens") or 1) < 0:
        return "'n' must be >= 1 and 'max_tokens' >= 0"
    stop = payload.get("stop")
    if stop is not None and not isinstance(stop, str) and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        return "'stop' must be a string or a list of strings"
    return None
