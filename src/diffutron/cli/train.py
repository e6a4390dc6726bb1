"""``diffutron quickstart``, ``diffutron train`` and ``diffutron run``.

``train`` and ``run`` take a shipped name (``diffutron recipe list``) or a YAML file; a file wins.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def _quickstart(args: argparse.Namespace) -> int:
    from ..data.corpus import missing_corpus
    from ..languages import get_language

    pack = get_language(args.language)  # an unknown code fails here, before any training
    if (install := missing_corpus(pack.corpus)) is not None:
        raise FileNotFoundError(f"the {pack.name} corpus is not available here; fetch it with: {install}")
    if args.full:
        if args.max_steps is not None:
            raise ValueError(
                "--max-steps is for the single-run quickstart; --full splits --minutes over its stages"
            )
        if args.mode != "mdlm":
            raise SystemExit(
                "quickstart --full trains the published MDLM progression: --mode block is for the plain quickstart"
            )
        return _quickstart_full(args)
    from ..recipes.quickstart import run_quickstart

    minutes = args.minutes if args.minutes is not None else 5.0
    s = run_quickstart(
        args.out,
        minutes=minutes,
        seed=args.seed,
        language=args.language,
        max_steps=args.max_steps,
        mode=args.mode,
        block_size=args.block_size,
    )
    print()
    print(
        f"Trained a tiny {pack.name} masked diffusion model ({s['parameters'] / 1e6:.1f}M parameters) "
        f"on the embedded corpus: {s['steps']} steps, {s['train_tokens']:,} tokens, "
        f"{s['tokens_per_second']:,.0f} tokens/s."
    )
    start = s.get("val_elbo_ppl_start")
    if start:
        print(f"Validation ELBO perplexity: {start:,.1f} at the start -> {s['val_elbo_ppl']:,.1f} now")
    else:
        print(f"Validation ELBO perplexity: {s['val_elbo_ppl']:,.1f}")
    held = s.get("heldout")
    if held:
        print(
            f"Held-out ELBO perplexity ({held['documents']} unseen documents, {held['corpus']}): "
            f"{held['before']['perplexity']:,.1f} untrained -> {held['after']['perplexity']:,.1f} now"
        )
    print("Samples (seeded nucleus sampling, T=0.9, top-p 0.9, low-confidence unmasking):")
    for row in s["samples"]:
        print(f"  {row['prompt']} … {row['completion']}")
    out = Path(args.out)
    print(
        f"\nModel: {out / 'model'}   metrics: {out / 'metrics.jsonl'}   plot: {out / 'loss.png'}   "
        f"summary: {out / 'summary.json'}"
    )
    print(f'Next: diffutron generate {out / "model"} --prompt "{pack.prompts[0]}"')
    return 0


def _quickstart_full(args: argparse.Namespace) -> int:
    from ..recipes.quickstart import FULL_MINUTES, run_quickstart_full
    from ..training.pipeline import PipelineResult, format_pipeline

    out = Path(args.out if args.out != "runs/quickstart" else "runs/quickstart-full")
    minutes = args.minutes if args.minutes is not None else FULL_MINUTES
    s = run_quickstart_full(out, minutes=minutes, seed=args.seed, language=args.language)
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


_EXPONENT_ONLY = re.compile(r"^[+-]?\d+[eE][+-]?\d+$")


def with_overrides(cfg, assignments: list[str]):
    """``cfg`` with ``--set KEY=VALUE`` applied (dotted keys, YAML values), re-checked like a file."""
    if not assignments:
        return cfg
    import yaml

    from ..config import ConfigError, from_dict, to_dict

    data = to_dict(cfg)
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.lr=3e-4")
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = node[part]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
        if isinstance(value, str) and _EXPONENT_ONLY.match(value):
            value = float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string; users mean the number
        node[leaf] = value
    try:
        return from_dict(type(cfg), data)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from exc


def _train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..shipped import resolve

    path = resolve(args.config, "config")  # before the heavy imports: a wrong name fails at once
    cfg = with_overrides(load_config(path), args.set or [])
    from ..training import train

    out = args.out or str(Path("runs") / path.stem)
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
    from ..shipped import resolve

    recipe = load_recipe(resolve(args.recipe, "recipe"))  # before the heavy imports: fails at once
    from ..training.pipeline import format_pipeline, run_recipe

    out = args.out or str(Path("runs") / recipe.name)
    result = run_recipe(recipe, out, resume=args.resume, max_steps=args.max_steps)
    print(f"\nRecipe {recipe.name}: {len(result.stages)} stages done.")
    print(format_pipeline(result))
    print(
        f"Final model: {result.final_model}   per stage: {out}/<stage>/ (loss.png, summary.json, model/README.md)"
    )
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "quickstart",
        help="train a tiny MDLM on a language's embedded corpus (offline, CPU; Turkish by default)",
    )
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
        "--mode",
        choices=("mdlm", "block"),
        default="mdlm",
        help="mdlm (default, the published Diffutron) or block: block diffusion, BD3-LM (docs/block-diffusion.md)",
    )
    p.add_argument("--block-size", type=int, default=16, help="tokens per block with --mode block (default 16)")
    p.add_argument(
        "--full",
        action="store_true",
        help="the whole progression: pre-training, general and task instruction tuning "
        "(the shipped recipe quickstart-<language>), ending in a chat model; resumes an interrupted run",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="also stop after this many optimiser steps: equal steps compare runs on a loaded machine "
        "(not with --full)",
    )
    p.add_argument(
        "--language",
        default="tr",
        help="the language pack: tr (Turkish, default) or et (Estonian; its corpus needs one "
        "download, see docs/languages.md)",
    )
    p.set_defaults(func=_quickstart)

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config", help="a shipped config name (e.g. pretrain-tiny) or a config YAML file")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--max-steps", type=int, help="total optimiser steps of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one config key, value in YAML (repeatable): --set training.lr=3e-4 "
        "--set 'data.sources=[notes.txt]' --set data.max_documents=50",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "run", help="run a staged recipe (pre-training, instruction tuning, ...) stage by stage"
    )
    p.add_argument("recipe", help="a shipped recipe name (e.g. quickstart-tr) or a recipe YAML file")
    p.add_argument("--out", help="output folder, one subfolder per stage (default runs/<recipe name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue: skip finished stages, resume the first unfinished one at its last checkpoint",
    )
    p.add_argument("--max-steps", type=int, help="every stage's total optimiser steps (smoke tests)")
    p.set_defaults(func=_run)
