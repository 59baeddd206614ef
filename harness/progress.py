"""Progress of a run: a rich display on a terminal, plain log lines otherwise, or nothing."""

from __future__ import annotations

import sys
import time
from typing import IO

from harness.concurrency import CallStats


class Progress:
    """Counts done/cached draws per pool and shows rate, ETA, retries and cache hits."""

    def __init__(self, mode: str = "auto", stream: IO[str] | None = None, interval: float = 5.0):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self.interval = interval  # seconds between plain log lines
        self._rich = None
        self._bars: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._label = ""
        self._start = 0.0
        self._last_line = 0.0
        self._fresh = 0
        self.cached = 0
        self.stats: CallStats | None = None

    def start(self, label: str, totals: dict[str, int], done: dict[str, int], stats: CallStats) -> None:
        """Begin showing one run: ``totals`` and already ``done`` draws per pool."""
        self._label, self._totals, self._done, self.stats = label, dict(totals), dict(done), stats
        self._start = self._last_line = time.monotonic()
        self._fresh = 0
        self.cached = 0
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._rich = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=Console(file=self.stream), transient=False,
            )
            self._rich.start()
            for pool, total in self._totals.items():
                self._bars[pool] = self._rich.add_task(f"{label} {pool}", total=total, completed=self._done.get(pool, 0), rate="", info="")
        elif self.mode == "plain":
            remaining = sum(self._totals.values()) - sum(self._done.values())
            self._line(f"{label}: {remaining} draws to make ({sum(self._done.values())} already done)")

    def advance(self, pool: str, n: int, cached: int) -> None:
        """Record ``n`` durable draws of ``pool``, ``cached`` of them from the cache."""
        self._done[pool] = self._done.get(pool, 0) + n
        self._fresh += n
        self.cached += cached
        now = time.monotonic()
        if self._rich is not None:
            rate, info = self._rate_text(now), self._info_text()
            for name, bar in self._bars.items():
                self._rich.update(bar, completed=self._done.get(name, 0), rate=rate if name == pool else "", info=info)
        elif self.mode == "plain" and now - self._last_line >= self.interval:
            self._last_line = now
            done, total = sum(self._done.values()), sum(self._totals.values())
            self._line(f"{self._label}: {done}/{total} draws, {self._rate_text(now)}, {self._eta_text(now)}, {self._info_text()}")

    def stop(self, status: str) -> None:
        """End the display with the run's status."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
            self._bars = {}
        if self.mode == "plain":
            now = time.monotonic()
            done, total = sum(self._done.values()), sum(self._totals.values())
            self._line(f"{self._label}: {status}: {done}/{total} draws in {now - self._start:.1f} s, {self._rate_text(now)}, {self._info_text()}")

    def message(self, text: str) -> None:
        """Print one line (phase timings, warnings) unless progress is off."""
        if self.mode == "off":
            return
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            self._line(text)

    def _rate_text(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        return f"{self._fresh / elapsed:.1f} draws/s"

    def _eta_text(self, now: float) -> str:
        remaining = sum(self._totals.values()) - sum(self._done.values())
        rate = self._fresh / max(now - self._start, 1e-9)
        return f"ETA {remaining / rate:.0f} s" if rate > 0 else "ETA ?"

    def _info_text(self) -> str:
        stats = self.stats or CallStats()
        return f"cache hits {self.cached}, retries {stats.retries}, rate-limited {stats.rate_limited}"

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
