"""Turn what lm-eval (and the HTTP clients under it) raise into the harness's public error types.

lm-eval's API models re-raise the client's own exception after their retries: ``requests`` on the
synchronous path (``num_concurrent<=1``), ``aiohttp`` on the concurrent one. Both carry a status code
and headers, which decide transient vs permanent. Every message is one line, with URLs stripped of
credentials and query strings and every known secret value masked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

from harness import BackendError, HarnessError, PermanentBackendError, RateLimitedError, TransientBackendError

_MAX_DETAIL = 160  # characters of a server's error text kept in a message


def safe_url(url: str | None) -> str:
    """``url`` without user info, query string or fragment (they may hold keys)."""
    if not url:
        return "(no base_url)"
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "(unparseable base_url)"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Redactor:
    """Masks secret values (api keys, tokens) and squeezes text onto one short line."""

    def __init__(self, secrets: Iterable[str] = ()):
        # Short values would mask ordinary words; real keys are long.
        self._secrets = sorted({s for s in secrets if isinstance(s, str) and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: object, limit: int = _MAX_DETAIL) -> str:
        """One line of ``text`` with secrets replaced by ``***``, cut at ``limit`` characters."""
        line = " ".join(str(text).split())
        for secret in self._secrets:
            line = line.replace(secret, "***")
        if len(line) > limit:
            line = line[: limit - 1] + "…"
        return line


def _status_and_headers(exc: BaseException) -> tuple[int | None, dict, str]:
    """Status code, headers and body excerpt of an HTTP error from requests or aiohttp."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:  # requests.HTTPError
        try:
            body = response.text or ""
        except Exception:  # a body that cannot be decoded tells us nothing more
            body = ""
        return int(status), dict(response.headers or {}), body
    status = getattr(exc, "status", None)
    # aiohttp's ContentTypeError carries the 200 of a body that is not JSON: not an HTTP failure.
    if isinstance(status, int) and status >= 400 and type(exc).__module__.startswith("aiohttp"):
        return status, dict(getattr(exc, "headers", None) or {}), str(getattr(exc, "message", "") or "")
    return None, {}, ""


def retry_after_seconds(headers: dict) -> float | None:
    """Seconds from a ``Retry-After`` header (number or HTTP date), if present and sane."""
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            from datetime import datetime, timezone

            seconds = (parsedate_to_datetime(str(value)) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds)


def _server_detail(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the raw body."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return body
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return body


def _unwrap(exc: BaseException) -> BaseException:
    """The real cause behind tenacity's RetryError."""
    last_attempt = getattr(exc, "last_attempt", None)
    if last_attempt is not None and type(exc).__name__ == "RetryError":
        inner = last_attempt.exception()
        if inner is not None:
            return inner
    return exc


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names & {"ConnectionError", "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError",
                 "ClientOSError", "ConnectionRefusedError", "ConnectionResetError"}
    )


