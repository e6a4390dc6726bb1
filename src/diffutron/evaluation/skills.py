"""The skill table: exact match of every checkable skill (data/skills.py) on held-out items.

    from diffutron.evaluation.skills import evaluate_skills, exact_match
    table = evaluate_skills(model, tokenizer, ["tekrar", "ek"], schedule=settings.make_schedule())
    table["ek"] == {"kind": "task", "exact_match": 0.82, "stderr": 0.054, "n": 50}

Answers are decoded greedily, one token per denoising pass, most confident position first
(``low_confidence`` remasking, ``steps == max_new_tokens``): the decode that gives a small model its
best chance at an exact string. An answer counts when it equals the reference after stripping
spaces and NFC normalisation: case matters (the upper-case skill is about case).
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

import torch

from ..data.sft import row_to_messages
from ..data.skills import SKILLS, heldout
from ..sampling import GenerationConfig, generate
from ..text.chat import extract_answer, format_chat

ANSWER_MARKER = "[Answer]"

__all__ = [
    "SKILL_DECODE",
    "answer",
    "evaluate_skills",
    "exact_match",
    "format_skills",
    "skill_prompt",
    "skill_table",
]

# 24 new tokens hold the longest answer (4 upper-case words are ~20 BPE tokens); one token per pass
SKILL_DECODE = dict(max_new_tokens=24, steps=24, block_size=0, temperature=0.0, remasking="low_confidence")


def _norm(s: str) -> str:
    return unicodedata.normalize("NFC", " ".join(s.split()))


def exact_match(predictions: list[str], references: list[str]) -> tuple[float, float]:
    """Share of exact answers and its standard error sqrt(p(1-p)/n)."""
    if len(predictions) != len(references) or not references:
        raise ValueError(
            f"need as many predictions as references (>0); got {len(predictions)}, {len(references)}"
        )
    hits = [_norm(p) == _norm(r) for p, r in zip(predictions, references, strict=True)]
    p = sum(hits) / len(hits)
    return p, math.sqrt(p * (1 - p) / len(hits))


def skill_prompt(tokenizer: Any, row: dict[str, Any]) -> str:
    """The chat prompt of a skill row, as training renders it: the tokenizer's template when it has
    one (an SFT stage's model), else (a pre-trained model, before any SFT) the template its first SFT
    stage will install: compact for a tokenizer holding the chat markers as tokens, else the default."""
    messages = row_to_messages(row, "alpaca")[:-1]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return format_chat(messages, add_generation_prompt=True, compact=ANSWER_MARKER in tokenizer.get_vocab())


@torch.no_grad()
def answer(model: torch.nn.Module, tokenizer: Any, rows: list[dict[str, Any]], schedule=None) -> list[str]:
    """The model's answers to skill rows, with the skill decode."""
    cfg = GenerationConfig(**SKILL_DECODE)
    prompts = [skill_prompt(tokenizer, r) for r in rows]
    out = generate(model, tokenizer, prompts, cfg, schedule=schedule)
    return [extract_answer(t) for t in out.texts]


def evaluate_skills(
    model: torch.nn.Module, tokenizer: Any, names: list[str], *, n: int = 50, schedule=None
) -> dict[str, dict[str, Any]]:
    """Per skill: kind, exact match on ``n`` held-out items, its standard error, and one example."""
    was_training = model.training
    model.eval()
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = heldout(name, n)
        preds = answer(model, tokenizer, rows, schedule)
        em, se = exact_match(preds, [r["output"] for r in rows])
        table[name] = {
            "kind": SKILLS[name].kind,
            "exact_match": em,
            "stderr": se,
            "n": len(rows),
            "example": {"input": rows[0]["item"], "answer": preds[0], "reference": rows[0]["output"]},
        }
    model.train(was_training)
    return table


def skill_table(per_stage: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``{stage: {skill: row}}`` (stages in order) -> the summary's ``{skill: {kind, exact_match:
    {stage: x}, stderr: {stage: se}}}``."""
    table: dict[str, dict[str, Any]] = {}
    for stage, rows in per_stage.items():
        for name, row in rows.items():
            t = table.setdefault(name, {"kind": row["kind"], "exact_match": {}, "stderr": {}})
            t["exact_match"][stage] = row["exact_match"]
            t["stderr"][stage] = row["stderr"]
    return table


def format_skills(table: dict[str, dict[str, Any]], answer_ppl: dict[str, float | None] | None = None) -> str:
    """The skill table as text: one row per skill, one column per stage (exact match % +- s.e.)."""
    if not table:
        return ""
    stages = list(next(iter(table.values()))["exact_match"])
    lines = [f"{'skill':<10} {'kind':<8} " + " ".join(f"{s:>14}" for s in stages)]
    for name, t in table.items():
        cells = [f"{100 * t['exact_match'][s]:5.1f}% ±{100 * t['stderr'][s]:4.1f}" for s in stages]
        lines.append(f"{name:<10} {t['kind']:<8} " + " ".join(f"{c:>14}" for c in cells))
    if answer_ppl:
        cells = ["—" if answer_ppl.get(s) is None else f"{answer_ppl[s]:,.2f}" for s in stages]
        lines.append(f"{'answer ppl':<10} {'':<8} " + " ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)
