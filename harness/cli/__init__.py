"""The ``mimic`` command line. One module per subcommand; plugins add more via ``register_commands``."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from harness import __version__
from harness.cli.common import OneLineParser
from harness.errors import EXIT_INTERRUPTED, HarnessError

# Core subcommands: module name under harness.cli, each exposing COMMAND (a harness.protocols.Command).
CORE_COMMANDS = ("plugins", "models", "tasks", "sample", "run", "plan", "estimate", "leaderboard", "report", "compare", "curves", "cache")


def _core_commands():
    commands = []
    for name in CORE_COMMANDS:
        try:
            module = importlib.import_module(f"harness.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"harness.cli.{name}":
                continue  # not built yet in this checkout
            raise
        commands.append(module.COMMAND)
    return commands


def _plugin_commands():
    """Commands from plugins; a broken plugin is reported when a command needs it, not here."""
    try:
        from harness.plugins import build_registries

        return [entry.factory for entry in build_registries().commands]
    except HarnessError:
        return []


def build_parser() -> OneLineParser:
    """The top-level parser with every subcommand."""
    parser = OneLineParser(prog="mimic", description="Measure how predictable language models are when you steer them.")
    parser.add_argument("--version", action="version", version=f"mimic-harness {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    seen = set()
    for command in [*_core_commands(), *_plugin_commands()]:
        if command.name in seen:
            continue
        seen.add(command.name)
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        sub_parser.add_argument("--debug", action="store_true", default=argparse_default(), help="show tracebacks for errors")
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=command.run)
    return parser


def argparse_default():
    """``--debug`` given before the subcommand must survive the subparser's defaults."""
    import argparse

    return argparse.SUPPRESS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mimic`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("MIMIC_DEBUG") == "1"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args._run(args) or 0)
    except HarnessError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Ctrl-C outside the generate phase (which stops cleanly and names the run itself): runs are
        # resumable at any point, so say how.
        print("interrupted: nothing recorded is lost; to resume, run the same command again", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # last resort: still one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"error: internal error: {type(exc).__name__}: {exc} (fix: rerun with --debug and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
