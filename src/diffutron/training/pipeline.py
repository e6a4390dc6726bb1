"""The staged pipeline: a recipe's stages run in order, each from the previous stage's model.

    recipe = load_recipe(resolve("quickstart-tr"))
    result = run_recipe(recipe, "runs/quickstart-tr")               # every stage
    result = run_recipe(recipe, "runs/quickstart-tr", resume=True)  # after a crash, anywhere

The output folder::

    OUT/pipeline.json     the recipe, each stage's status and before/after numbers, the final model
    OUT/<stage>/          one training run: checkpoints/, metrics.jsonl, loss.png, summary.json,
                          model/ (LoRA merged, tokenizer with the chat template, README.md model card)

What it does, stage by stage:
  1. build the stage's run config: the first stage starts from the recipe's ``model`` and
     ``tokenizer``; stage i > 0 from ``OUT/<stage i-1>/model`` (weights with any LoRA merged, and
     that model's tokenizer);
  2. skip the stage if it is finished (its ``summary.json`` is written last, after the model), having
     checked that its saved settings still match the recipe;
  3. otherwise train it with ``training.train`` — with ``resume=True`` from its latest checkpoint, so a
     crash resumes at the right stage *and* step, and ends bit-identical (on CPU) to a run that never
     crashed.
It knows nothing of the data or the objective: each stage is an ordinary run of the one loop.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig, ModelConfig, RecipeConfig, RunConfig, TokenizerConfig, to_dict
from ..io import atomic_write_json
from .loop import check_same_run, train
from .state import latest_checkpoint

log = logging.getLogger(__name__)
PIPELINE_FILE = "pipeline.json"


@dataclass
class PipelineResult:
    out_dir: Path
    stages: list[dict] = field(default_factory=list)  # per stage: name, kind, status, dir, numbers
    final_model: Path | None = None
    skills: dict = field(default_factory=dict)  # the skill table (evaluation.skills.skill_table)
    answer_ppl: dict = field(default_factory=dict)  # stage -> held-out answer ELBO ppl (SFT stages)


SKILLS_FILE = "skills.json"


def recipe_skills(recipe: RecipeConfig) -> list[str]:
    """The checkable skills the recipe's SFT stages train (built-in skill sources), in order."""
    from ..data.sft import as_source
    from ..data.skills import skills_of_builtin

    names: list[str] = []
    for stage in recipe.stages:
        for spec in stage.sft.sources if stage.sft is not None else []:
            src = as_source(spec)
            names += [n for n in skills_of_builtin(src.builtin or "") if n not in names]
    return names


def stage_skills(path: Path, names: list[str]) -> dict:
    """The skill rows of a finished stage's model: read from ``skills.json``, else measured and saved."""
    saved = path / SKILLS_FILE
    if saved.exists():
        rows = json.loads(saved.read_text(encoding="utf-8"))
        if list(rows) == names:
            return rows
    from ..evaluation.skills import evaluate_skills
    from ..models.checkpoint import load_checkpoint

    loaded = load_checkpoint(path / "model")
    rows = evaluate_skills(loaded.model, loaded.tokenizer, names, schedule=loaded.settings.make_schedule())
    atomic_write_json(saved, rows)
    return rows


def stage_dir(out_dir: Path, recipe: RecipeConfig, index: int) -> Path:
    return Path(out_dir) / recipe.stages[index].name


def stage_config(recipe: RecipeConfig, index: int, out_dir: str | Path) -> RunConfig:
    """The run config of stage ``index``: its own sections, the model of the stage before it."""
    stage = recipe.stages[index]
    if index == 0:
        model, tokenizer = recipe.model, recipe.tokenizer
    else:
        # resolved: the same folder must compare equal on resume whatever form --out was given in
        prev = (stage_dir(Path(out_dir), recipe, index - 1) / "model").resolve()
        model, tokenizer = ModelConfig(preset=None, pretrained=str(prev)), TokenizerConfig()
    sft = stage.sft
    if sft is not None and sft.replay > 0:
        # replay: the sources of the nearest SFT stage before this one (what it must not forget)
        earlier = [s.sft for s in recipe.stages[:index] if s.sft is not None]
        sft = copy.deepcopy(sft)
        if earlier:
            sft.replay_sources = copy.deepcopy(earlier[-1].sources)
        else:  # the stage run on its own (e.g. one arm of a benchmark): nothing to replay
            log.warning("stage %r: sft.replay with no SFT stage before it: nothing replayed", stage.name)
            sft.replay = 0.0
    # a copy: train() resolves fields in place (epochs -> max_steps), the recipe must stay as written
    return copy.deepcopy(
        RunConfig(
            model=model,
            tokenizer=tokenizer,
            data=stage.data if stage.data is not None else DataConfig(),
            diffusion=stage.diffusion,
            lora=stage.lora,
            training=stage.training,
            sft=sft,
            language=recipe.language,
        )
    )


def stage_finished(path: Path) -> bool:
    return (path / "summary.json").exists() and (path / "model" / "config.json").exists()


def _headline(summary: dict) -> dict:
    keys = (
        "kind",
        "steps",
        "train_seconds",
        "trainable_share",
        "val_elbo_ppl_start",
        "val_elbo_ppl",
        "val_answer_elbo_ppl_start",
        "val_answer_elbo_ppl",
    )
    return {k: summary.get(k) for k in keys if k in summary}