def _is_timeout(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or bool(names & {"Timeout", "ServerTimeoutError"})


def _is_malformed_body(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (json.JSONDecodeError, KeyError, IndexError)) or bool(
        names & {"JSONDecodeError", "ContentTypeError", "InvalidJSONError"}
    )


def map_api_error(exc: BaseException, *, model: str, url: str | None, redact: Redactor) -> BackendError:
    """Map an exception from an lm-eval API model (HTTP underneath) to a harness backend error."""
    exc = _unwrap(exc)
    if isinstance(exc, HarnessError):
        return exc if isinstance(exc, BackendError) else PermanentBackendError(exc.message, exc.hint)
    where = safe_url(url)
    status, headers, body = _status_and_headers(exc)
    if status is not None:
        detail = redact(_server_detail(body)) if body else ""
        said = f": {detail}" if detail else ""
        if status in (429, 503):
            return RateLimitedError(
                f"lm-eval {model}: server at {where} asked to slow down (HTTP {status}){said}",
                retry_after=retry_after_seconds(headers),
                hint="lower num_concurrent or wait; the run can be resumed",
            )
        if status >= 500 or status in (408, 425):
            return TransientBackendError(
                f"lm-eval {model}: server at {where} failed (HTTP {status}){said}",
                "retry later; check the server's log if it persists",
            )
        if status in (401, 403):
            return PermanentBackendError(
                f"lm-eval {model}: server at {where} refused the credentials (HTTP {status}){said}",
                "set the key with api_key_env=VAR (or OPENAI_API_KEY for local-completions)",
            )
        if status == 404:
            return PermanentBackendError(
                f"lm-eval {model}: {where} was not found (HTTP 404){said}",
                "base_url must be the full endpoint, e.g. http://host:port/v1/completions, and model a name the server serves",
            )
        return PermanentBackendError(
            f"lm-eval {model}: server at {where} rejected the request (HTTP {status}){said}",
            "check the model options and sampling parameters",
        )
    if isinstance(exc, RuntimeError) and "valid response" in str(exc):
        # lm-eval's gguf model swallows HTTP errors, retries 3 times, then raises this RuntimeError.
        return TransientBackendError(f"lm-eval {model}: no valid response from {where} after lm-eval's retries",
                                     "is the llama.cpp server running, and is base_url right?")
    if _is_timeout(exc):
        return TransientBackendError(f"lm-eval {model}: request to {where} timed out", "raise timeout=SECONDS or retry")
    if _is_connection_error(exc):
        return TransientBackendError(
            f"lm-eval {model}: cannot reach {where} ({type(exc).__name__})",
            "is the server running, and is base_url right?",
        )
    if _is_malformed_body(exc) or isinstance(exc, (TypeError, ValueError)):
        # lm-eval parses responses by indexing and zipping; a missing or empty field surfaces as
        # KeyError, TypeError or ValueError (zip strict) after a 200.
        return TransientBackendError(
            f"lm-eval {model}: malformed response from {where} ({type(exc).__name__}: {redact(exc, 80)})",
            "check that the server speaks the OpenAI completions API",
        )
    return PermanentBackendError(
        f"lm-eval {model} failed: {type(exc).__name__}: {redact(exc)}",
        "rerun with --debug for the traceback",
    )


def map_local_error(exc: BaseException, *, model: str, redact: Redactor) -> BackendError:
    """Map an exception from an in-process lm-eval model (hf, vllm...) to a harness backend error."""
    if isinstance(exc, HarnessError):
        return exc if isinstance(exc, BackendError) else PermanentBackendError(exc.message, exc.hint)
    name = type(exc).__name__
    if name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()):
        return PermanentBackendError(f"lm-eval {model}: out of memory while generating", "lower max_tokens or use a smaller model/dtype")
    if isinstance(exc, AssertionError) and "max tokens" in str(exc):
        return PermanentBackendError(f"lm-eval {model}: {redact(exc)}", "lower max_tokens or raise max_length")
    return PermanentBackendError(f"lm-eval {model} failed: {name}: {redact(exc)}", "rerun with --debug for the traceback")


_BEARER = re.compile(r"(Bearer\s+)[^\s'\",}]+")
# lm-eval log lines that repeat a failure this backend raises as a HarnessError anyway, or warn
# about an EOS default the harness never relies on (it always passes its stop strings).
_DUPLICATES = ("API request failed", "Exception:", "Cannot determine EOS string")


class _LmEvalLogFilter(logging.Filter):
    """Drops lm-eval log records that duplicate our errors; masks credentials in the rest.

    lm-eval logs ``repr(exception)`` of aiohttp errors, whose request headers include the
    ``Authorization`` header: without this filter an API key would reach stderr.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self.secrets.update(s for s in secrets if isinstance(s, str) and len(s) >= 6)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_DUPLICATES):
            return False
        clean = _BEARER.sub(r"\1***", message)
        for secret in sorted(self.secrets, key=len, reverse=True):
            clean = clean.replace(secret, "***")
        if clean != message:
            record.msg, record.args = clean, None
        return True


_LOG_FILTER = _LmEvalLogFilter()
_LOGGERS = ("lm_eval.models.api_models", "lm_eval.models.openai_completions", "lm_eval.models.gguf", "lm_eval.utils")


def guard_lm_eval_logs(secrets: Iterable[str] = ()) -> None:
    """Attach the credential-masking filter to lm-eval's API loggers (idempotent)."""
    _LOG_FILTER.add(secrets)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)
