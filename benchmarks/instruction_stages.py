"""Instruction stages on the quickstart recipe: does each SFT stage help what it should, and does the order matter? (issue 12)

    python benchmarks/instruction_stages.py --base runs/quickstart/model --steps 200 --threads 1
    python benchmarks/instruction_stages.py --cpt-minutes 5 --steps 200 --seeds 0 1   # pre-trains the base too
    python benchmarks/instruction_stages.py --base runs/quickstart/model --quick        # a smoke run, < 1 min

Every arm starts from ONE pre-trained MDLM and spends the same number of SFT optimiser steps:

1. the base: ``--base DIR`` (a saved model folder), or pre-trained here by the project's ``train`` on
   the quickstart's config (``recipes.quickstart.quickstart_config``) for ``--cpt-minutes`` or
   ``--cpt-steps``, cached in ``--out`` for reruns;
2. the two instruction stages of the shipped recipe ``quickstart-tr`` (``quickstart_recipe``, which a
   test keeps equal to its YAML), settings as shipped (rows of 128 tokens, 5 % of each source held
   out, batch 16, lr 1e-3, warmup 10, a cosine per stage): *general* = builtin ``continuation`` +
   ``chatterbot`` (optional, weight 4); *task* = builtin ``fill-blank`` + ``chatterbot``;
3. the arms, at S = ``--steps`` optimiser steps in all (steps, not minutes: a busy machine does not
   change the comparison), each run as a recipe by ``training.pipeline.run_recipe`` from the base:

   ============  ==============================================================================
   none          the base model, no SFT
   general       general, S steps
   task          task, S steps
   general→task  general S/2, then task S/2 (the shipped order)
   task→general  task S/2, then general S/2
   mixed         one stage of S steps on both stages' sources together (chatterbot, in both, at
                 weight 4 + 4: every source gives as many rows per epoch as in the two stages)
   ============  ==============================================================================

4. scoring, on the held-out rows of the general and of the task stage: the rows the training loop
   itself holds out (``prepare_data`` on the stage's own config; the split is ``sft.seed``'s, so it
   is the same for every training seed), and after each arm every one of its stages is checked to
   have held out exactly these rows. The answer ELBO perplexity (``diffusion.elbo_perplexity``,
   maskable = the answer and its end-token padding, ``--t-samples`` draws, seed 0, so every arm sees
   the same masks) per answer token, as the stages' summaries report it; its standard error is the
   ELBO's over rows, scaled to answer tokens likewise. The arms share rows and masks, so a
   difference between two arms is known better than either s.e. suggests. Task exact match: greedy
   decoding of the first ``--em-items`` held-out fill-blank rows (their seeded order), the extracted
   answer against the blanked word (SQuAD-normalised, ``evaluation.metrics.squad_exact``);
5. prints a Markdown table per seed (and the mean over seeds) and writes ``instruction_stages.json``
   into ``--out`` (rewritten after every arm). Finished arms are reused on a rerun with the same
   settings: ``--out`` holds one folder per step total and seed.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffutron.config import RecipeConfig, RunConfig, recipe_from_dict, to_dict
from diffutron.diffusion import elbo_perplexity
from diffutron.evaluation.metrics import mean_with_stderr, squad_exact
from diffutron.io import atomic_write_json
from diffutron.models.checkpoint import Loaded, load_checkpoint
from diffutron.models.heads import MaskedLMParts
from diffutron.recipes.quickstart import quickstart_config, quickstart_recipe
from diffutron.sampling import CHAT_STOP, GenerationConfig, generate
from diffutron.text.chat import extract_answer
from diffutron.training import latest_checkpoint, train
from diffutron.training.pipeline import run_recipe, stage_config, stage_finished
from diffutron.training.prepare import TrainData, prepare_chat_template, prepare_data, prepare_tokenizer

# arm -> its stages, in order; the step total is split evenly over them
ARMS: dict[str, list[str]] = {
    "none": [],
    "general": ["general"],
    "task": ["task"],
    "general-task": ["general", "task"],
    "task-general": ["task", "general"],
    "mixed": ["mixed"],
}
SETS = ("general", "task")  # the held-out sets: the rows each shipped stage holds out
COVERS = {"general": ("general",), "task": ("task",), "mixed": ("general", "task")}  # stage -> sets
TASK_SOURCE = "builtin:skill-rakam"  # whose held-out rows the exact match decodes (the task skill)


def label(arm: str) -> str:
    return arm.replace("-", "→")


def split_steps(total: int, n: int) -> list[int]:
    """``total`` optimiser steps over ``n`` stages, as evenly as whole steps allow (sums to ``total``)."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# The arms: the shipped stages, rebuilt as recipes that start from the base model


