"""Training checkpoints: atomic, keep-last-k, everything needed to continue bit-identically.

A checkpoint folder ``OUT/checkpoints/step-000200/`` holds what ``accelerate`` saves (model weights
as safetensors, optimiser, LR scheduler, the torch/numpy/python RNG states of every process) plus
``trainer_state.json`` (step, data position, token count, the resolved step total) and the state of
each process's masking generator. It is written to a temporary folder and renamed into place, so a
crash mid-save leaves the previous checkpoint intact and never a half-written one.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..io import atomic_write_json

STEP_DIR = re.compile(r"^step-(\d{6,})$")


@dataclass
class TrainState:
    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # global micro-batches consumed in this epoch
    tokens: int = 0  # real tokens seen (all processes)
    total_steps: int = 0  # resolved at start (or after time-budget calibration)
    elapsed_s: float = 0.0


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").exists()]


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def save_training_checkpoint(
    accelerator, root: Path, state: TrainState, generator: torch.Generator, keep_last: int
) -> Path:
    """Every process calls this; only the main process renames and prunes."""
    final = root / f"step-{state.step:06d}"
    tmp = root / f".step-{state.step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    torch.save(generator.get_state(), tmp / f"mask_rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / "trainer_state.json", asdict(state))  # written last: marks completeness
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoint_dirs(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_training_checkpoint(accelerator, path: Path, generator: torch.Generator) -> TrainState:
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise RuntimeError(
            f"cannot resume from {path}: it was written by a different model or setup ({exc}). "
            "Use a fresh --out folder or the config that produced this run."
        ) from exc
    generator.set_state(torch.load(path / f"mask_rng_{accelerator.process_index}.pt"))
    data = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    return TrainState(**data)