def run_recipe(
    recipe: RecipeConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> PipelineResult:
    """Run every stage of ``recipe`` into ``out_dir``; ``max_steps`` sets every stage's total (smoke tests)."""
    out_dir = Path(out_dir)
    n = len(recipe.stages)
    dirs = [stage_dir(out_dir, recipe, i) for i in range(n)]
    started = [d for d in dirs if stage_finished(d) or latest_checkpoint(d / "checkpoints") is not None]
    if started and not resume:
        raise FileExistsError(
            f"{out_dir} already holds stages of a run ({', '.join(d.name for d in started)}): "
            "pass --resume to continue it or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PipelineResult(out_dir=out_dir)
    record = {"recipe": to_dict(recipe), "stages": [], "final_model": None}
    skill_names = recipe_skills(recipe)
    per_stage: dict[str, dict] = {}  # stage -> skill rows, in stage order

    def measure_skills(i: int) -> None:
        # every stage's model, the pre-trained one included: the table starts before the first SFT stage
        if not skill_names:
            return
        from ..evaluation.skills import skill_table

        per_stage[recipe.stages[i].name] = stage_skills(dirs[i], skill_names)
        record["skills"] = skill_table(per_stage)
        atomic_write_json(out_dir / PIPELINE_FILE, record)

    for i, stage in enumerate(recipe.stages):
        record["stages"].append({"name": stage.name, "status": "pending", "dir": str(dirs[i])})
    atomic_write_json(out_dir / PIPELINE_FILE, record)

    for i, stage in enumerate(recipe.stages):
        # 1. the stage's run config, starting from the previous stage's model
        cfg = stage_config(recipe, i, out_dir)
        entry = record["stages"][i]
        kind = "SFT" if stage.sft is not None else "pre-training"
        method = f"LoRA r={stage.lora.r}" if stage.lora.enabled else "all weights"
        if stage_finished(dirs[i]):
            # 2. a finished stage is kept only if the recipe still describes it
            check_same_run(dirs[i], cfg, resuming=True)
            summary = json.loads((dirs[i] / "summary.json").read_text(encoding="utf-8"))
            entry.update(status="done", **_headline(summary))
            if progress:
                print(f"stage {i + 1}/{n} {stage.name}: finished earlier, skipped")
            measure_skills(i)
            continue
        if progress:
            print(f"\n== stage {i + 1}/{n}: {stage.name} ({kind}, {method}) ==")
        entry["status"] = "running"
        atomic_write_json(out_dir / PIPELINE_FILE, record)
        card = {
            "recipe": recipe.name,
            "stage": stage.name,
            "position": f"stage {i + 1} of {n}",
            "description": recipe.description or None,
            "started_from": (f"stage `{recipe.stages[i - 1].name}` of this recipe" if i > 0 else None),
        }
        # 3. train (or continue) the stage; train() refuses a changed config for a started stage
        # (a stage with a checkpoint exists only under --resume: refused above otherwise)
        has_ckpt = latest_checkpoint(dirs[i] / "checkpoints") is not None
        r = train(cfg, dirs[i], resume=has_ckpt, max_steps=max_steps, progress=progress, card=card)
        entry.update(status="done", **_headline(r.summary))
        atomic_write_json(out_dir / PIPELINE_FILE, record)
        if progress:
            print(_stage_line(stage.name, r.summary))
        measure_skills(i)

    result.stages = record["stages"]
    result.final_model = dirs[-1] / "model"
    result.skills = record.get("skills", {})
    result.answer_ppl = {st["name"]: st.get("val_answer_elbo_ppl") for st in record["stages"]}
    record["final_model"] = str(result.final_model)
    atomic_write_json(out_dir / PIPELINE_FILE, record)
    return result


def _stage_line(name: str, s: dict) -> str:
    line = f"{name}: {s.get('steps')} steps, val ELBO ppl {s.get('val_elbo_ppl_start') or float('nan'):,.2f}"
    line += f" -> {s.get('val_elbo_ppl'):,.2f}"
    if s.get("val_answer_elbo_ppl") is not None:
        start = s.get("val_answer_elbo_ppl_start") or float("nan")
        line += f"; answer ELBO ppl {start:,.2f} -> {s['val_answer_elbo_ppl']:,.2f}"
    return line


def format_pipeline(result: PipelineResult) -> str:
    """A table of the stages: before -> after numbers (answer ELBO for SFT stages)."""
    lines = [f"{'stage':<14} {'kind':<9} {'steps':>7} {'val ELBO ppl':>24} {'answer ELBO ppl':>24}"]
    for st in result.stages:

        def pair(a: str, b: str, st: dict = st) -> str:
            x, y = st.get(a), st.get(b)
            return "—" if y is None else f"{x if x is not None else float('nan'):,.2f} -> {y:,.2f}"

        lines.append(
            f"{st['name']:<14} {st.get('kind', ''):<9} {st.get('steps', 0):>7} "
            f"{pair('val_elbo_ppl_start', 'val_elbo_ppl'):>24} "
            f"{pair('val_answer_elbo_ppl_start', 'val_answer_elbo_ppl'):>24}"
        )
    return "\n".join(lines)
