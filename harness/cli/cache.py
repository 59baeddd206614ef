"""`mimic cache stats|clear`: inspect or empty the draw cache shared by all runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.errors import UsageError
from harness.protocols import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic cache`."""
    parser.add_argument("action", choices=["stats", "clear"], help="stats: what is cached; clear: delete entries")
    parser.add_argument("--out", default="results", metavar="DIR", help="results root whose cache/ to use (default results)")
    parser.add_argument("--cache-dir", metavar="DIR", help="cache directory (default $MIMIC_CACHE_DIR or OUT/cache)")
    parser.add_argument("--model", metavar="MODEL_ID", help="clear: only this model's completions (model id as in `stats`)")
    parser.add_argument("--json", action="store_true", help="stats: print JSON")


def run(args: argparse.Namespace) -> int:
    """Show or clear the cache."""
    from harness.cache import CACHE_FILE, DrawCache, default_cache_dir

    directory = Path(args.cache_dir) if args.cache_dir else default_cache_dir(args.out)
    if args.model and args.action != "clear":
        raise UsageError("--model only applies to `mimic cache clear`", "drop --model, or use `mimic cache clear --model ID`")
    if not (directory / CACHE_FILE).exists():
        if args.action == "stats":
            empty = {"path": str(directory / CACHE_FILE), "completions": 0, "world_draws": 0, "models": {}, "worlds": {}, "bytes": 0}
            print(json.dumps(empty, indent=2) if args.json else f"no cache at {directory / CACHE_FILE}")
        else:
            print(f"no cache at {directory / CACHE_FILE}: nothing to clear")
        return 0
    with DrawCache.open(directory) as cache:
        if args.action == "stats":
            stats = cache.stats()
            if args.json:
                print(json.dumps(stats, indent=2))
                return 0
            print(f"{stats['path']}: {stats['completions']} completions, {stats['world_draws']} world draws, "
                  f"{stats['bytes'] / 1e6:.1f} MB")
            for model, count in stats["models"].items():
                print(f"  model {model}: {count}")
            for world, count in stats["worlds"].items():
                print(f"  world {world}: {count}")
            return 0
        removed = cache.clear(model=args.model)
        print(f"removed {removed} entries from {cache.path}" + (f" (model {args.model})" if args.model else ""))
    return 0


COMMAND = Command("cache", "Show or clear the draw cache: mimic cache stats | mimic cache clear [--model ID].", add_arguments, run)
