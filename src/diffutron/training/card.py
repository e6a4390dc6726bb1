"""The model card: a README.md in every model folder, saying what the model is and how it was made.

    write_model_card(out / "model", cfg, summary, {"recipe": "quickstart-tr", "stage": "general"})

Written from the run's config and summary only (no network), with hub metadata in the front matter
so the folder can be uploaded as it is. Numbers are the held-out validation of this run: ELBO
perplexity is an upper bound on perplexity (see ``docs/instruction-tuning.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..data.sft import as_source, label
from ..io import atomic_write_text


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.3f}" if x < 1000 else f"{x:,.0f}"
    return str(x)


def _data_lines(cfg: RunConfig) -> list[str]:
    if cfg.sft is not None:
        lines = []
        for spec in cfg.sft.sources:
            s = as_source(spec)
            lines.append(f"- `{label(s)}` (format {s.format}, weight {s.weight:g})")
        return lines
    return [f"- `{src}`" for src in cfg.data.sources]


def write_model_card(model_dir: Path, cfg: RunConfig, summary: dict, card: dict | None = None) -> Path:
    card = dict(card or {})
    sft = cfg.sft is not None
    base = card.get("base_model") or cfg.model.pretrained
    title = card.get("title") or (
        f"{card['recipe']} — stage {card['stage']}"
        if "recipe" in card and "stage" in card
        else model_dir.parent.name
    )
    front = ["---", "language:", "- tr", "library_name: transformers", "pipeline_tag: fill-mask", "tags:"]
    front += ["- diffutron", "- masked-diffusion", "- mdlm"]
    if base and "/" in str(base) and not Path(str(base)).exists():
        front.append(f"base_model: {base}")  # only hub ids: a local path means nothing elsewhere
    front.append("---")
    kind = "instruction tuning (SFT)" if sft else "masked-diffusion pre-training"
    method = (
        f"LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha} on {', '.join(cfg.lora.target_modules)} (merged)"
        if cfg.lora.enabled
        else "all weights (full training / fine-tuning)"
    )
    tc = cfg.training
    rows = [
        ("kind", kind),
        (
            "started from",
            card.get("started_from") or (f"`{base}`" if base else f"a fresh `{cfg.model.preset}` ModernBERT"),
        ),
        ("method", method),
        ("trainable share", f"{100 * summary.get('trainable_share', 0):.2f}%"),
        ("row length", f"{summary.get('block_size')} tokens"),
        ("steps", f"{summary.get('steps')} ({summary.get('train_tokens', 0):,} tokens)"),
        ("batch", f"{tc.batch_size} x {tc.grad_accum} accumulation"),
        ("optimiser", f"AdamW, lr {tc.lr:g}, warmup + cosine to {tc.min_lr_ratio:g} x lr"),
        ("noise schedule", summary.get("schedule", {}).get("name", cfg.diffusion.schedule)),
        ("loss normalisation", cfg.diffusion.normalization),
    ]
    if sft:
        rows.append(("max length / too long", f"{cfg.sft.max_length} / {cfg.sft.too_long}"))
    lines = [*front, "", f"# {title}", ""]
    lines.append(
        "A masked diffusion language model (MDLM) for Turkish, trained with "
        "Diffutron. It loads as a masked language model with "
        "`transformers`; generation is by iterative unmasking."
    )
    if card.get("description"):
        lines += ["", str(card["description"])]
    if "recipe" in card:
        lines += ["", f"Recipe `{card['recipe']}`, stage `{card.get('stage')}` ({card.get('position', '')})."]
    lines += ["", "## Training", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "Data:", *_data_lines(cfg)]
    lines += ["", "## Held-out validation", "", "| | before | after |", "|---|---|---|"]
    lines.append(
        f"| ELBO perplexity per {'answer + padding ' if sft else ''}token | "
        f"{_fmt(summary.get('val_elbo_ppl_start'))} | {_fmt(summary.get('val_elbo_ppl'))} |"
    )
    if sft:
        lines.append(
            f"| answer ELBO perplexity (given the prompt) | {_fmt(summary.get('val_answer_elbo_ppl_start'))} "
            f"| {_fmt(summary.get('val_answer_elbo_ppl'))} |"
        )
    lines += ["", "## Use", "", "```python", "from diffutron.models.checkpoint import load_checkpoint"]
    lines += ["from diffutron.sampling import GenerationConfig, generate", ""]
    lines += ['loaded = load_checkpoint("path/to/this/folder")']
    if sft:
        lines += [
            'messages = [{"role": "user", "content": "Türkiye\'nin başkenti neresidir?"}]',
            "prompt = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)",
        ]
    else:
        lines.append('prompt = "Türkiye Cumhuriyeti"')
    lines += [
        "out = generate(loaded.model, loaded.tokenizer, [prompt], GenerationConfig(max_new_tokens=64),",
        "               schedule=loaded.settings.make_schedule())",
        "print(out.texts[0])" if not sft else 'print(out.texts[0].split("[/Answer]")[0].strip())',
        "```",
    ]
    if sft:
        lines += [
            "",
            "The chat template (`[SYS]`, `[Question]`, `[Answer]` blocks) is stored in the tokenizer; "
            "an answer ends at `[/Answer]`, followed by end tokens.",
        ]
    path = Path(model_dir) / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
