"""Throughput of the gguf backend against llama-cpp-python's high-level API, in one run.

Workload (the harness's shape): C contexts x S samples x T tokens, each context a ~450-token
prompt of five review exemplars; no stop strings, so every draw decodes up to T tokens.

  (a)  ``llama_cpp.Llama``, one draw at a time (``create_completion`` with the draw's seed), as
       shipped (flash attention off); (a') the same with ``flash_attn=True``;
  (b)  the gguf mimic, one ``generate`` call per context (how the runner sends draws);
  (c)  the gguf mimic, all draws in one ``generate`` call (contexts packed into waves).

Usage: .venv/bin/python benchmarks/gguf_throughput.py [--model default] [--contexts 4]
       [--samples 8] [--tokens 48] [--threads N] [--highlevel default|flash-attn|both|none]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from harness.mimic import GenerationRequest
from harness.modelspec import parse_model_spec
from harness.seeding import derive_seed

from mimic_gguf.files import resolve_model_file
from mimic_gguf.plugin import create_gguf, usable_cores

PREAMBLE = "Customer reviews with their star rating (1 to 5).\n\n"
SEPARATOR = "\n###\n"
# Hand-written reviews (about 70 words each): five of them make a ~450-token prompt.
REVIEWS = [
    (5, "We came for a birthday dinner and left planning the next visit. The waiter remembered our names "
        "from last spring, the bread arrived warm with a little dish of salted butter, and the braised short "
        "rib fell apart under a fork. Portions are generous without being silly. Desserts are made in house; "
        "the lemon tart was sharp and bright. Parking is tight on weekends, so come early or walk."),
    (1, "Waited forty minutes past our reservation while the host chatted with friends at the bar. When we "
        "finally sat down the table was sticky and nobody came to wipe it. The pasta was lukewarm and the "
        "sauce tasted like it came from a jar. We asked for the manager and were told he had gone home. I "
        "will not be back, and I told my sister to cancel her booking for Saturday night."),
    (4, "Solid neighborhood spot for breakfast. The eggs are always cooked the way you ask, the coffee is "
        "strong, and refills come without a fight. Pancakes are a bit dense for my taste but the blueberry "
        "ones are worth it. It gets loud around ten when the families arrive, so I try to get there by eight. "
        "Staff are friendly and quick. Prices went up a dollar or two this year."),
    (2, "The room looked nothing like the photos. Carpet was worn through near the door, the air conditioner "
        "rattled all night, and the window faced a loading dock where trucks idled from five in the morning. "
        "Front desk was polite and moved us once, but the second room had the same problems. Breakfast was "
        "fine. For this price I expected a quiet night and a clean bathroom, and got neither."),
    (3, "Decent mechanic, average prices. They fixed the brakes in one afternoon and explained what they had "
        "replaced, which I appreciated. On the other hand they tried to sell me a new air filter and a fluid "
        "flush I did not need, and the invoice came out eighty dollars over the quote. The waiting room has "
        "free coffee and wifi. I would go back for simple jobs but get a second opinion on anything big."),
    (5, "Best haircut I have had in years. Maria listened, asked about how I style it in the morning, and "
        "took her time with the layers. The salon is bright and clean, the music is not too loud, and they "
        "text you a reminder the day before. Booking online was easy. It costs a little more than the chain "
        "place down the street, but it is worth every cent. Already booked my next appointment."),
    (1, "Ordered a desk that arrived with two broken legs and a missing bag of screws. Customer service put "
        "me on hold for an hour, then hung up. The replacement took three weeks and came with the same "
        "missing bag. They refused a refund because the box had been opened, which is the only way to find "
        "out that it is broken. Avoid this store. I have filed a complaint with my card company."),
    (4, "Great little bookshop with a café in the back. The staff picks are thoughtful and they will order "
        "anything you ask for within a few days. Saturday readings for kids are lovely. Seating is limited "
        "and the café closes earlier than the shop, which is a shame on rainy afternoons. Used section is "
        "small but well chosen. I spend too much money here every month and do not regret it."),
    (2, "The gym is clean but badly run. Half the treadmills have had out of order signs for a month, the "
        "classes are overbooked, and the app double charges for guest passes. Trainers are nice and know "
        "their stuff, which is the only reason this is not one star. Locker rooms are crowded after six. I "
        "asked twice about freezing my membership over the summer and never heard back from anyone."),
    (3, "Food is good, service is slow. The dumplings are the best in town and the noodle soup is rich and "
        "peppery, but expect to wait twenty minutes for anything and to flag someone down for the check. "
        "The dining room is small and gets hot in the summer. Takeout is faster and travels well. Cash only, "
        "which catches people out. Worth it if you have time and are not in a hurry to be anywhere."),
]


def build_prompts(contexts: int, exemplars: int = 5, target: int = 5, seed: int = 0) -> list[str]:
    """One prompt per context: a preamble, ``exemplars`` seeded exemplars, then an open item."""
    prompts = []
    for c in range(contexts):
        rng = random.Random(derive_seed(seed, "bench", c))
        picked = rng.sample(REVIEWS, exemplars)
        body = SEPARATOR.join(f"Rating: {r}\nReview: {t}" for r, t in picked)
        prompts.append(f"{PREAMBLE}{body}{SEPARATOR}Rating: {target}\nReview:")
    return prompts


def requests_for(prompts: list[str], samples: int, tokens: int) -> list[list[GenerationRequest]]:
    """The draws of each context, seeded as the runner seeds them."""
    return [
        [
            GenerationRequest(prompt=p, max_tokens=tokens, seed=derive_seed(0, "bench", c, s), sample_index=s, context_id=f"bench/{c}")
            for s in range(samples)
        ]
        for c, p in enumerate(prompts)
    ]


class HighLevel:
    """``llama_cpp.Llama`` drawing one completion at a time (it reuses the previous prompt's KV prefix)."""

    def __init__(self, path: str, threads: int, n_ctx: int, flash_attn: bool):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   flash_attn=flash_attn, verbose=False)

    def run(self, group: list[GenerationRequest]) -> tuple[float, int]:
        """Seconds and completion tokens for the group's draws, one after another."""
        start, produced = time.perf_counter(), 0
        for req in group:
            # Pure sampling, as the mimic does: no top-k, min-p or typical truncation.
            out = self.llm.create_completion(req.prompt, max_tokens=req.max_tokens, temperature=1.0, top_p=1.0,
                                             top_k=0, min_p=0.0, seed=req.seed)
            produced += out["usage"]["completion_tokens"]
        return time.perf_counter() - start, produced