def union_sources(*lists: list[dict]) -> list[dict]:
    """The sources of several stages as one list; a source in more than one adds up its weights."""
    out: list[dict] = []
    for src in itertools.chain(*lists):
        twin = next((o for o in out if {**o, "weight": None} == {**src, "weight": None}), None)
        if twin is None:
            out.append(dict(src))
        else:
            twin["weight"] += src["weight"]
    return out


def stage_specs(
    seed: int, max_rows: int | None = None, training: dict | None = None, max_length: int = 0
) -> dict[str, dict]:
    """The shipped recipe's ``general`` and ``task`` stages (as recipe dicts, training seed ``seed``)
    and ``mixed``, one stage on the sources of both. ``max_rows`` caps each builtin source (smoke
    runs and tests); ``training`` overrides training keys of every stage; ``max_length`` the SFT row
    length (0: as shipped, which fits the quickstart's tokenizer with its chat markers; a base whose
    tokenizer spells the markers out needs longer rows)."""
    shipped = {s.name: to_dict(s) for s in quickstart_recipe(seed=seed).stages}
    specs = {name: shipped[name] for name in SETS}
    for spec in specs.values():
        spec["training"].update(training or {})
        if max_length:
            spec["sft"]["max_length"] = max_length
        for src in spec["sft"]["sources"]:
            if max_rows and src.get("max_rows"):
                src["max_rows"] = max_rows
    mixed = copy.deepcopy(specs["general"])
    mixed["name"] = "mixed"
    mixed["sft"]["sources"] = union_sources(*(specs[n]["sft"]["sources"] for n in SETS))
    specs["mixed"] = mixed
    return specs


def arm_recipe(arm: str, base: Path, specs: dict[str, dict], steps: int) -> RecipeConfig:
    """The arm as a recipe: its stages in order, ``steps`` optimiser steps in all, from ``base``."""
    stages = []
    for name, n in zip(ARMS[arm], split_steps(steps, len(ARMS[arm])), strict=True):
        stage = copy.deepcopy(specs[name])
        stage["training"].update(max_steps=n, max_minutes=None)  # a step budget, never a time budget
        stages.append(stage)
    return recipe_from_dict(
        {
            "name": f"instruction-stages-{arm}",
            "model": {"preset": None, "pretrained": str(Path(base).resolve())},
            "stages": stages,
        }
    )


def pretrain_base(args, out: Path) -> Path:
    """The quickstart's pre-training (``quickstart_config``) for ``--cpt-minutes`` or ``--cpt-steps``."""
    cfg = quickstart_config(args.cpt_minutes, seed=0)
    if args.cpt_steps:
        cfg.training.max_minutes, cfg.training.max_steps = None, args.cpt_steps
    run_dir = out / (f"base-{args.cpt_steps}steps" if args.cpt_steps else f"base-{args.cpt_minutes:g}min")
    if stage_finished(run_dir):
        print(f"base model: {run_dir / 'model'} (pre-trained earlier)", flush=True)
        return run_dir / "model"
    print(f"pre-training the base model into {run_dir} ...", flush=True)
    resume = latest_checkpoint(run_dir / "checkpoints") is not None
    return train(cfg, run_dir, resume=resume, progress=not args.no_progress).model_dir


# ----------------------------------------------------------------------------------------------
# Held-out rows: built as the training loop builds them


def stage_rows(cfg: RunConfig, cache_dir: Path) -> TrainData:
    """A stage's instruction rows exactly as ``training.loop`` prepares them: its tokenizer (the
    starting model's), the chat template, ``prepare_data``."""
    tokenizer = prepare_tokenizer(cfg.tokenizer, cfg.model, cfg.data, cache_dir, cfg.data.block_size)
    prepare_chat_template(cfg.sft, tokenizer)
    return prepare_data(cfg, tokenizer, cache_dir, cfg.training.seed)


