"""A loopback OpenAI-compatible server for tests and benchmarks, with injectable faults.

In a test (a background thread)::

    with FakeOpenAIServer(latency_ms=5, api_key="k") as srv:
        url = srv.base_url                      # "http://127.0.0.1:PORT/v1"
        srv.configure(faults={"rate_limit": 0.3}, retry_after=0.2)
        srv.configure(max_concurrency=8)       # a real server's queue: the 9th request waits for a slot
        ...
        assert srv.count(status=429) > 0 and not srv.retry_after_violations()

As a process (for benchmarks, so the server does not share the client's GIL)::

    python -m harness.testing.fake_process --port 0 --latency-ms 50 --fault rate_limit=0.01
    # prints http://127.0.0.1:PORT/v1 and serves until SIGTERM/SIGINT

or ``with harness.testing.start_fake_server_process(latency_ms=50) as proc: proc.base_url``
(:mod:`harness.testing.fake_process`).
Chat mode: ``srv.configure(chat_answers=[...])`` plants the assistant's answers; vLLM's assistant prefill
(``continue_final_message``) is served unless ``prefill=False``, which answers it 400 as OpenAI does.
Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models`` and
``GET /_fake/stats`` (request counts by status, peak concurrent requests). Output text: see :mod:`harness.testing.fake_payloads`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness import eventloop
from harness.errors import UsageError
from harness.testing.fake_payloads import FAULTS, build_body, corrupt_logprobs, error_body, prompt_hash, validate_request

_GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")
_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "n", "logprobs", "top_logprobs", "continue_final_message",
           "add_generation_prompt")
PREFILL_FIELDS = ("continue_final_message", "add_generation_prompt")  # vLLM's extra body fields for assistant prefill
_JSON = "application/json"
_BODY_FAULTS = (None, "empty_choices", "bad_logprobs", "truncated", "slow_body")  # answered with a (mangled) body


@dataclass(frozen=True)
class FakeServerSettings:
    """Everything :meth:`FakeOpenAIServer.configure` can change while the server runs."""

    latency_ms: float = 0.0  # time from a generation request's admission (see max_concurrency) to its response
    max_concurrency: int | None = None  # requests served at once; later ones wait in a queue, as on a real server
    api_key: str | None = None  # when set, requests without "Authorization: Bearer <key>" get 401
    models: tuple[str, ...] | None = None  # when set, other model names get 404
    faults: Mapping[str, float] = field(default_factory=dict)  # fault name -> probability per request
    fault_seed: int = 0  # seeds the RNG that picks faults (in request-arrival order)
    max_faults: int | None = None  # stop injecting after this many faults
    retry_after: float = 1.0  # seconds announced by 429/503
    retry_after_format: str = "seconds"  # "seconds" or "http-date"
    slow_body_ms: float = 200.0  # pause between each of the 8 chunks of a slow body
    hang_s: float = 300.0  # how long a hang lasts unless the server stops first
    prefill: bool = True  # accept vLLM's continue_final_message; False: answer 400, as a server without it does
    chat_answers: tuple[str, ...] | None = None  # chat content is one of these (fake_payloads), not random words

    def validated(self) -> FakeServerSettings:
        """Return self, or raise UsageError naming the bad setting."""
        unknown = sorted(set(self.faults) - set(FAULTS))
        if unknown:
            raise UsageError(f"unknown fault(s) {', '.join(unknown)}", f"use any of {', '.join(FAULTS)}")
        rates = [float(r) for r in self.faults.values()]
        if any(not 0 <= r <= 1 for r in rates) or sum(rates) > 1 + 1e-9:
            raise UsageError("fault rates must be in [0, 1] and sum to at most 1", "lower the rates")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise UsageError(f"retry_after_format {self.retry_after_format!r} is unknown", "use seconds or http-date")
        if self.latency_ms < 0 or self.retry_after < 0:
            raise UsageError("latency_ms and retry_after must be >= 0", "pass non-negative numbers")
        if self.chat_answers is not None and (not self.chat_answers or not all(isinstance(a, str) for a in self.chat_answers)):
            raise UsageError("chat_answers must be a non-empty list of strings", "pass e.g. chat_answers=['Rating: 4 ...'], or None")
        if self.max_concurrency is not None and (isinstance(self.max_concurrency, bool) or self.max_concurrency < 1):
            raise UsageError(f"max_concurrency {self.max_concurrency!r} is not a positive integer", "pass e.g. max_concurrency=8, or None for no cap")
        return self


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the server saw it. ``status`` 0 means no HTTP response (reset or hang)."""

    time: float
    path: str
    model: str | None
    seed: int | None
    prompt_hash: str | None
    status: int
    fault: str | None
    retry_after_ok: bool | None  # for a re-send after 429/503: did the client wait Retry-After?
    n: int = 1
    params: Mapping[str, Any] | None = None  # the sampling parameters the request carried