async def timed_generate(mimic, batch: list[GenerationRequest]) -> tuple[float, int]:
    """Seconds and completion tokens for one ``generate`` call."""
    start = time.perf_counter()
    out = await mimic.generate(batch)
    return time.perf_counter() - start, sum(c.completion_tokens for c in out)


def main() -> None:
    """Run the workload through every path and print draws/s and the speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="gguf model name or path (default: the embedded Gemma 3 270M)")
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--max-sequences", type=int, default=16)
    parser.add_argument("--highlevel", choices=["default", "flash-attn", "both", "none"], default="both",
                        help="which high-level baselines to run: as shipped (flash attention off), with it on, both, none")
    args = parser.parse_args()

    path = str(resolve_model_file(args.model))
    prompts = build_prompts(args.contexts)
    groups = requests_for(prompts, args.samples, args.tokens)
    draws = args.contexts * args.samples
    spec = f"gguf:{args.model}?n_threads={args.threads}&n_ctx={args.n_ctx}&max_sequences={args.max_sequences}"
    mimic = create_gguf(parse_model_spec(spec))
    lengths = [len(mimic.render_prompt(p)) for p in prompts]
    print(f"model {path}\nworkload: {args.contexts} contexts x {args.samples} samples x {args.tokens} tokens; "
          f"prompt tokens {lengths}; threads {args.threads}; n_ctx {args.n_ctx}; max_sequences {args.max_sequences}", flush=True)

    paths: dict[str, object] = {}
    if args.highlevel in ("default", "both"):
        paths["(a) llama_cpp.Llama one draw at a time"] = HighLevel(path, args.threads, args.n_ctx, flash_attn=False)
    if args.highlevel in ("flash-attn", "both"):
        paths["(a') same, flash_attn=True"] = HighLevel(path, args.threads, args.n_ctx, flash_attn=True)
    name_b, name_c = "(b) gguf mimic, generate() per context", "(c) gguf mimic, one generate() for all"
    totals = {name: [0.0, 0] for name in [*paths, name_b, name_c]}
    per_context: dict[str, list[float]] = {name: [] for name in totals}
    # Context by context, every path in turn: load on a shared machine drifts, and interleaving
    # exposes each path to the same drift, so the ratios hold even when absolute times do not.
    for c, group in enumerate(groups):
        for name, baseline in paths.items():
            seconds, produced = baseline.run(group)
            per_context[name].append(seconds)
            totals[name][0] += seconds
            totals[name][1] += produced
        seconds, produced = asyncio.run(timed_generate(mimic, group))
        per_context[name_b].append(seconds)
        totals[name_b][0] += seconds
        totals[name_b][1] += produced
        print(f"context {c}: " + ", ".join(f"{n.split()[0]} {t[0]:.1f}s" for n, t in totals.items() if t[0]), flush=True)
    seconds, produced = asyncio.run(timed_generate(mimic, [r for g in groups for r in g]))
    totals[name_c] = [seconds, produced]
    asyncio.run(mimic.aclose())

    base = next(iter(totals.values()))[0] if paths else None
    for name, (seconds, produced) in totals.items():
        ratio = f"  {base / seconds:5.2f}x vs (a)" if base else ""
        print(f"{name:42s} {seconds:7.2f} s  {draws / seconds:6.2f} draws/s  {produced / seconds:7.1f} tokens/s{ratio}")
    if paths:
        # Each context's paths ran back to back, so a per-context ratio sees nearly the same load.
        for name in paths:
            ratios = [a / b for a, b in zip(per_context[name], per_context[name_b])]
            print(f"per-context speed-up of (b) over {name.split()[0]}: " + ", ".join(f"{r:.2f}x" for r in ratios)
                  + f"; median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
