"""Forgetting against replay: the quickstart's task stage at several replay shares, same steps.

Every arm starts from one finished general stage (``--run``: a ``quickstart --full`` output folder
or any run of the ``quickstart-tr`` recipe) and trains the task stage (its task skill: ``rakam`` in the
shipped recipe) for the same number of optimiser steps, with ``sft.replay`` of the general stage's
data mixed in; then scores every skill on its held-out items (evaluation/skills.py). Step budgets, so a loaded machine changes
the wall time, not the result.

    python benchmarks/skill_replay.py --run runs/quickstart-full --steps 300 --replays 0,0.1,0.3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a quickstart --full folder holding general/model")
    ap.add_argument("--out", default="runs/skill-replay")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--replays", default="0,0.1,0.3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from diffutron.evaluation.skills import evaluate_skills
    from diffutron.models.checkpoint import load_checkpoint
    from diffutron.recipes.quickstart import quickstart_recipe
    from diffutron.training import train
    from diffutron.training.pipeline import recipe_skills, stage_config

    recipe = quickstart_recipe(seed=args.seed)
    names = recipe_skills(recipe)
    general = load_checkpoint(Path(args.run) / "general" / "model")
    before = evaluate_skills(
        general.model, general.tokenizer, names, schedule=general.settings.make_schedule()
    )
    rows = []
    for share in [float(x) for x in args.replays.split(",")]:
        task = copy.deepcopy(recipe)
        task.stages[2].sft.replay = share
        cfg = stage_config(task, 2, args.run)  # starts from RUN/general/model, replays its sources
        cfg.training.max_minutes = None
        cfg.training.max_steps = args.steps
        out = Path(args.out) / f"replay-{share:g}"
        t0 = time.perf_counter()
        r = train(cfg, out, progress=False)
        loaded = load_checkpoint(r.model_dir)
        table = evaluate_skills(
            loaded.model, loaded.tokenizer, names, schedule=loaded.settings.make_schedule()
        )
        general_em = [table[n]["exact_match"] for n in names if table[n]["kind"] == "general"]
        general_before = [before[n]["exact_match"] for n in names if before[n]["kind"] == "general"]
        task = next(n for n in names if table[n]["kind"] == "task")
        row = {
            "replay": share,
            "steps": r.summary.get("steps"),
            "seconds": round(time.perf_counter() - t0, 1),
            "task_em": table[task]["exact_match"],
            "task_se": table[task]["stderr"],
            "general_em_mean": sum(general_em) / len(general_em),
            "general_kept": sum(general_em) / max(sum(general_before), 1e-9),
            "per_skill": {n: table[n]["exact_match"] for n in names},
        }
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    print(
        f"\nbefore the task stage: {json.dumps({n: before[n]['exact_match'] for n in names}, ensure_ascii=False)}"
    )
    print(f"{'replay':>7} {'task EM':>14} {'general EM':>11} {'kept':>6}")
    for row in rows:
        print(
            f"{row['replay']:>7.0%} {row['task_em']:>7.1%} ±{row['task_se']:.1%} "
            f"{row['general_em_mean']:>11.1%} {row['general_kept']:>6.1%}"
        )


if __name__ == "__main__":
    main()
