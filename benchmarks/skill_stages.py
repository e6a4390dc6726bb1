"""One SFT stage of the quickstart recipe from a given model, on a step budget, then the skill table.

The cheap way to tune the instruction stages of ``quickstart-tr``: pre-train once (stage ``cpt`` of a
``quickstart --full`` run, or any model with the recipe's tokenizer), then run only the general stage,
or only the task stage, with variants of its settings (``--set`` on that stage's run config, dotted
keys as in ``diffutron train --set``) for a fixed number of optimiser steps, and read the exact match
of every skill on its held-out items. Step budgets: a loaded machine changes the wall time, not the
result.

    python benchmarks/skill_stages.py --stage general --start runs/q/cpt/model --steps 800 \\
        --out runs/skill-stages/general-800 --set sft.max_length=64
    python benchmarks/skill_stages.py --stage task --start runs/skill-stages/general-800/model \\
        --general-set sft.max_length=64 --steps 400 --out runs/skill-stages/task-400

The task stage replays the general stage's sources as the recipe does (``sft.replay``); ``--general-set``
repeats the general stage's overrides so that the replayed rows are the ones it trained on.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("general", "task"), required=True)
    ap.add_argument("--start", required=True, help="the model folder the stage starts from")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--general-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="(task stage) the general stage's overrides, so replay reads its sources",
    )
    ap.add_argument("--items", type=int, default=50, help="held-out items per skill")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from diffutron.cli.train import with_overrides
    from diffutron.config import ModelConfig, TokenizerConfig
    from diffutron.evaluation.skills import evaluate_skills, format_skills, skill_table
    from diffutron.models.checkpoint import load_checkpoint
    from diffutron.recipes.quickstart import quickstart_recipe
    from diffutron.training import train
    from diffutron.training.pipeline import recipe_skills, stage_config

    recipe = quickstart_recipe(seed=args.seed)
    index = {"general": 1, "task": 2}[args.stage]
    if args.general_set:  # the replayed sources are the general stage's as it was run
        general = with_overrides(stage_config(recipe, 1, args.out), args.general_set)
        recipe.stages[1].sft = general.sft
    cfg = stage_config(recipe, index, args.out)
    cfg.model, cfg.tokenizer = (
        ModelConfig(preset=None, pretrained=str(Path(args.start).resolve())),
        TokenizerConfig(),
    )
    cfg.training.max_minutes = None
    cfg.training.max_steps = args.steps
    cfg = with_overrides(cfg, args.set)
    names = recipe_skills(recipe)
    t0 = time.perf_counter()
    r = train(cfg, args.out, progress=False)
    seconds = time.perf_counter() - t0
    loaded = load_checkpoint(r.model_dir)
    t1 = time.perf_counter()
    rows = evaluate_skills(
        loaded.model, loaded.tokenizer, names, n=args.items, schedule=loaded.settings.make_schedule()
    )
    result = {
        "stage": args.stage,
        "start": args.start,
        "steps": r.summary.get("steps"),
        "set": args.set,
        "train_seconds": round(seconds, 1),
        "eval_seconds": round(time.perf_counter() - t1, 1),
        "val_answer_elbo_ppl": r.summary.get("val_answer_elbo_ppl"),
        "load_average": os.getloadavg(),
        "skills": rows,
    }
    Path(args.out, "skill_stage.json").write_text(
        json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    print(format_skills(skill_table({args.stage: rows})))
    for name, row in rows.items():
        print(f"  {name}: {row['example']}")
    print(json.dumps({k: v for k, v in result.items() if k != "skills"}, ensure_ascii=False))


if __name__ == "__main__":
    main()
