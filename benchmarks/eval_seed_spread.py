"""Seed spread of multiple-choice accuracy with and without common random numbers across choices.

    python benchmarks/eval_seed_spread.py --model runs/quickstart/model --task turkmorfbench --n 200

Scores the same ``--n`` items (the first N) under ``--seeds`` seeds twice: every choice with its own
masks (``common_masks=False``, the baseline) and choices of equal token length sharing their masks
(the default). Only the Monte-Carlo masks change with the seed, so the spread of accuracy over seeds
is the estimator's noise. Prints both spreads (sample standard deviation over seeds, in accuracy
points) and their ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics

from diffutron.evaluation import EvalConfig, evaluate, resolve_tasks
from diffutron.models.checkpoint import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--task", default="turkmorfbench")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--no-enumerate", action="store_true", help="sample short answers too")
    args = p.parse_args()
    loaded = load_checkpoint(args.model)
    tasks = resolve_tasks(args.task)
    spread = {}
    for common in (False, True):
        accs = []
        for seed in range(args.seeds):
            cfg = EvalConfig(
                samples=args.samples, seed=seed, limit=args.n, common_masks=common,
                enumerate_small=not args.no_enumerate,
            )  # fmt: skip
            r = evaluate(loaded, tasks, cfg).tasks[args.task]
            accs.append(100 * r.metrics["acc"].value)
        spread[common] = statistics.stdev(accs)
        name = "common masks" if common else "own masks (baseline)"
        print(f"{name}: acc per seed {[round(a, 1) for a in accs]}, sd {spread[common]:.2f} points")
    print(f"sd baseline / sd common masks: {spread[False] / max(spread[True], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
