"""Helpers shared by subcommands: argument parsing that fails in one line, registries, models."""

from __future__ import annotations

import argparse
import codecs
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
