"""Helpers shared by subcommands: argument parsing that fails in one line, registries, models."""

from __future__ import annotations

import argparse
import codecs
import math
import sys
from typing import Any, NoReturn

from harness import eventloop
from harness.errors import UsageError
from harness.modelspec import ModelSpec, load_model_config, parse_model_spec


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {self.prog}: {message} (fix: see `{self.prog} --help`)\n")
        raise SystemExit(2)


# Fewest bootstrap resamples a command accepts: a 95% percentile interval's ends are the 2.5th and
# 97.5th percentiles of the resamples, so below 100 each end rests on one or two resamples (what
# `mimic compare` has always required).
MIN_N_BOOT = 100


def require_at_least(value: int | None, minimum: int, option: str, example: int | None = None) -> None:
    """A one-line usage error unless ``value`` (None: not given) is at least ``minimum``."""
    if value is not None and value < minimum:
        raise UsageError(f"{option} must be at least {minimum}, got {value}",
                         f"pass {option} {example if example is not None else minimum}" + ("" if example else " or more"))


def require_number(value: float | None, option: str, *, low: float, high: float = math.inf, low_open: bool = False,
                   example: float) -> None:
    """A one-line usage error unless ``value`` (None: not given) is a finite number in the range (low, high] or [low, high]."""
    if value is None:
        return
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and value <= high):
        lower = f"> {low:g}" if low_open else f">= {low:g}"
        rule = f"a finite number {lower}" + (f" and <= {high:g}" if math.isfinite(high) else "")
        raise UsageError(f"{option} must be {rule}, got {value}", f"pass e.g. {option} {example:g}")


def add_model_arguments(parser: argparse.ArgumentParser, *, positional: bool = False, multiple: bool = False) -> None:
    """Add ``MODEL`` (or ``--model``) and ``--model-config``."""
    if positional:
        parser.add_argument("model", metavar="MODEL", help="model spec backend:model, e.g. gguf:default")
    else:
        parser.add_argument(
            "--model", "-m", dest="models", action="append" if multiple else "store", metavar="MODEL",
            help="model spec backend:model (e.g. gguf:default, openai:gpt-4o-mini)" + ("; repeatable" if multiple else ""),
        )
    parser.add_argument("--model-config", metavar="FILE", help="YAML/TOML file with named model specs (models: {name: {...}})")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="backend option; repeatable")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """Parse repeated ``KEY=VALUE`` options."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"option {pair!r} is not KEY=VALUE", "write e.g. --option n_ctx=4096")
        key, value = pair.split("=", 1)
        from harness.modelspec import _coerce

        options[key.strip()] = _coerce(value)
    return options


def resolve_model(text: str, args: argparse.Namespace) -> ModelSpec:
    """Parse a model spec using ``--model-config`` and ``--option``."""
    config = load_model_config(args.model_config) if getattr(args, "model_config", None) else None
    return parse_model_spec(text, config, **parse_options(getattr(args, "option", [])))


def unescape(text: str) -> str:
    r"""Turn ``\n`` and ``\t`` typed on a shell line into real characters."""
    try:
        return codecs.decode(text.encode("utf-8"), "unicode_escape").encode("latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return text.replace("\\n", "\n").replace("\\t", "\t")


def run_async(coro):
    """Run a coroutine to completion from a synchronous command."""
    return eventloop.run(coro)
