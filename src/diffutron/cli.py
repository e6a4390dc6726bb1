"""The ``diffutron`` command: parses arguments and calls recipes; no logic of its own.

diffutron quickstart [--minutes M] [--out DIR]
diffutron train CONFIG.yaml [--out DIR] [--max-steps N] [--resume]
diffutron generate MODEL_DIR --prompt TEXT [--max-new-tokens N] [--steps N] [--block-size N] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from .recipes.quickstart import run_quickstart

    s = run_quickstart(args.out, minutes=args.minutes, seed=args.seed)
    print()
    print(
        f"Trained a tiny Turkish masked diffusion model ({s['parameters'] / 1e6:.1f}M parameters) "
        f"on the embedded corpus: {s['steps']} steps, {s['train_tokens']:,} tokens, "
        f"{s['tokens_per_second']:,.0f} tokens/s."
    )
    start = s.get("val_elbo_ppl_start")
    print(
        f"Validation ELBO perplexity: {start:,.1f} -> {s['val_elbo_ppl']:,.1f}"
        if start
        else f"Validation ELBO perplexity: {s['val_elbo_ppl']:,.1f}"
    )
    print("Samples (greedy, low-confidence unmasking):")
    for row in s["samples"]:
        print(f"  {row['prompt']} … {row['completion']}")
    out = Path(args.out)
    print(
        f"\nModel: {out / 'model'}   metrics: {out / 'metrics.jsonl'}   plot: {out / 'loss.png'}   "
        f"summary: {out / 'summary.json'}"
    )
    print(f'Next: diffutron generate {out / "model"} --prompt "Türkiye\'nin geleceği"')
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import train

    cfg = load_config(args.config)
    out = args.out or str(Path("runs") / Path(args.config).stem)
    r = train(cfg, out, resume=args.resume, max_steps=args.max_steps)
    print(
        f"\nTrained {r.state.step} steps ({r.state.tokens:,} tokens). Validation ELBO perplexity "
        f"{r.val['val_elbo_ppl']:,.2f}. Model: {r.model_dir}   plot: {Path(out) / 'loss.png'}"
    )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .models.checkpoint import load_checkpoint
    from .sampling import GenerationConfig, generate

    loaded = load_checkpoint(args.model)
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [
            ln.rstrip("\n")
            for ln in Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
            if ln.strip()
        ]
    if not prompts:
        raise SystemExit("give --prompt TEXT (repeatable) or --prompts-file FILE")
    cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        steps=args.steps,
        block_size=args.block_size,
        temperature=args.temperature,
        repetition_penalty=args.repetition_penalty,
        remasking=args.remasking,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    out = generate(loaded.model, loaded.tokenizer, prompts, cfg, schedule=loaded.settings.make_schedule())
    seconds = time.perf_counter() - t0
    n_tokens = sum(len(ids) for ids in out.token_ids)
    if args.json:
        rows = [
            {
                "prompt": p,
                "text": t,
                "forward_passes": out.forward_passes,
                "new_tokens": len(ids),
                "tokens_per_second": n_tokens / max(seconds, 1e-9),
                "seconds": seconds,
            }
            for p, t, ids in zip(prompts, out.texts, out.token_ids, strict=True)
        ]
        print(json.dumps(rows[0] if len(rows) == 1 else rows, ensure_ascii=False))
    else:
        for p, t in zip(prompts, out.texts, strict=True):
            sep = "" if t[:1].isspace() else " "
            print(f"{p}{sep}{t}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffutron", description="Masked diffusion language models for Turkish."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="train a tiny Turkish MDLM on the embedded corpus (offline, CPU)")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget (default 5)")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--max-steps", type=int, help="total optimiser steps of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="generate text by iterative unmasking")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--prompts-file", help="a file with one prompt per line")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.2)
    p.add_argument("--remasking", default="low_confidence", choices=["low_confidence", "random"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON object (text, forward_passes, ...)")
    p.set_defaults(func=_cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"diffutron: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
