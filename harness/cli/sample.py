"""`mimic sample MODEL PROMPT -n 5`: draw samples quickly."""

from __future__ import annotations

import argparse
import json
import sys

from harness.cli.common import add_model_arguments, require_number, resolve_model, run_async, unescape
from harness.errors import UsageError
from harness.factories import create_mimic
from harness.mimic import GenerationRequest
from harness.plugins import build_registries
from harness.protocols import Command
from harness.seeding import derive_seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic sample`."""
    add_model_arguments(parser, positional=True)
    parser.add_argument("prompt", metavar="PROMPT", help=r"prompt text; \n and \t are read as newline and tab (use - for stdin)")
    parser.add_argument("-n", type=int, default=1, help="number of samples (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; sample i uses a seed derived from it (default 0)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--stop", action="append", default=[], help="stop string; repeatable")
    parser.add_argument("--json", action="store_true", help="print one JSON object per sample")


def run(args: argparse.Namespace) -> int:
    """Draw and print samples."""
    if args.n < 1:
        raise UsageError(f"-n must be at least 1, got {args.n}", "pass -n 1 or more")
    if args.max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {args.max_tokens}", "pass --max-tokens 1 or more")
    require_number(args.temperature, "--temperature", low=0.0, example=1.0)  # the ranges a task's generation block allows
    require_number(args.top_p, "--top-p", low=0.0, high=1.0, low_open=True, example=1.0)
    prompt = sys.stdin.read() if args.prompt == "-" else unescape(args.prompt)
    spec = resolve_model(args.model, args)
    registries = build_registries()
    requests = [
        GenerationRequest(
            prompt=prompt, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
            stop=tuple(unescape(s) for s in args.stop), seed=derive_seed(args.seed, i), sample_index=i, context_id="cli",
        )
        for i in range(args.n)
    ]

    async def draw():
        mimic = create_mimic(spec, registries)
        try:
            return await mimic.generate(requests)
        finally:
            await mimic.aclose()

    completions = run_async(draw())
    for i, completion in enumerate(completions):
        if args.json:
            print(json.dumps({"sample": i, "text": completion.text, "finish_reason": completion.finish_reason,
                              "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens}, ensure_ascii=False))
        else:
            print(f"--- sample {i} ({completion.finish_reason}, {completion.completion_tokens} tokens)")
            print(completion.text)
    return 0


COMMAND = Command("sample", "Draw samples from a model: mimic sample MODEL PROMPT -n 5.", add_arguments, run)