def row_set(rows: np.ndarray) -> set[bytes]:
    return {np.asarray(r, dtype=np.int32).tobytes() for r in rows}


@dataclass
class HeldOut:
    """One held-out set: its rows in the loop's seeded order, and what scoring needs of them."""

    ids: np.ndarray  # [N, L] token ids
    prompt_lengths: np.ndarray  # [N]
    answer_lengths: np.ndarray  # [N] answer tokens incl. the first end token
    sources: list[str]  # [N] the source of each row
    maskable: np.ndarray  # [N, L] answer and end padding

    def first(self, n: int) -> HeldOut:
        """The first ``n`` rows (0: all): a fair sample, the order being a seeded permutation."""
        if not n:
            return self
        return HeldOut(
            self.ids[:n],
            self.prompt_lengths[:n],
            self.answer_lengths[:n],
            self.sources[:n],
            self.maskable[:n],
        )


def held_out(data: TrainData) -> HeldOut:
    # rows are laid out source after source (data.sft.build_sft_data): the report's counts say where
    names = [s["source"] for s in data.report["sources"] for _ in range(s["kept"])]
    idx = data.val_idx
    return HeldOut(
        ids=np.asarray(data.rows[idx]),
        prompt_lengths=data.prompt_lengths[idx],
        answer_lengths=data.answer_lengths[idx],
        sources=[names[i] for i in idx],
        maskable=data.maskable(idx),
    )


def check_held_out(recipe: RecipeConfig, arm_dir: Path, sets: dict[str, HeldOut]) -> None:
    """Every stage of the arm held out exactly the rows this benchmark scores (its sets' rows)."""
    for i, stage in enumerate(recipe.stages):
        data = stage_rows(stage_config(recipe, i, arm_dir), arm_dir / stage.name / "data")
        got = row_set(data.rows[data.val_idx])
        want = set().union(*(row_set(sets[s].ids) for s in COVERS[stage.name]))
        if got != want:
            raise RuntimeError(
                f"{arm_dir / stage.name}: held out {len(got)} rows, the benchmark scores {len(want)} "
                f"({len(got & want)} in common): the arms would not be scored on their own held-out rows"
            )


# ----------------------------------------------------------------------------------------------
# Scoring


def answer_perplexity(loaded: Loaded, h: HeldOut, t_samples: int, progress: bool) -> dict:
    """The answer ELBO perplexity per answer token (the stages' ``val_answer_elbo_ppl``) with its s.e."""
    r = elbo_perplexity(
        MaskedLMParts(loaded.model),
        torch.from_numpy(h.ids.astype(np.int64)),
        schedule=loaded.settings.make_schedule(),
        mask_id=loaded.mask_id,
        maskable=torch.from_numpy(h.maskable),
        t_samples=t_samples,
        batch_size=16,
        seed=0,
        progress=progress,
    )
    answer_tokens = int(h.answer_lengths.sum())
    scale = r.tokens / answer_tokens  # the NELBO of answer + padding, per answer token
    nll = r.nelbo_per_token * scale
    return {
        "answer_nelbo": nll,
        "answer_ppl": math.exp(min(nll, 700.0)),
        "stderr_nelbo": r.stderr_nelbo * scale,
        "rows": r.sequences,
        "answer_tokens": answer_tokens,
        "scored_tokens": r.tokens,
        "t_samples": t_samples,
    }


