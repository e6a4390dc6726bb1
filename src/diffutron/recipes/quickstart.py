"""The quickstart: a Turkish masked diffusion model from nothing, offline, on a CPU, in minutes.

    diffutron quickstart --minutes 5 --out runs/quickstart

1. trains a byte-level BPE tokenizer on the embedded corpus (Atatürk's speeches, public domain);
2. packs the corpus into 128-token blocks, holds out 2% for validation;
3. trains the ``tiny`` ModernBERT (~5M parameters) with the MDLM loss for the time budget;
4. reports the validation ELBO perplexity (start and end) and generates continuations of fixed prompts;
5. writes model/, metrics.jsonl, loss.png, summary.json under --out.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import DataConfig, ModelConfig, RunConfig, TokenizerConfig, TrainingConfig
from ..io import atomic_write_json
from ..models.checkpoint import load_checkpoint
from ..sampling import GenerationConfig, generate
from ..training import train

PROMPTS = [
    "Türkiye Cumhuriyeti",
    "Efendiler, milletimiz",
    "Ordular, ilk hedefiniz",
    "Gençlik, istikbalimizin",
]


def quickstart_config(minutes: float, seed: int = 0) -> RunConfig:
    return RunConfig(
        model=ModelConfig(preset="tiny"),
        tokenizer=TokenizerConfig(vocab_size=8000),
        data=DataConfig(sources=["embedded"], block_size=128, val_fraction=0.02),
        training=TrainingConfig(
            max_steps=100_000,
            max_minutes=minutes,
            batch_size=16,
            lr=1e-3,
            warmup_steps=30,
            eval_every=100,
            eval_blocks=48,
            eval_t_samples=4,
            save_every=100,
            keep_last=1,
            log_every=5,
            seed=seed,
        ),
    )


def run_quickstart(
    out_dir: str | Path = "runs/quickstart", minutes: float = 5.0, seed: int = 0, progress: bool = True
) -> dict:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    result = train(quickstart_config(minutes, seed), out_dir, resume=True, progress=progress)
    loaded = load_checkpoint(result.model_dir)
    gen = GenerationConfig(
        max_new_tokens=32, steps=32, block_size=16, temperature=0.0, repetition_penalty=1.2
    )
    out = generate(loaded.model, loaded.tokenizer, PROMPTS, gen, schedule=loaded.settings.make_schedule())
    samples = [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, out.texts, strict=True)]
    summary = {
        **result.summary,
        "samples": samples,
        "sampling": gen.__dict__,
        "sampling_forward_passes": out.forward_passes,
        "wall_seconds": time.perf_counter() - t0,
        "model_dir": str(result.model_dir),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
