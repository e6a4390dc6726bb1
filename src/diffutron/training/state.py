"""Training checkpoints: atomic, keep-last-k, everything needed to continue bit-identically.

A checkpoint folder ``OUT/checkpoints/step-000200/`` holds what ``accelerate`` saves (model weights
as safetensors, optimiser, LR scheduler, the torch/numpy/python RNG states of every process) plus
``trainer_state.json`` (step, data position, token count, the resolved step total) and the state of
each process's masking generator. It is written to a temporary folder and renamed into place, so a
crash mid-save leaves the previous checkpoint intact and never a half-written one. Old checkpoints
are pruned by renaming them out of the ``step-*`` namespace first, so a crash mid-prune cannot leave a
half-deleted folder that looks like a checkpoint. Leftovers of an interrupted write or prune
(``.step-*.tmp``, ``.step-*.trash``) are removed with a message when the run starts again.

Test hook: ``DIFFUTRON_TEST_SLOW_CHECKPOINT_S=<seconds>`` sleeps inside every checkpoint write (after
the weights and optimiser are written into the temporary folder, before the folder is complete). It
is read only here, in the save path, so a crash-torture test can kill a process mid-write reliably
(``benchmarks/crash_resume.py``). Never set it in real runs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..io import atomic_write_json

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step-(\d{6,})$")
LEFTOVER = re.compile(r"^\.step-\d{6,}\.(tmp|trash)$")
SLOW_SAVE_ENV = "DIFFUTRON_TEST_SLOW_CHECKPOINT_S"  # test hook, see the module docstring


@dataclass
class TrainState:
    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # global micro-batches consumed in this epoch
    tokens: int = 0  # real tokens seen (all processes)
    total_steps: int = 0  # resolved at start (or after time-budget calibration)
    elapsed_s: float = 0.0
    processes: int = 1  # the world size the run trains on: its data slices and RNG files follow it


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").exists()]


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def remove_leftovers(root: Path) -> list[str]:
    """Delete what an interrupted checkpoint write or prune left behind; returns the names removed."""
    if not root.exists():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and LEFTOVER.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def save_training_checkpoint(
    accelerator, root: Path, state: TrainState, generator: torch.Generator, keep_last: int
) -> Path:
    """Every process calls this; only the main process renames and prunes. A failed write (disk
    full, read-only folder) removes its temporary folder and raises ``OSError`` naming the last
    good checkpoint, which it leaves untouched."""
    final = root / f"step-{state.step:06d}"
    tmp = root / f".step-{state.step:06d}.tmp"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        torch.save(generator.get_state(), tmp / f"mask_rng_{accelerator.process_index}.pt")
        if os.environ.get(SLOW_SAVE_ENV):
            time.sleep(float(os.environ[SLOW_SAVE_ENV]))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_json(tmp / "trainer_state.json", asdict(state))  # written last: marks completeness
            if final.exists():  # the same step again (a resumed run): set the old copy aside first
                final.rename(root / f".step-{state.step:06d}.trash")
            tmp.rename(final)
            shutil.rmtree(root / f".step-{state.step:06d}.trash", ignore_errors=True)
    except OSError as exc:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        last = latest_checkpoint(root)
        reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise OSError(
            exc.errno,
            f"cannot write checkpoint {final.name} in {root}: {reason}. "
            + (f"The last good checkpoint, {last}, is intact: free space and rerun with --resume."
               if last is not None else "No earlier checkpoint exists."),
        ) from exc
    if accelerator.is_main_process and keep_last > 0:
        for old in checkpoint_dirs(root)[:-keep_last]:
            trash = root / f".{old.name}.trash"
            old.rename(trash)  # atomic: the folder stops being a checkpoint before it is deleted
            shutil.rmtree(trash, ignore_errors=True)
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


def checkpoint_processes(path: Path) -> int:
    """The number of processes that wrote the checkpoint at ``path``: recorded in its trainer state,
    or, in checkpoints written before it was, the count of per-process mask generator files."""
    try:
        data = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable: loading it fails later, and resume falls back
        data = {}
    if "processes" in data:
        return int(data["processes"])
    return len(list(path.glob("mask_rng_*.pt")))


def check_same_processes(path: Path, processes: int) -> None:
    """Refuse to resume a run on another number of processes. Each process's slice of every global
    batch, its RNG states and its masking generator belong to the world size the run was trained
    on: on another one some processes find no state of their own (and fell back, each on its own,
    to older checkpoints) and the batches would be cut differently. No remap is attempted."""
    saved = checkpoint_processes(path)
    if saved != processes:
        raise ValueError(
            f"cannot resume from {path}: the run was trained on {saved} process(es) and this launch has "
            f"{processes}. Resume it with {saved} (e.g. torchrun --nproc_per_node {saved}), or start a new run "
            "from its weights (model.pretrained: the run's model/ folder once it has finished)"
        )


def load_latest_checkpoint(
    accelerator, root: Path, generator: torch.Generator
) -> tuple[Path, TrainState] | None:
    """Load the newest checkpoint under ``root`` that loads; one that does not (a truncated file
    after a disk failure, a hand-edited state) is skipped with a warning naming it and why.
    Returns None when there is no checkpoint; raises when none of them loads, and, before trying
    any, when the run was trained on another number of processes (``check_same_processes``)."""
    dirs = checkpoint_dirs(root)
    if dirs:
        check_same_processes(dirs[-1], accelerator.num_processes)
    first_error: Exception | None = None
    for path in reversed(dirs):
        try:
            return path, load_training_checkpoint(accelerator, path, generator)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: fall back to the one before
            first_error = first_error or exc
            log.warning("ignoring checkpoint %s: it does not load (%s)", path, exc)
    if first_error is not None:
        raise RuntimeError(f"no checkpoint in {root} loads; the newest failed with: {first_error}") from first_error
    return None
