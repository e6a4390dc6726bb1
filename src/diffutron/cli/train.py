"""``diffutron quickstart``, ``diffutron train``, ``diffutron run`` and ``diffutron recipe check``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _quickstart(args: argparse.Namespace) -> int:
    if args.full:
        return _quickstart_full(args)
    from ..recipes.quickstart import run_quickstart

    s = run_quickstart(args.out, minutes=args.minutes if args.minutes is not None else 5.0, seed=args.seed)
    print()
    print(
        f"Trained a tiny Turkish masked diffusion model ({s['parameters'] / 1e6:.1f}M parameters) "
        f"on the embedded corpus: {s['steps']} steps, {s['train_tokens']:,} tokens, "
        f"{s['tokens_per_second']:,.0f} tokens/s."
    )
    start = s.get("val_elbo_ppl_start")
    if start:
        print(f"Validation ELBO perplexity: {start:,.1f} at the start -> {s['val_elbo_ppl']:,.1f} now")
    else:
        print(f"Validation ELBO perplexity: {s['val_elbo_ppl']:,.1f}")
    print("Samples (seeded nucleus sampling, T=0.9, top-p 0.9, low-confidence unmasking):")
    for row in s["samples"]:
        print(f"  {row['prompt']} … {row['completion']}")
    out = Path(args.out)
    print(
        f"\nModel: {out / 'model'}   metrics: {out / 'metrics.jsonl'}   plot: {out / 'loss.png'}   "
        f"summary: {out / 'summary.json'}"
    )
    print(f'Next: diffutron generate {out / "model"} --prompt "Türkiye\'nin geleceği"')
    return 0


def _quickstart_full(args: argparse.Namespace) -> int:
    from ..recipes.quickstart import FULL_MINUTES, run_quickstart_full
    from ..training.pipeline import PipelineResult, format_pipeline

    out = Path(args.out if args.out != "runs/quickstart" else "runs/quickstart-full")
    minutes = args.minutes if args.minutes is not None else FULL_MINUTES
    s = run_quickstart_full(out, minutes=minutes, seed=args.seed)
    print("\nThe progression (held-out ELBO perplexity before -> after each stage):")
    print(format_pipeline(PipelineResult(out_dir=out, stages=s["stages"])))
    print("\nChat with the final model (greedy, low-confidence unmasking):")
    for row in s["chats"]:
        user = row["user"].replace("\n\n", " / ")
        print(f"  > {user}\n    {row['answer'] or '(empty answer)'}")
    print(
        f"\nFinished in {s['wall_seconds'] / 60:.1f} min. Model: {s['model_dir']}   per stage: {out}/<stage>/"
    )
    print(f"Next: diffutron chat {s['model_dir']}   (the chat template is stored in its tokenizer)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training import train

    cfg = load_config(args.config)
    out = args.out or str(Path("runs") / Path(args.config).stem)
    r = train(cfg, out, resume=args.resume, max_steps=args.max_steps)
    if not r.summary:  # not the main process of a distributed run: the main one reports
        return 0
    print(
        f"\nTrained {r.state.step} steps ({r.state.tokens:,} tokens). Validation ELBO perplexity "
        f"{r.val['val_elbo_ppl']:,.2f}. Model: {r.model_dir}   plot: {Path(out) / 'loss.png'}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..config import load_recipe
    from ..training.pipeline import format_pipeline, run_recipe

    recipe = load_recipe(args.recipe)
    out = args.out or str(Path("runs") / recipe.name)
    result = run_recipe(recipe, out, resume=args.resume, max_steps=args.max_steps)
    print(f"\nRecipe {recipe.name}: {len(result.stages)} stages done.")
    print(format_pipeline(result))
    print(
        f"Final model: {result.final_model}   per stage: {out}/<stage>/ (loss.png, summary.json, model/README.md)"
    )
    return 0


def _recipe_check(args: argparse.Namespace) -> int:
    from ..config import load_recipe
    from ..training.recipe_check import check_recipe, format_check

    report = check_recipe(load_recipe(args.recipe))
    print(format_check(report))
    return 0 if report.ok else 1


def add_parsers(sub) -> None:
    p = sub.add_parser("quickstart", help="train a tiny Turkish MDLM on the embedded corpus (offline, CPU)")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training time budget (default 5; with --full 8, split over the stages)",
    )
    p.add_argument(
        "--out",
        default="runs/quickstart",
        help="output folder (default runs/quickstart; with --full runs/quickstart-full)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--full",
        action="store_true",
        help="the whole progression: pre-training, general and task instruction tuning "
        "(recipes/quickstart-tr.yaml), ending in a chat model; resumes an interrupted run",
    )
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--max-steps", type=int, help="total optimiser steps of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "run", help="run a staged recipe (pre-training, instruction tuning, ...) stage by stage"
    )
    p.add_argument("recipe", help="a recipe YAML file, e.g. recipes/quickstart-tr.yaml")
    p.add_argument("--out", help="output folder, one subfolder per stage (default runs/<recipe name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue: skip finished stages, resume the first unfinished one at its last checkpoint",
    )
    p.add_argument("--max-steps", type=int, help="every stage's total optimiser steps (smoke tests)")
    p.set_defaults(func=_run)

    p = sub.add_parser("recipe", help="recipe tools")
    rsub = p.add_subparsers(dest="recipe_command", required=True)
    c = rsub.add_parser(
        "check", help="validate a recipe offline: build each stage's model, print trainable shares"
    )
    c.add_argument("recipe")
    c.set_defaults(func=_recipe_check)
