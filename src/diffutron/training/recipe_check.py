"""Offline validation of a recipe: every stage's model is built (random weights, on the meta device, so
a 300M model costs nothing), LoRA applied, and the trainable share reported — nothing is downloaded.

    report = check_recipe(load_recipe(resolve("diffutron-0.3b")))
    print(format_check(report)); report.ok

The backbone's config comes from a local folder or the local Hugging Face cache; a hub model that is
in neither falls back to the preset named by ``model.shape`` (said so in the notes). Data sources are
checked as far as possible offline: local files must exist, builtin sets and their optional packages
must be installed, hub datasets are listed as not fetched. Settings are checked against the names
the code knows (schedules, normalisations, formats, truncation policies, the chat template).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RecipeConfig
from ..data.corpus import missing_corpus
from ..data.sft import TOO_LONG, as_source, label
from ..diffusion.loss import ESTIMATORS, NORMALIZATIONS
from ..diffusion.schedules import get_schedule
from ..languages import LANGUAGES
from ..models.lora import apply_lora, trainable_share
from ..models.presets import PRESETS, preset_config


@dataclass
class StageCheck:
    name: str
    kind: str  # pretrain | sft
    method: str
    trainable: int = 0
    total: int = 0
    share: float = 0.0
    length: int = 0
    length_of_run: str = ""  # "20 epochs", "1,000 steps", "4 min"
    lr: float = 0.0
    batch: str = ""
    data: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class RecipeCheck:
    recipe: str
    backbone: str
    notes: list[str] = field(default_factory=list)
    stages: list[StageCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(not s.problems for s in self.stages)


def _backbone_config(recipe: RecipeConfig, notes: list[str]) -> Any:
    """The first stage's model config without touching the network."""
    m = recipe.model
    if m.pretrained:
        from transformers import AutoConfig

        try:
            # local_files_only: a local folder or the local hub cache, never a download
            return AutoConfig.from_pretrained(m.pretrained, local_files_only=True)
        except (OSError, ValueError) as exc:
            if not m.shape:
                raise ValueError(
                    f"the config of {m.pretrained!r} is not available offline ({type(exc).__name__}) and the "
                    "recipe names no `model.shape` preset to check it with"
                ) from exc
            notes.append(
                f"{m.pretrained} is not available offline: its shape is taken from preset "
                f"{m.shape!r} (the recipe's `model.shape`)"
            )
            return preset_config(m.shape, **m.overrides)
    if not m.preset:
        raise ValueError("model: set either `preset` or `pretrained`")
    vocab = recipe.tokenizer.vocab_size
    if recipe.tokenizer.path and Path(recipe.tokenizer.path).exists():
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(recipe.tokenizer.path))
    else:
        notes.append(f"vocabulary of the tokenizer to be trained: {vocab:,} (tokenizer.vocab_size)")
    return preset_config(m.preset, **{"vocab_size": vocab, **m.overrides})


def _share(config: Any, lora: Any) -> tuple[int, int, float]:
    from transformers import AutoModelForMaskedLM

    # meta tensors: shapes without memory, so the 256k-vocabulary backbone is built in milliseconds
    with torch.device("meta"):
        model = AutoModelForMaskedLM.from_config(config)
        if lora.enabled:
            model = apply_lora(model, lora)
    return trainable_share(model)


# the built-in instruction sets derived from a language pack's corpus -> that corpus
_CORPUS_OF_BUILTIN = {
    pack.builtin(name): pack.corpus for pack in LANGUAGES.values() for name in pack.instructions
}


def _data_lines(stage: Any, problems: list[str]) -> list[str]:
    lines = []
    if stage.data is not None:
        for src in stage.data.sources:
            if (isinstance(src, str) and src.startswith("hub:")) or (isinstance(src, dict) and "hub" in src):
                lines.append(f"{src if isinstance(src, str) else 'hub:' + src['hub']} (hub, not fetched)")
            elif isinstance(src, str) and src.startswith("embedded"):
                missing = missing_corpus(src)
                lines.append(src + ("" if missing is None else " (not available)"))
                if missing is not None:
                    problems.append(f"the embedded corpus {src} needs: {missing}")
            else:
                path = src["path"] if isinstance(src, dict) else src
                lines.append(str(path))
                if not Path(path).exists():
                    problems.append(f"data source not found: {path}")
        return lines
    sft = stage.sft
    if sft.too_long not in TOO_LONG:
        problems.append(f"sft.too_long must be one of {TOO_LONG}, got {sft.too_long!r}")
    if not 0.0 < sft.val_fraction < 1.0:
        problems.append(
            f"sft.val_fraction must be in (0, 1) so the stage can be validated, got {sft.val_fraction}"
        )
    if sft.chat_template not in ("diffutron", "compact", "tokenizer"):
        try:
            import jinja2

            jinja2.Environment().parse(sft.chat_template)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"sft.chat_template is not a valid Jinja template: {exc}")
    for spec in sft.sources:
        try:
            s = as_source(spec)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        text = f"{label(s)} ({s.format}, weight {s.weight:g})"
        if s.hub:
            text += " (hub, not fetched)"
        elif s.path and not Path(s.path).exists():
            problems.append(f"SFT source not found: {s.path}")
        elif s.builtin == "chatterbot" and importlib.util.find_spec("chatterbot_corpus") is None:
            text += " (chatterbot-corpus not installed" + (": skipped)" if s.optional else ")")
            if not s.optional:
                problems.append("the chatterbot source needs: pip install --no-deps chatterbot-corpus")
        elif s.builtin in _CORPUS_OF_BUILTIN and (missing := missing_corpus(_CORPUS_OF_BUILTIN[s.builtin])):
            problems.append(f"builtin:{s.builtin} needs the embedded corpus: {missing}")
        lines.append(text)
    return lines