class FakeOpenAIServer:
    """An OpenAI-compatible aiohttp server on 127.0.0.1, run in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **settings: Any):
        self.host = host
        self.port = port
        self._settings = FakeServerSettings(**normalise_settings(settings)).validated()
        self._rng = random.Random(self._settings.fault_seed)
        self._faults_injected = 0
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._pending_retry: dict[tuple, tuple[float, float]] = {}
        self._request_id = 0
        self.in_flight = 0  # generation requests being handled now, queued ones included
        self.max_in_flight = 0  # the most handled at once since start (or reset_max_in_flight)
        self._queue: tuple[int, asyncio.Semaphore] | None = None  # (max_concurrency, its slots), on the server's loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._dying: asyncio.Event | None = None

    # ----- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` (the port is known once started)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        """True while the server accepts connections."""
        return self._runner is not None

    def start(self) -> FakeOpenAIServer:
        """Start serving (first call picks an ephemeral port; later calls reuse it)."""
        if self._thread is None:
            self._loop = eventloop.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai-server", daemon=True)
            self._thread.start()
        self._call(self._astart())
        return self

    def stop(self) -> None:
        """Stop serving: the port closes and open connections drop (restart() brings it back)."""
        if self._loop is not None:
            self._call(self._astop())

    def restart(self) -> None:
        """Stop, then serve again on the same port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop serving and end the background thread."""
        if self._loop is None:
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop, self._thread = None, None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro):
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    async def _astart(self) -> None:
        if self._runner is not None:
            return
        self._dying = asyncio.Event()
        runner = web.ServerRunner(web.Server(self._handle, access_log=None), shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def _astop(self) -> None:
        if self._runner is None:
            return
        assert self._dying is not None
        self._dying.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    # ----- settings and log ------------------------------------------------------------------
    @property
    def settings(self) -> FakeServerSettings:
        """The settings in force."""
        return self._settings

    def configure(self, **changes: Any) -> FakeServerSettings:
        """Change settings while running (any FakeServerSettings field); returns the new settings."""
        new = dataclasses.replace(self._settings, **normalise_settings(changes)).validated()
        with self._lock:
            if "fault_seed" in changes or "faults" in changes or "max_faults" in changes:
                self._rng = random.Random(new.fault_seed)
                self._faults_injected = 0
            self._settings = new
        return new

    def records(self) -> list[RequestRecord]:
        """A snapshot of the request log."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget logged requests and pending Retry-After checks."""
        with self._lock:
            self._log.clear()
            self._pending_retry.clear()

    def count(self, status: int | None = None, path: str | None = None, fault: str | None = None) -> int:
        """Number of logged requests matching every given field."""
        return sum(
            1 for r in self.records()
            if (status is None or r.status == status) and (path is None or r.path == path) and (fault is None or r.fault == fault)
        )

    def retry_after_violations(self) -> list[RequestRecord]:
        """Re-sends of a (model, prompt, seed) that came sooner than the Retry-After they were given."""
        return [r for r in self.records() if r.retry_after_ok is False]

    def reset_max_in_flight(self) -> None:
        """Start counting the peak of concurrent requests afresh."""
        self.max_in_flight = self.in_flight

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def _pick_fault(self, settings: FakeServerSettings) -> str | None:
        if not settings.faults:
            return None
        with self._lock:
            if settings.max_faults is not None and self._faults_injected >= settings.max_faults:
                return None
            x, acc = self._rng.random(), 0.0
            for name in FAULTS:
                acc += settings.faults.get(name, 0.0)
                if x < acc:
                    self._faults_injected += 1
                    return name
        return None

    # ----- request handling ------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        now = time.time()
        arrived = time.monotonic()
        s = self._settings
        path = request.path
        if s.api_key is not None and request.headers.get("Authorization") != f"Bearer {s.api_key}" and path != "/_fake/stats":
            self._record(RequestRecord(now, path, None, None, None, 401, None, None))
            return _json(401, error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        if request.method == "GET" and path in ("/v1/models", "/_fake/stats"):
            return self._get(path, s)
        if request.method != "POST" or path not in _GENERATION_PATHS:
            self._record(RequestRecord(now, path, None, None, None, 404, None, None))
            return _json(404, error_body(f"unknown endpoint {request.method} {path}", "invalid_request_error"))
        try:
            payload = json.loads(await request.read())
        except ValueError:
            payload = None
        problem = validate_request(path, payload) if payload is not None else "the body is not valid JSON"
        if not problem and not s.prefill and any(f in payload for f in PREFILL_FIELDS):
            field = next(f for f in PREFILL_FIELDS if f in payload)
            problem = f"Unrecognized request argument supplied: {field}"
        if problem:
            self._record(RequestRecord(now, path, None, None, None, 400, None, None))
            return _json(400, error_body(problem, "invalid_request_error"))
        model = payload["model"]
        seed = payload.get("seed")
        phash = prompt_hash(payload["messages"] if path.endswith("chat/completions") else payload["prompt"])
        retry_ok = self._check_retry(model, phash, seed, now)
        if s.models is not None and model not in s.models:
            self._record(RequestRecord(now, path, model, seed, phash, 404, None, retry_ok))
            return _json(404, error_body(f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found"))
        self.in_flight += 1  # only the server's loop thread touches these counters
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            async with self._slot(s):
                return await self._serve(request, _Exchange(now, path, payload, phash, retry_ok, self._pick_fault(s)), s)
        finally:
            self.in_flight -= 1

    def _slot(self, s: FakeServerSettings):
        """A place among the ``max_concurrency`` requests served at once (no cap: a no-op)."""
        if s.max_concurrency is None:
            return contextlib.nullcontext()
        if self._queue is None or self._queue[0] != s.max_concurrency:
            self._queue = (s.max_concurrency, asyncio.Semaphore(s.max_concurrency))
        return self._queue[1]

    async def _serve(self, request: web.BaseRequest, exchange: _Exchange, s: FakeServerSettings) -> web.StreamResponse:
        """Answer an admitted generation request ``latency_ms`` after its admission."""
        arrived, path, payload, phash, fault = time.monotonic(), exchange.path, exchange.payload, exchange.phash, exchange.fault
        # A success body is built before the wait, so the response leaves at arrival + latency,
        # as a real server's would. Built after it, each body's CPU time would add to the latency,
        # and a burst of responses falling due together would queue behind one another: the
        # server, not the client under test, would set the throughput.
        data = self._success_body(path, payload, phash, fault) if fault in _BODY_FAULTS else None
        ready = None
        if fault is None:  # the plain answer is complete before the wait; faults decide theirs after it
            ready = web.Response(status=200, body=data, content_type=_JSON)
            self._record(exchange.record(200))
        if s.latency_ms > 0:
            await asyncio.sleep(max(0.0, s.latency_ms / 1000 - (time.monotonic() - arrived)))
        if ready is not None:
            return ready
        return await self._respond(request, exchange, s, data)

    def _success_body(self, path: str, payload: dict, phash: str, fault: str | None) -> bytes:
        with self._lock:
            self._request_id += 1
            request_id = self._request_id
        seed_fallback = -request_id  # unseeded requests differ from each other, as on a real server
        body, _summary = build_body(path, payload, seed_fallback=seed_fallback, request_id=request_id, phash=phash,
                                    answers=self._settings.chat_answers)
        if fault == "empty_choices":
            body["choices"] = []
        elif fault == "bad_logprobs":
            corrupt_logprobs(body, path.endswith("chat/completions"))
        return json.dumps(body).encode()

    async def _respond(self, request: web.BaseRequest, exchange: _Exchange, s: FakeServerSettings,
                       data: bytes | None) -> web.StreamResponse:
        """Answer a request that drew a fault (``data``: the success body the fault mangles, if any)."""
        model, seed, phash, fault = exchange.payload["model"], exchange.payload.get("seed"), exchange.phash, exchange.fault

        def log(status: int) -> None:
            self._record(exchange.record(status))

        if fault in ("rate_limit", "unavailable"):
            status = 429 if fault == "rate_limit" else 503
            header, wait = _retry_after_header(s)
            if seed is not None:
                with self._lock:
                    self._pending_retry[(model, phash, seed)] = (time.time(), wait)
            log(status)
            message = "Rate limit reached." if status == 429 else "The server is overloaded."
            return _json(status, error_body(message, "rate_limit_exceeded" if status == 429 else "server_error"),
                         {"Retry-After": header})
        if fault == "server_error":
            log(500)
            return _json(500, error_body("The server had an error.", "server_error"))
        if fault in ("reset", "hang"):
            log(0)
            if fault == "hang":
                assert self._dying is not None
                try:
                    await asyncio.wait_for(self._dying.wait(), s.hang_s)
                except TimeoutError:
                    pass
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp drops the request without writing a response
        if fault == "non_json":
            log(200)
            return web.Response(status=200, body=b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
        log(200)
        if fault == "truncated":
            return web.Response(status=200, body=data[: len(data) // 2], content_type=_JSON)
        if fault == "slow_body":
            return await _slow(request, data, s.slow_body_ms)
        return web.Response(status=200, body=data, content_type=_JSON)

    def _check_retry(self, model: str, phash: str, seed: Any, now: float) -> bool | None:
        if seed is None:
            return None
        with self._lock:
            pending = self._pending_retry.pop((model, phash, seed), None)
        if pending is None:
            return None
        sent, wait = pending
        return now - sent >= wait - 1e-3

    def _get(self, path: str, s: FakeServerSettings) -> web.Response:
        if path == "/_fake/stats":
            records = self.records()
            stats = {"requests": len(records), "by_status": dict(Counter(str(r.status) for r in records)),
                     "faults": dict(Counter(r.fault for r in records if r.fault)), "max_in_flight": self.max_in_flight}
            return _json(200, json.dumps(stats).encode())
        names = s.models or ("fake-model",)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "harness-fake"} for m in names]
        return _json(200, json.dumps({"object": "list", "data": data}).encode())


@dataclass(frozen=True)
class _Exchange:
    """A generation request that reached the model: what its answer and its log entry need."""

    now: float
    path: str
    payload: dict
    phash: str
    retry_ok: bool | None
    fault: str | None

    def record(self, status: int) -> RequestRecord:
        """The log entry of this request, answered with ``status`` (0: the connection was dropped)."""
        payload = self.payload
        return RequestRecord(self.now, self.path, payload["model"], payload.get("seed"), self.phash, status, self.fault,
                             self.retry_ok, int(payload.get("n") or 1), {k: payload[k] for k in _PARAMS if k in payload})


def _json(status: int, body: bytes, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _retry_after_header(s: FakeServerSettings) -> tuple[str, float]:
    """The Retry-After header value and the wait a client can read from it."""
    if s.retry_after_format == "http-date":
        now = time.time()
        target = math.ceil(now + s.retry_after)  # HTTP dates have whole seconds
        return email.utils.formatdate(target, usegmt=True), target - now
    return f"{s.retry_after:g}", s.retry_after


async def _slow(request: web.BaseRequest, data: bytes, pause_ms: float) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": _JSON, "Content-Length": str(len(data))})
    await response.prepare(request)
    step = max(1, math.ceil(len(data) / 8))
    for i in range(0, len(data), step):
        await response.write(data[i : i + step])
        await asyncio.sleep(pause_ms / 1000)
    await response.write_eof()
    return response


def normalise_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as :class:`FakeServerSettings` takes them; an unknown name is a one-line UsageError."""
    known = {f.name for f in dataclasses.fields(FakeServerSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(f"unknown fake server setting(s) {', '.join(unknown)}", f"use any of {', '.join(sorted(known))}")
    out = dict(settings)
    if "faults" in out:
        out["faults"] = {str(k): float(v) for k, v in dict(out["faults"] or {}).items()}
    for name in ("models", "chat_answers"):
        if out.get(name) is not None and not isinstance(out[name], str):
            out[name] = tuple(out[name])
    return out

