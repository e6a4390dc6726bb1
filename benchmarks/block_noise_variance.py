"""Clipped noise levels (beta, omega) for block diffusion, chosen by the variance of the training loss (issue 23).

    python benchmarks/block_noise_variance.py MODEL_DIR [MODEL_DIR ...] --docs runs/x/train-docs.jsonl
    python benchmarks/block_noise_variance.py runs/bd4/mdlm/model --grid 0.001-1 0.3-0.8 0.45-0.95

BD3-LM (Arriola et al. 2025, section 4) trains on t ~ U[beta, omega] and picks (beta, omega) per block
size by the variance of the loss estimator on a briefly trained model. This does that: for each block-mode
checkpoint (its block size is read from the checkpoint) and each (beta, omega) of ``--grid``, the
training loss (``diffusion.loss.mdlm_loss``, the model's estimator and normalisation defaults) of the same
``--batches`` fixed batches of training rows is drawn ``--draws`` times (new noise levels and masks each
time, seeded). Reported per cell: the mean loss and the variance of one batch's loss over the draws
(the estimator's noise, averaged over the batches), and the same for one level per row (``block_noise:
row``) at the full range, for the per-block default. A clipped loss is not the bound (its mean is
another number); what is compared is the spread. Forward passes only, one thread.

Rows: ``--docs`` (a JSON-lines file of ``{"text": ...}``, e.g. a ``quality_at_budget.py`` run's
``train-docs.jsonl``), else the embedded corpus, packed into blocks of 128 as in training.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from diffutron.data import DataReport, build_blocks, iter_documents
from diffutron.diffusion import mdlm_loss
from diffutron.diffusion.block import block_size_of
from diffutron.models.checkpoint import load_checkpoint
from diffutron.models.heads import MaskedLMParts

FULL = (1e-3, 1.0)  # the unclipped range: [t_eps, 1)


def parse_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low), float(high)


def loss_draws(parts, rows, loaded, *, clip, block_size, block_noise, draws, seed) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        r = mdlm_loss(
            parts,
            rows,
            torch.ones_like(rows, dtype=torch.bool),
            schedule=loaded.settings.make_schedule(),
            mask_id=loaded.mask_id,
            generator=g,
            block_size=block_size,
            clip=None if clip == FULL else clip,
            block_noise=block_noise,
        )
        out.append(float(r.loss))
    return out


def measure(path: str, texts: list[str], args) -> list[dict]:
    loaded = load_checkpoint(path)
    loaded.model.eval()
    data = build_blocks(texts, loaded.tokenizer, block_size=128, progress=False)  # its own tokenizer
    size = block_size_of(loaded.model)
    if size is None:
        raise SystemExit(f"{path} is not a block-diffusion model (diffusion.mode: mdlm)")
    parts = MaskedLMParts(loaded.model)
    pick = np.random.default_rng(0).permutation(len(data))[: args.batches * args.batch]
    batches = [torch.from_numpy(data[pick[i :: args.batches]]).long() for i in range(args.batches)]
    cells = [(c, "block") for c in args.grid] + [(FULL, "row")]
    rows = []
    for clip, noise in cells:
        means, variances = [], []
        with torch.no_grad():
            for i, rows_ids in enumerate(batches):
                d = loss_draws(
                    parts,
                    rows_ids,
                    loaded,
                    clip=clip,
                    block_size=size,
                    block_noise=noise,
                    draws=args.draws,
                    seed=i,
                )
                means.append(statistics.fmean(d))
                variances.append(statistics.variance(d))
        row = {
            "model": path,
            "block_size": size,
            "clip": list(clip),
            "block_noise": noise,
            "mean_loss": statistics.fmean(means),
            "variance": statistics.fmean(variances),
            "variance_stderr": statistics.stdev(variances) / len(variances) ** 0.5
            if len(variances) > 1
            else 0.0,
        }
        rows.append(row)
        label = "full" if clip == FULL else f"[{clip[0]:g}, {clip[1]:g}]"
        print(
            f"| {size} | {label} | {noise} | {row['mean_loss']:.3f} | {row['variance']:.4f} ± "
            f"{row['variance_stderr']:.4f} |",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="block-mode checkpoints (folders)")
    ap.add_argument(
        "--docs", default=None, help="JSON lines of training documents (default: the embedded corpus)"
    )
    ap.add_argument(
        "--grid",
        type=parse_range,
        nargs="+",
        default=[
            parse_range(s)
            for s in ("0.001-1", "0.1-0.9", "0.2-0.7", "0.3-0.8", "0.45-0.95", "0.5-1", "0.6-0.9")
        ],
        help="(beta, omega) ranges as BETA-OMEGA",
    )
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    args.grid = [FULL if abs(lo - FULL[0]) < 1e-9 and hi == 1.0 else (lo, hi) for lo, hi in args.grid]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.docs:
        lines = Path(args.docs).read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines if line]
    else:
        texts = list(iter_documents("embedded", DataReport()))
    print("| L' | (beta, omega) | level per | mean loss | variance of one batch's loss |")
    print("|---:|---|---|---:|---:|")
    rows = [r for m in args.models for r in measure(m, texts, args)]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