def check_recipe(recipe: RecipeConfig) -> RecipeCheck:
    """Validate every stage of ``recipe`` offline; see ``RecipeCheck.ok`` and each stage's problems."""
    m = recipe.model
    report = RecipeCheck(recipe=recipe.name, backbone=m.pretrained or f"preset {m.preset}")
    config = _backbone_config(recipe, report.notes)
    if m.shape and m.shape not in PRESETS:
        report.notes.append(f"model.shape {m.shape!r} is not a known preset ({sorted(PRESETS)})")
    for stage in recipe.stages:
        tc, lora = stage.training, stage.lora
        row = StageCheck(
            name=stage.name,
            kind="sft" if stage.sft is not None else "pretrain",
            method=f"LoRA r={lora.r}, alpha={lora.alpha}" if lora.enabled else "full (all weights)",
            length=stage.sft.max_length if stage.sft is not None else stage.data.block_size,
            lr=tc.lr,
            batch=f"{tc.batch_size}" + (f" x {tc.grad_accum}" if tc.grad_accum > 1 else ""),
        )
        if tc.epochs is not None:
            row.length_of_run = f"{tc.epochs:g} epoch{'s' if tc.epochs != 1 else ''}"
        else:
            row.length_of_run = f"{tc.max_steps:,} steps"
        if tc.max_minutes:
            row.length_of_run += f", <= {tc.max_minutes:g} min"
        try:
            get_schedule(stage.diffusion.schedule, **stage.diffusion.schedule_args)
        except (ValueError, TypeError) as exc:
            row.problems.append(f"diffusion.schedule: {exc}")
        if stage.diffusion.normalization not in NORMALIZATIONS:
            row.problems.append(f"diffusion.normalization must be one of {NORMALIZATIONS}")
        if stage.diffusion.estimator not in ESTIMATORS:
            row.problems.append(f"diffusion.estimator must be one of {ESTIMATORS}")
        max_pos = getattr(config, "max_position_embeddings", None)
        if max_pos is not None and row.length > max_pos:
            row.problems.append(f"length {row.length} exceeds the model's {max_pos} positions")
        row.data = _data_lines(stage, row.problems)
        try:
            row.trainable, row.total, row.share = _share(config, lora)
        except ValueError as exc:  # e.g. LoRA target modules the architecture does not have
            row.problems.append(f"LoRA: {exc}")
        report.stages.append(row)
    return report


def format_check(report: RecipeCheck) -> str:
    lines = [f"Recipe {report.recipe}: {len(report.stages)} stages, backbone {report.backbone}"]
    lines += [f"  note: {n}" for n in report.notes]
    head = f"  {'stage':<12} {'kind':<9} {'method':<26} {'trainable':>28} {'length':>6}  {'run':<18} {'lr':>8} {'batch':>7}"
    lines.append(head)
    for s in report.stages:
        train = f"{s.trainable / 1e6:,.1f}M / {s.total / 1e6:,.1f}M = {100 * s.share:.2f}%"
        lines.append(
            f"  {s.name:<12} {s.kind:<9} {s.method:<26} {train:>28} {s.length:>6}  {s.length_of_run:<18} "
            f"{s.lr:>8.2g} {s.batch:>7}"
        )
        lines += [f"      data: {d}" for d in s.data]
        lines += [f"      PROBLEM: {p}" for p in s.problems]
    n_bad = sum(bool(s.problems) for s in report.stages)
    lines.append("OK: every stage is valid." if report.ok else f"{n_bad} stage(s) have problems.")
    return "\n".join(lines)
