"""Options of ``openai:MODEL?...`` and where the API key comes from.

The key is held in a :class:`Secret`, whose ``repr``/``str`` never show it, and is never part of
``model_id``, log lines, error messages or files.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from harness import ModelSpec, ModelSpecError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CONCURRENCY = 64
MODES = ("completions", "chat")
TRANSPORTS = ("auto", "aiohttp", "sdk")
# The SDK costs 3-6 ms of CPU per request against aiohttp's 0.3 ms (see the package docstring).
AUTO_TRANSPORT = "aiohttp"
OPTIONS = ("base_url", "api_key_env", "api_key", "mode", "concurrency", "endpoint_concurrency", "timeout", "transport",
           "prefill")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The secret value (for the Authorization header only)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class OpenAIConfig:
    """Resolved, validated backend options."""

    model: str
    base_url: str  # no trailing slash; with several endpoints, the first
    api_key: Secret | None
    api_key_env: str
    key_from_config: bool  # the key came from an ``api_key`` option, not the environment
    mode: str
    concurrency: int
    timeout: float
    transport: str  # "aiohttp" or "sdk" (auto resolved)
    endpoints: tuple[str, ...] = ()  # every base URL when base_url was a list (replicas of one model); else empty
    endpoint_concurrency: int = 0  # requests in flight per endpoint (with several endpoints)
    prefill: bool = False  # chat mode: a trailing assistant message is continued (vLLM's continue_final_message)

    def endpoint_configs(self) -> list[OpenAIConfig]:
        """One single-server config per endpoint, each with its own concurrency."""
        return [replace(self, base_url=url, endpoints=(), concurrency=self.endpoint_concurrency) for url in self.endpoints]

    @property
    def public_url(self) -> str:
        """The base URL without user info, query or fragment (safe for messages and model_id)."""
        return public_url(self.base_url)

    def key_hint(self) -> str:
        """How to fix a missing or wrong key."""
        if self.key_from_config:
            return "fix the api_key in your model config"
        return f"set {self.api_key_env} to a valid key"

    def scrub(self, text: str) -> str:
        """Remove the key from text that came from elsewhere (a server's error message)."""
        if self.api_key and self.api_key.reveal():
            text = text.replace(self.api_key.reveal(), "***")
        return text


def public_url(url: str) -> str:
    """Drop user info, query and fragment from a URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_loopback(url: str) -> bool:
    """True when the URL's host is this machine (a local server needs no key)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(spec: ModelSpec, name: str, default, cast, minimum):
    value = spec.option(name, default)
    try:
        number = cast(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or number < minimum:
        raise ModelSpecError(f"openai option {name}={value!r} is not a number >= {minimum}", f"write e.g. {name}={default}")
    return number


def parse_config(spec: ModelSpec, environ: dict[str, str] | None = None, default_concurrency: int | None = None) -> OpenAIConfig:
    """Validate the options of an ``openai:`` model spec and resolve the base URL and key.

    ``default_concurrency`` (the run's ``--concurrency``) sizes the pool when the spec sets no
    ``concurrency`` option; without either it is 64.
    """
    env = os.environ if environ is None else environ
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise ModelSpecError(f"unknown openai option(s) {', '.join(unknown)}", f"use any of {', '.join(OPTIONS)}")
    if not spec.model or spec.model.strip() != spec.model:
        raise ModelSpecError(f"openai model name {spec.model!r} is empty or has spaces", "write e.g. openai:gpt-4o-mini")
    urls, replicas = _base_urls(spec.option("base_url") or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
    base_url = urls[0]
    mode = str(spec.option("mode", "completions"))
    if mode not in MODES:
        raise ModelSpecError(f"openai option mode={mode!r} is unknown", "use mode=completions (base models) or mode=chat")
    transport = str(spec.option("transport", "auto"))
    if transport not in TRANSPORTS:
        raise ModelSpecError(f"openai option transport={transport!r} is unknown", "use transport=auto, aiohttp or sdk")
    prefill = _prefill(spec, mode)
    key_env = str(spec.option("api_key_env", "OPENAI_API_KEY"))
    config_key = spec.option("api_key")
    key_value = str(config_key) if config_key else env.get(key_env, "")
    remote = next((url for url in urls if not is_loopback(url)), None)
    if not key_value and remote is not None:
        raise ModelSpecError(
            f"no API key for {public_url(remote)}: environment variable {key_env} is not set",
            f"export {key_env}=..., or name another variable with api_key_env=NAME",
        )
    concurrency = int(_number(spec, "concurrency", default_concurrency or DEFAULT_CONCURRENCY, int, 1))
    return OpenAIConfig(
        model=spec.model,
        base_url=base_url,
        api_key=Secret(key_value) if key_value else None,
        api_key_env=key_env,
        key_from_config=bool(config_key),
        mode=mode,
        concurrency=concurrency,
        timeout=float(_number(spec, "timeout", 60, float, 0.001)),
        transport=AUTO_TRANSPORT if transport == "auto" else transport,
        endpoints=tuple(urls) if replicas else (),
        # An even share of the pool by default, rounded up so the endpoints together can hold all of it.
        endpoint_concurrency=int(_number(spec, "endpoint_concurrency", -(-concurrency // len(urls)), int, 1)),
        prefill=prefill,
    )


def _prefill(spec: ModelSpec, mode: str) -> bool:
    """The ``prefill`` option: true only in chat mode (a completions prompt has no assistant turn to continue)."""
    value = spec.option("prefill", False)
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise ModelSpecError(f"openai option prefill={value!r} is not true or false", "write prefill=true or leave it out")
    if text in _TRUE and mode != "chat":
        raise ModelSpecError("openai option prefill=true needs mode=chat", "add mode=chat, or drop prefill")
    return text in _TRUE


def _base_urls(value) -> tuple[list[str], bool]:
    """The base URLs of a ``base_url`` option, and whether it named replicas (a list, or URLs joined by commas).

    Each URL is checked: http(s), a host, and no credentials (the spec's options are written to manifests).
    """
    if isinstance(value, (list, tuple)):
        raw, replicas = [str(v) for v in value], True
    else:
        raw = str(value).split(",")
        replicas = len(raw) > 1
    urls = [url.strip().rstrip("/") for url in raw]
    if not urls or any(not url for url in urls):
        raise ModelSpecError("openai base_url has an empty entry", "list one URL per replica, e.g. base_url: [http://h1:8000/v1, http://h2:8000/v1]")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelSpecError(f"openai base_url {public_url(url)!r} is not an http(s) URL", "write e.g. base_url=http://127.0.0.1:8000/v1")
        if parts.username or parts.password:
            raise ModelSpecError(f"openai base_url {public_url(url)!r} contains credentials", "put the key in an environment variable named by api_key_env")
    if len(set(urls)) != len(urls):
        raise ModelSpecError("openai base_url lists the same URL twice", "list each replica's URL once")
    return urls, replicas


def model_id_for(config: OpenAIConfig) -> str:
    """``openai:MODEL#hash`` of what changes outputs (server, mode, prefill), not of transport knobs or keys.

    A list of base URLs names replicas of one model, so which endpoint answers does not matter: the
    id then leaves the URLs out (their number and order too), and a run over three replicas shares
    its cache with a run over any other list of them.
    """
    # prefill=true sends continue_final_message with a trailing assistant message, which a server
    # without it answers differently: it is part of the id (and left out when false, so ids stay as they were).
    extra = {"prefill": True} if config.prefill else {}
    if config.endpoints:
        return ModelSpec("openai", config.model, {"mode": config.mode, "served_by": "replicas", **extra}).model_id
    return ModelSpec("openai", config.model, {"base_url": config.public_url, "mode": config.mode, **extra}).model_id
