"""The whole ``diffutron train`` loop vs a straightforward Hugging Face ``Trainer``, in one process.

    python benchmarks/train_loop.py [--preset tiny] [--vocab 16000] [--steps 30] [--rounds 2] [--threads 2]
    python benchmarks/train_loop.py --precision bf16      # both sides under CPU bf16 autocast (Trainer: bf16=True)

Baseline (an honest plain implementation): ``ModernBertForMaskedLM`` with its full output head, a
``transformers.Trainer`` whose ``compute_loss`` masks each row at a uniform t (the linear schedule),
takes the cross-entropy of the masked positions from the full logits and weights it by 1/t (the MDLM
ELBO weight of the linear schedule), normalised per token; fused AdamW (``adamw_torch_fused``),
gradient clipping at 1.0, warmup + cosine, no evaluation or checkpoints.

Ours: ``diffutron.training.train`` — the loop ``diffutron train`` runs — on the same config (model,
tokenizer, packed blocks of the embedded corpus, batch, steps, LR, clipping), evaluation and
checkpoints inside the loop switched off as for the baseline. Its tokens/s is the loop's own number
(``summary.json``), timed from the first step to the last like the baseline's (a ``TrainerCallback``).

The two alternate over ``--rounds`` after one untimed warm-up each (tokenizer, packed blocks and
torch's first-call costs), so a change in the machine's load hits both. Model FLOP/s (encoder,
attention, head at masked rows, x3 for backward; ``train_throughput.useful_flops_per_step``) are
given as a share of a float32 matrix-multiply peak measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from train_throughput import matmul_peak, useful_flops_per_step
from transformers import Trainer, TrainerCallback, TrainingArguments

from diffutron.config import DataConfig, ModelConfig, RunConfig, TokenizerConfig, TrainingConfig
from diffutron.training import train
from diffutron.training.prepare import build_model, prepare_data, prepare_tokenizer

T_EPS = 1e-3


def run_config(args, steps: int, compile_mode: bool | str) -> RunConfig:
    return RunConfig(
        model=ModelConfig(preset=args.preset),
        tokenizer=TokenizerConfig(vocab_size=args.vocab),
        data=DataConfig(sources=["embedded"], block_size=args.length, val_fraction=0.02),
        training=TrainingConfig(
            max_steps=steps,
            batch_size=args.batch,
            lr=1e-3,
            warmup_steps=5,
            grad_clip=1.0,
            eval_every=0,
            save_every=0,
            eval_blocks=args.batch,
            eval_t_samples=1,
            log_every=10,
            seed=0,
            compile=compile_mode,
            precision=args.precision,
        ),
    )


class Blocks(Dataset):
    def __init__(self, rows: np.ndarray, idx: np.ndarray):
        self.rows, self.idx = rows, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": torch.from_numpy(np.asarray(self.rows[self.idx[i]], dtype=np.int64))}


class MdlmTrainer(Trainer):
    """The straightforward MDLM loss: mask at t ~ U(eps, 1), full logits, CE at masked rows, 1/t weight."""

    mask_id: int = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs["input_ids"]
        t = T_EPS + (1 - T_EPS) * torch.rand(ids.shape[0], device=ids.device)
        masked = torch.rand(ids.shape, device=ids.device) < t[:, None]
        noisy = torch.where(masked, torch.full_like(ids, self.mask_id), ids)
        logits = model(input_ids=noisy).logits
        ce = F.cross_entropy(logits[masked], ids[masked], reduction="none")
        weights = (1 / t)[:, None].expand_as(masked)[masked]
        loss = (ce * weights).sum() / ids.numel()
        return (loss, logits) if return_outputs else loss


class StepTimer(TrainerCallback):
    def __init__(self):
        self.start = self.end = None

    def on_step_begin(self, args, state, control, **kw):
        if self.start is None:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.end = time.perf_counter()


def run_baseline(args, cfg: RunConfig, tokenizer, data, out: Path, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer)
    targs = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch,
        max_steps=steps,
        learning_rate=1e-3,
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.98,
        warmup_steps=5,
        lr_scheduler_type="cosine",
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=0,
        bf16=args.precision == "bf16",
    )
    timer = StepTimer()
    trainer = MdlmTrainer(
        model=model,
        args=targs,
        train_dataset=Blocks(data.rows, data.train_idx),
        callbacks=[timer],
    )
    trainer.mask_id = tokenizer.mask_token_id
    trainer.train()
    return steps * args.batch * args.length / (timer.end - timer.start)


def run_ours(args, out: Path, prepared: Path, steps: int) -> tuple[float, dict]:
    cfg = run_config(args, steps, args.compile)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("tokenizer", "data"):  # the warm-up's tokenizer and packed blocks: no re-training
        shutil.copytree(prepared / name, out / name)
    result = train(cfg, out, progress=False)
    return result.summary["tokens_per_second"], result.summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="timed optimiser steps per run")
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two loops this many times")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", default="auto", help="training.compile for our loop: auto | true | false")
    ap.add_argument("--precision", default="no", choices=("no", "bf16"), help="both sides: fp32 (no) or bf16 autocast")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    args.compile = {"true": True, "false": False}.get(args.compile.lower(), args.compile)
    torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    work = Path(args.work or tempfile.mkdtemp(prefix="train-loop-"))

    # warm-up (untimed): tokenizer, packed blocks, first calls of both loops
    t0 = time.perf_counter()
    warm = work / "warm"
    if warm.exists():
        shutil.rmtree(warm)
    summary = train(run_config(args, 3, args.compile), warm, progress=False).summary
    cfg = run_config(args, args.steps, args.compile)
    tokenizer = prepare_tokenizer(cfg.tokenizer, cfg.model, cfg.data, warm, args.length)
    data = prepare_data(cfg, tokenizer, warm / "data", 0)
    run_baseline(args, cfg, tokenizer, data, work / "hf", 3)
    print(f"warm-up (tokenizer, blocks, first steps of both): {time.perf_counter() - t0:.0f} s")

    speeds: dict[str, list[float]] = {"trainer": [], "diffutron": []}
    for r in range(args.rounds):
        speeds["trainer"].append(run_baseline(args, cfg, tokenizer, data, work / "hf", args.steps))
        tps, summary = run_ours(args, work / f"ours-{r}", warm, args.steps)
        speeds["diffutron"].append(tps)
        print(f"round {r}: trainer {speeds['trainer'][-1]:,.0f} tok/s, diffutron {tps:,.0f} tok/s")
    peak = matmul_peak()
    model_cfg = build_model(cfg.model, tokenizer).config
    # the expected share of masked positions: t ~ U(eps, 1) with the linear schedule masks t of a row
    flops = useful_flops_per_step(
        model_cfg, args.batch, args.length, args.batch * args.length * (1 + T_EPS) / 2
    )
    params = sum(p.numel() for p in build_model(cfg.model, tokenizer).parameters())
    print(
        f"\npreset={args.preset} params={params / 1e6:.1f}M vocab={model_cfg.vocab_size} "
        f"batch={args.batch}x{args.length} steps={args.steps} rounds={args.rounds} threads={torch.get_num_threads()} "
        f"compile={args.compile} precision={args.precision}"
    )
    print(f"fp32 matmul peak (measured): {peak / 1e9:.1f} GFLOP/s")
    mean = {k: sum(v) / len(v) for k, v in speeds.items()}
    for name in ("trainer", "diffutron"):
        achieved = flops * mean[name] / (args.batch * args.length)
        print(
            f"{name:>10}: {mean[name]:8,.0f} tokens/s (rounds: {', '.join(f'{x:,.0f}' for x in speeds[name])})"
            f"   useful model FLOP/s {achieved / 1e9:6.1f} G ({achieved / peak:5.1%} of peak)"
        )
    if summary.get("compiled"):
        print(
            f"first step of our last run (torch.compile, counted in its tokens/s): {summary['first_step_seconds']:.1f} s"
        )
    print(f"ratio diffutron / trainer: {mean['diffutron'] / mean['trainer']:.2f}x")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
