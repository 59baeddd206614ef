"""Run the fake OpenAI server in a child process, so it does not share the client's GIL (benchmarks).

    python -m harness.testing.fake_process --port 0 --latency-ms 50 --max-concurrency 16 --fault rate_limit=0.01

prints the base URL and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from harness.errors import UsageError
from harness.testing.fake_payloads import FAULTS
from harness.testing.fake_server import FakeOpenAIServer, FakeServerSettings, normalise_settings


class FakeServerProcess:
    """A fake server running in a child process (see :func:`start_fake_server_process`)."""

    def __init__(self, process: subprocess.Popen, base_url: str):
        self.process = process
        self.base_url = base_url

    def stats(self) -> dict:
        """Request counts reported by the child's ``/_fake/stats`` endpoint."""
        import urllib.request

        root = self.base_url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(f"{root}/_fake/stats", timeout=10) as response:  # loopback only
            return json.loads(response.read())

    def stop(self) -> None:
        """Terminate the child and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> FakeServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fake_server_process(port: int = 0, **settings: Any) -> FakeServerProcess:
    """Start ``python -m harness.testing.fake_process`` with these settings; returns once it serves."""
    s = FakeServerSettings(**normalise_settings(settings)).validated()
    args = [sys.executable, "-m", "harness.testing.fake_process", "--port", str(port), "--settings-json",
            json.dumps({k: v for k, v in dataclasses.asdict(s).items() if k != "api_key"})]
    env = dict(os.environ)
    if s.api_key is not None:
        env["FAKE_OPENAI_API_KEY"] = s.api_key  # not on the command line, where `ps` would show it
        args += ["--api-key-env", "FAKE_OPENAI_API_KEY"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline().strip() if process.stdout else ""
    if not line.startswith("http://"):
        process.kill()
        process.wait(timeout=10)
        raise UsageError(f"fake server process did not start (said {line!r})", "run python -m harness.testing.fake_process by hand")
    return FakeServerProcess(process, line)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, after printing the base URL on stdout."""
    parser = argparse.ArgumentParser(prog="python -m harness.testing.fake_process", description="A loopback OpenAI-compatible server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=None)
    parser.add_argument("--max-concurrency", type=int, default=None, help="requests served at once; the rest wait in a queue")
    parser.add_argument("--api-key-env", metavar="NAME", help="require the key held in this environment variable")
    parser.add_argument("--model", action="append", help="serve only these model names (repeatable)")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=RATE", help=f"one of {', '.join(FAULTS)}")
    parser.add_argument("--fault-seed", type=int, default=None)
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--no-prefill", action="store_true", help="answer vLLM's continue_final_message with 400")
    parser.add_argument("--settings-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings: dict[str, Any] = json.loads(args.settings_json) if args.settings_json else {}
    for name, value in (("latency_ms", args.latency_ms), ("fault_seed", args.fault_seed), ("retry_after", args.retry_after),
                        ("max_concurrency", args.max_concurrency)):
        if value is not None:
            settings[name] = value
    if args.model:
        settings["models"] = args.model
    if args.no_prefill:
        settings["prefill"] = False
    try:
        if args.fault:
            settings["faults"] = dict(_parse_fault(f) for f in args.fault)
        if args.api_key_env:
            settings["api_key"] = os.environ.get(args.api_key_env)
        server = FakeOpenAIServer(args.host, args.port, **settings).start()
    except UsageError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(server.base_url, flush=True)
    while not done.wait(0.5):
        pass
    server.close()
    return 0


def _parse_fault(text: str) -> tuple[str, float]:
    name, _, rate = text.partition("=")
    try:
        return name.strip(), float(rate)
    except ValueError:
        raise UsageError(f"--fault {text!r} is not NAME=RATE", "write e.g. --fault rate_limit=0.05") from None


if __name__ == "__main__":
    raise SystemExit(main())