def task_exact_match(loaded: Loaded, h: HeldOut, n_items: int) -> dict:
    """Greedy answers to the first ``n_items`` held-out rows of the task source against their answer."""
    tok = loaded.tokenizer
    rows = [i for i, s in enumerate(h.sources) if s == TASK_SOURCE][:n_items]
    if not rows:
        return {"exact_match": float("nan"), "stderr": float("nan"), "items": 0, "examples": []}
    prompts = [h.ids[i, : h.prompt_lengths[i]].tolist() for i in rows]  # <bos> + prompt, as trained
    golds = [
        extract_answer(tok.decode(h.ids[i, p : p + a], skip_special_tokens=True))
        for i, p, a in zip(rows, h.prompt_lengths[rows], h.answer_lengths[rows], strict=True)
    ]
    gen = GenerationConfig(max_new_tokens=16, steps=16, block_size=16, temperature=0.0, stop=CHAT_STOP)
    out = generate(loaded.model, tok, prompts, gen, schedule=loaded.settings.make_schedule())
    preds = [extract_answer(t) for t in out.texts]
    m = mean_with_stderr([squad_exact(p, [g]) for p, g in zip(preds, golds, strict=True)])
    examples = [{"gold": g, "answer": p} for p, g in zip(preds[:5], golds[:5], strict=True)]
    return {"exact_match": m.value, "stderr": m.stderr, "items": m.n, "examples": examples}


def score(model_dir: Path, sets: dict[str, HeldOut], args) -> dict:
    loaded = load_checkpoint(model_dir)
    t0, cpu0 = time.perf_counter(), time.process_time()
    row = {}
    for name in SETS:
        print(
            f"  scoring {name} held-out answers ({len(sets[name].first(args.val_rows).ids)} rows) ...",
            flush=True,
        )
        row[name] = answer_perplexity(
            loaded, sets[name].first(args.val_rows), args.t_samples, not args.no_progress
        )
    if args.em_items:
        row["task_em"] = task_exact_match(loaded, sets["task"], args.em_items)
    row["score_seconds"], row["score_cpu_seconds"] = time.perf_counter() - t0, time.process_time() - cpu0
    return row


# ----------------------------------------------------------------------------------------------


