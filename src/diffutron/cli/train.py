"""``diffutron quickstart`` and ``diffutron train``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _quickstart(args: argparse.Namespace) -> int:
    from ..recipes.quickstart import run_quickstart

    s = run_quickstart(args.out, minutes=args.minutes, seed=args.seed)
    print()
    print(f"Trained a tiny Turkish masked diffusion model ({s['parameters'] / 1e6:.1f}M parameters) "
          f"on the embedded corpus: {s['steps']} steps, {s['train_tokens']:,} tokens, "
          f"{s['tokens_per_second']:,.0f} tokens/s.")
    start = s.get("val_elbo_ppl_start")
    if start:
        print(f"Validation ELBO perplexity: {start:,.1f} at the start -> {s['val_elbo_ppl']:,.1f} now")
    else:
        print(f"Validation ELBO perplexity: {s['val_elbo_ppl']:,.1f}")
    print("Samples (greedy, low-confidence unmasking):")
    for row in s["samples"]:
        print(f"  {row['prompt']} … {row['completion']}")
    out = Path(args.out)
    print(f"\nModel: {out / 'model'}   metrics: {out / 'metrics.jsonl'}   plot: {out / 'loss.png'}   "
          f"summary: {out / 'summary.json'}")
    print(f"Next: diffutron generate {out / 'model'} --prompt \"Türkiye'nin geleceği\"")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training import train

    cfg = load_config(args.config)
    out = args.out or str(Path("runs") / Path(args.config).stem)
    r = train(cfg, out, resume=args.resume, max_steps=args.max_steps)
    print(f"\nTrained {r.state.step} steps ({r.state.tokens:,} tokens). Validation ELBO perplexity "
          f"{r.val['val_elbo_ppl']:,.2f}. Model: {r.model_dir}   plot: {Path(out) / 'loss.png'}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("quickstart", help="train a tiny Turkish MDLM on the embedded corpus (offline, CPU)")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget (default 5)")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--max-steps", type=int, help="total optimiser steps of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_train)
