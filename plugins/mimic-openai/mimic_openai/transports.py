"""Two ways to send one JSON request and get ``(status, headers, body)`` back.

- :class:`AiohttpTransport`: a lean aiohttp client (one ``TCPConnector(limit=concurrency)``).
- :class:`SdkTransport`: the official ``openai.AsyncOpenAI`` (``max_retries=0``) over an
  ``httpx.AsyncClient`` whose pool holds ``concurrency`` connections (httpx's default pool of 20
  keep-alive connections collapses throughput at high concurrency). Responses are taken raw, so both
  transports share one parser (``mimic_openai.wire``) and classify errors identically.

Exceptions from the network become :class:`EndpointFailure` (a :class:`TransientBackendError`) with a
one-line message; nothing from the original exception (which may hold request headers) is chained. aiohttp, httpx and openai are
imported on first use: every ``mimic`` command loads this plugin, and they take a second to import.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from harness import TransientBackendError

from mimic_openai.config import OpenAIConfig, is_loopback
from mimic_openai.wire import endpoint

Response = tuple[int, dict[str, str], bytes]


class EndpointFailure(TransientBackendError):
    """No HTTP answer from a server: the connection failed, or no response came within the timeout.

    An endpoint pool drains an endpoint on a failed connection, or on timeouts in a row.
    """

    def __init__(self, message: str, hint: str | None = None, *, timed_out: bool = False):
        super().__init__(message, hint)
        self.timed_out = timed_out


def _network_error(config: OpenAIConfig, what: str, *, timed_out: bool = False) -> EndpointFailure:
    return EndpointFailure(f"{what} at {config.public_url}", "check that the server is up; the run retries it", timed_out=timed_out)


class AiohttpTransport:
    """POST JSON with aiohttp; one session per event loop."""

    name = "aiohttp"

    def __init__(self, config: OpenAIConfig):
        self.config = config
        self._session = None
        self._proxy: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_for_loop(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            headers = {"Content-Type": "application/json"}
            if self.config.api_key:
                headers["Authorization"] = f"Bearer {self.config.api_key.reveal()}"
            connector = aiohttp.TCPConnector(limit=self.config.concurrency, limit_per_host=self.config.concurrency)
            # Timeouts are applied per request by post(), after the caller's semaphore, so time spent
            # queued for a connection never counts against a request. trust_env=True would look up
            # netrc and proxies in a worker thread on every request (two thread hops: 0.70 ms of CPU
            # per request against 0.34 ms without), so the proxy is resolved once here instead.
            self._session = aiohttp.ClientSession(
                connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._proxy = env_proxy(self.config.base_url)
            self._loop = loop
        return self._session

    async def post(self, payload: dict[str, Any]) -> Response:
        """Send one request; network failures and timeouts raise TransientBackendError."""
        import aiohttp

        session = self._session_for_loop()
        url = self.config.base_url + endpoint(self.config)
        data = json.dumps(payload).encode()
        try:
            async with asyncio.timeout(self.config.timeout):
                async with session.post(url, data=data, proxy=self._proxy) as response:
                    body = await response.read()
                    headers = {k: v for k, v in response.headers.items() if k.lower().startswith("retry-after")}
                    return response.status, headers, body
        except TimeoutError:
            raise _network_error(self.config, f"no response within {self.config.timeout:g}s", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise _network_error(self.config, f"connection failed ({type(exc).__name__})") from None
        except OSError as exc:
            raise _network_error(self.config, f"connection failed ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        """Close the session of the current loop."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                await session.close()
            except RuntimeError:  # the session belonged to a loop that has since closed
                pass


class SdkTransport:
    """POST through the official openai SDK (raw responses, no retries)."""

    name = "sdk"

    def __init__(self, config: OpenAIConfig):
        self.config = config
        self._client = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self):
        import httpx
        import openai

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            limits = httpx.Limits(max_connections=self.config.concurrency, max_keepalive_connections=self.config.concurrency)
            http_client = httpx.AsyncClient(limits=limits, timeout=self.config.timeout)
            self._client = openai.AsyncOpenAI(
                api_key=self.config.api_key.reveal() if self.config.api_key else "no-key",  # loopback servers need none
                base_url=self.config.base_url,
                max_retries=0,
                timeout=self.config.timeout,
                http_client=http_client,
            )
            self._loop = loop
        return self._client

    async def post(self, payload: dict[str, Any]) -> Response:
        """Send one request via the SDK; its errors are mapped like aiohttp's."""
        import openai

        client = self._client_for_loop()
        create = client.completions if self.config.mode == "completions" else client.chat.completions
        try:
            async with asyncio.timeout(self.config.timeout):
                raw = await create.with_raw_response.create(**payload)
                response = raw.http_response
                return response.status_code, _retry_headers(response.headers), response.content
        except openai.APIStatusError as exc:
            return exc.status_code, _retry_headers(exc.response.headers), exc.response.content
        except (TimeoutError, openai.APITimeoutError):
            raise _network_error(self.config, f"no response within {self.config.timeout:g}s", timed_out=True) from None
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else type(exc).__name__
            raise _network_error(self.config, f"connection failed ({cause})") from None

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except RuntimeError:
                pass


def env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY...) names for this URL; none for loopback."""
    if is_loopback(url):
        return None
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _retry_headers(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("retry-after")}


def make_transport(config: OpenAIConfig):
    """The transport named by ``config.transport``."""
    return SdkTransport(config) if config.transport == "sdk" else AiohttpTransport(config)