def run_arm(arm: str, seed: int, base: Path, sets: dict[str, HeldOut], args) -> dict:
    training = {"eval_blocks": 4, "eval_t_samples": 1} if args.quick else None
    recipe = arm_recipe(arm, base, stage_specs(seed, args.max_rows, training, args.max_length), args.steps)
    tag = f"steps{args.steps}" + (f"-rows{args.max_rows}" if args.max_rows else "")
    arm_dir = Path(args.out) / f"{tag}-seed{seed}" / arm
    print(
        f"\n[seed {seed}] arm {label(arm)}: "
        + " → ".join(f"{s.name} {s.training.max_steps}" for s in recipe.stages)
        + " steps",
        flush=True,
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = run_recipe(recipe, arm_dir, resume=True, progress=not args.no_progress)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    check_held_out(recipe, arm_dir, sets)
    stages = [
        {
            k: s.get(k)
            for k in ("name", "steps", "train_seconds", "val_answer_elbo_ppl_start", "val_answer_elbo_ppl")
        }
        for s in result.stages
    ]
    row = {"stages": stages, "sft_steps": sum(s["steps"] or 0 for s in stages), "held_out_check": "same rows"}
    row.update(score(result.final_model, sets, args))
    row["train_seconds"], row["train_cpu_seconds"] = train_s, train_cpu  # this call (0 if reused)
    return row


def fmt_pm(value: float, se: float) -> str:
    return f"{value:,.2f} ± {se:,.2f}" if value < 1e5 else f"{value:.3e} ± {se:.1e}"  # an untuned base: huge


def fmt_ppl(r: dict) -> str:
    return fmt_pm(r["answer_ppl"], r["answer_ppl"] * r["stderr_nelbo"])  # the s.e. by the delta method


def fmt_em(r: dict | None) -> str:
    return (
        "—"
        if not r or not r["items"]
        else f"{100 * r['exact_match']:.1f} % ± {100 * r['stderr']:.1f} (n={r['items']})"
    )


def table(arms: dict[str, dict]) -> str:
    lines = [
        "| arm | SFT steps | general answer ppl (± s.e.) | task answer ppl (± s.e.) | task exact match |",
        "|---|---|---|---|---|",
    ]
    for arm, r in arms.items():
        steps = " + ".join(str(s["steps"]) for s in r.get("stages", [])) or "0"
        lines.append(
            f"| {label(arm)} | {steps} | {fmt_ppl(r['general'])} | {fmt_ppl(r['task'])} | {fmt_em(r.get('task_em'))} |"
        )
    return "\n".join(lines)


def mean_table(runs: list[dict]) -> str:
    """Mean over seeds of each arm's perplexities and exact match, ± their s.e. over seeds."""
    lines = [
        f"| arm | general answer ppl (mean ± s.e., {len(runs)} seeds) | task answer ppl | task exact match |",
        "|---|---|---|---|",
    ]
    for arm in runs[0]["arms"]:
        cells = []
        for key in SETS:
            m = mean_with_stderr([run["arms"][arm][key]["answer_ppl"] for run in runs])
            cells.append(fmt_pm(m.value, m.stderr))
        em = [run["arms"][arm]["task_em"]["exact_match"] for run in runs if "task_em" in run["arms"][arm]]
        m = mean_with_stderr(em)
        cells.append(f"{100 * m.value:.1f} % ± {100 * m.stderr:.1f}" if em else "—")
        lines.append(f"| {label(arm)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--base", help="the pre-trained model folder every arm starts from (default: pre-train one)"
    )
    ap.add_argument("--cpt-minutes", type=float, default=5.0, help="without --base: pre-training minutes")
    ap.add_argument("--cpt-steps", type=int, default=0, help="without --base: pre-training steps (wins)")
    ap.add_argument("--steps", type=int, default=200, help="SFT optimiser steps of every arm, in all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="SFT training seeds")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--t-samples", type=int, default=8, help="ELBO draws per held-out row")
    ap.add_argument(
        "--val-rows", type=int, default=0, help="score the first N held-out rows of each set (0: all)"
    )
    ap.add_argument(
        "--em-items", type=int, default=32, help="fill-blank rows decoded for exact match (0: skip)"
    )
    ap.add_argument("--max-rows", type=int, default=0, help="cap each builtin source (0: as shipped, 6000)")
    ap.add_argument("--max-length", type=int, default=0, help="SFT row length (0: as shipped)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="runs/bench-instruction-stages")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 SFT steps, small data and scoring")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.t_samples, args.val_rows, args.em_items, args.max_rows = 2, 1, 16, 8, 300
        args.cpt_steps = args.cpt_steps or 5
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(args.out)
    base = Path(args.base) if args.base else pretrain_base(args, out)

    # the held-out sets: the rows the shipped general and task stages hold out (from the base model)
    specs = stage_specs(0, args.max_rows, max_length=args.max_length)
    sets = {
        name: held_out(stage_rows(stage_config(arm_recipe(name, base, specs, 1), 0, out), out / "data"))
        for name in SETS
    }
    for name, h in sets.items():
        counts = {s: h.sources.count(s) for s in dict.fromkeys(h.sources)}
        print(
            f"held-out {name} rows: {len(h.ids)} {counts}; {int(h.answer_lengths.sum()):,} answer tokens",
            flush=True,
        )

    result = {
        "base": str(base),
        "steps": args.steps,
        "seeds": args.seeds,
        "t_samples": args.t_samples,
        "val_rows": args.val_rows or None,
        "em_items": args.em_items,
        "max_rows": args.max_rows or None,
        "threads": torch.get_num_threads(),
        "held_out": {
            n: {"rows": len(h.ids), "answer_tokens": int(h.answer_lengths.sum())} for n, h in sets.items()
        },
        "runs": [],
    }
    path = out / "instruction_stages.json"
    base_row = None
    for seed in args.seeds:
        run = {"seed": seed, "arms": {}}
        result["runs"].append(run)
        for arm in args.arms:
            if arm == "none":  # no training: the same for every seed
                if base_row is None:
                    print(f"\narm none: the base model {base}", flush=True)
                    base_row = {"stages": [], "sft_steps": 0, **score(base, sets, args)}
                run["arms"][arm] = base_row
            else:
                run["arms"][arm] = run_arm(arm, seed, base, sets, args)
            result["wall_seconds"] = time.perf_counter() - t_start
            result["cpu_seconds"] = time.process_time() - cpu_start
            atomic_write_json(path, result)
        print(f"\nseed {seed}, {args.steps} SFT steps per arm, from {base}:\n")
        print(table(run["arms"]))
    if len(result["runs"]) > 1:
        print("\n" + mean_table(result["runs"]))
    print(f"\nwall {result['wall_seconds']:.0f} s, CPU {result['cpu_seconds']:.0f} s; results in {path}")


if __name__ == "__main__":
    main()
