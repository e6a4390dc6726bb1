"""The training loop: MDLM pre-training, LoRA continual pre-training and instruction tuning on ``accelerate``.

    result = train(load_config(resolve("pretrain-tiny")), out_dir="runs/tiny")
    result = train(cfg, out_dir="runs/tiny", resume=True)       # continue after a crash

One loop for every kind of run: the data component yields fixed-length rows and a ``maskable`` mask
(every position for packed pre-training blocks; the answer and its end-token padding for SFT rows,
whose prompt is never masked). What a step does:
  1. take the next micro-batch of rows (a seeded permutation per epoch; each process its slice);
  2. ``mdlm_loss``: stratified t, masking of maskable positions, encoder, head at masked positions
     only, weighted CE, token or sequence normalisation;
  3. accumulate gradients (``accelerator.no_sync`` between micro-batches), clip, AdamW, warmup+cosine LR.
Every ``eval_every`` steps (and before the first and after the last) the validation ELBO perplexity
is computed on a fixed slice of held-out rows with a fixed seed, so the numbers are comparable across
steps and runs; SFT runs also report it per answer token (the answer ELBO given the prompt). Every ``save_every``
steps an atomic checkpoint is written (see ``state.py``); ``resume=True`` continues from the latest and
ends bit-identical (on CPU) to an uninterrupted run. Distributed training (DDP/FSDP/DeepSpeed) comes
from ``accelerate launch``; this file has no distributed code of its own beyond the data slice.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..config import RunConfig, to_dict
from ..diffusion import elbo_perplexity, get_schedule, mdlm_loss
from ..io import atomic_write_json, atomic_write_text
from ..models.checkpoint import DiffusionSettings, save_checkpoint
from ..models.heads import MaskedLMParts
from ..models.lora import LoraSettings, apply_lora, merge_lora, trainable_share
from .card import write_model_card
from .plots import plot_loss_curve, read_metrics
from .prepare import TrainData, build_model, prepare_chat_template, prepare_data, prepare_tokenizer
from .state import TrainState, latest_checkpoint, load_training_checkpoint, save_training_checkpoint

log = logging.getLogger(__name__)
CALIBRATION_STEPS = 5  # steps timed before a time-budgeted run fixes its length


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path
    state: TrainState
    val: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def _precision(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"  # CPUs without native bf16 run autocast ~40x slower: fp32 here


def _lr_lambda(state: TrainState, warmup_steps: int, min_ratio: float, warmup_ratio: float | None = None):
    def fn(step: int) -> float:
        total = max(state.total_steps, 1)
        # a ratio follows the total, which a time budget may fix only after a few steps
        warmup = round(warmup_ratio * total) if warmup_ratio is not None else warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def _optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "embeddings" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


class BlockBatches:
    """Deterministic micro-batches of (ids, maskable): epoch e uses permutation(seed + e) of the training
    rows; a global micro-batch is ``batch_size * num_processes`` rows, each process takes its own slice.
    The position (epoch, batch_in_epoch) is all that resume needs. With ``prompt_lengths`` (SFT rows)
    only positions at or after a row's prompt length are maskable; without, every position is."""

    def __init__(
        self,
        blocks: np.ndarray,
        indices: np.ndarray,
        batch_size: int,
        seed: int,
        rank: int,
        world: int,
        prompt_lengths: np.ndarray | None = None,
    ):
        self.blocks, self.indices, self.seed = blocks, indices, seed
        self.prompt_lengths = prompt_lengths
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.per_global = batch_size * world
        if len(indices) < self.per_global:
            raise ValueError(
                f"only {len(indices)} training blocks for a global batch of {self.per_global}: "
                "add data or lower training.batch_size"
            )
        self._perm_epoch, self._perm = -1, None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.indices) // self.per_global

    def get(self, state: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        if state.batch_in_epoch >= self.batches_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if self._perm_epoch != state.epoch:
            self._perm = np.random.default_rng(self.seed + state.epoch).permutation(self.indices)
            self._perm_epoch = state.epoch
        start = state.batch_in_epoch * self.per_global + self.rank * self.batch_size
        rows = np.sort(self._perm[start : start + self.batch_size])  # sorted: faster memmap reads
        state.batch_in_epoch += 1
        ids = torch.from_numpy(np.asarray(self.blocks[rows], dtype=np.int64))
        if self.prompt_lengths is None:
            return ids, torch.ones_like(ids, dtype=torch.bool)
        maskable = (
            torch.arange(ids.shape[1])[None, :]
            >= torch.from_numpy(np.asarray(self.prompt_lengths[rows], dtype=np.int64))[:, None]
        )
        return ids, maskable


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    card: dict | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (checkpoints/, metrics.jsonl, loss.png, summary.json, model/ with
    a model card). ``max_steps`` overrides the config's total (and ``epochs``); ``card`` adds lines
    to the model card (a recipe's name and stage, the base model)."""
    out_dir = Path(out_dir)
    tc = cfg.training
    if max_steps is not None:
        tc.max_steps = max_steps
    accelerator = Accelerator(mixed_precision=_precision(tc.precision), cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    ckpt_root = out_dir / "checkpoints"
    resume_from = latest_checkpoint(ckpt_root) if resume else None
    if resume and resume_from is None and main:
        log.warning("--resume: no checkpoint in %s, starting from scratch", ckpt_root)
    if not resume and latest_checkpoint(ckpt_root) is not None:
        raise FileExistsError(
            f"{out_dir} already holds a run with checkpoints: pass --resume to continue it or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    check_same_run(out_dir, cfg, resume_from is not None)
    set_seed(tc.seed)

    # 1. components: tokenizer (+ chat template for SFT), data rows, model (+ LoRA), schedule
    with accelerator.main_process_first():
        tokenizer = prepare_tokenizer(cfg.tokenizer, cfg.model, cfg.data, out_dir, cfg.data.block_size)
        if cfg.sft is not None:
            prepare_chat_template(cfg.sft, tokenizer)
        data: TrainData = prepare_data(cfg, tokenizer, out_dir / "data", tc.seed)
    model = build_model(cfg.model, tokenizer)
    if cfg.lora.enabled:
        model = apply_lora(
            model, LoraSettings(cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules)
        )
    n_trainable, n_total, share = trainable_share(model)
    schedule = get_schedule(cfg.diffusion.schedule, **cfg.diffusion.schedule_args)
    mask_id = tokenizer.mask_token_id
    settings = DiffusionSettings(
        schedule=schedule.to_dict(),
        mask_token_id=mask_id,
        normalization=cfg.diffusion.normalization,
        t_eps=cfg.diffusion.t_eps,
    )

    # 2. batches; `epochs` fixes the step total from the epoch size
    batches = BlockBatches(
        data.rows,
        data.train_idx,
        tc.batch_size,
        tc.seed,
        accelerator.process_index,
        accelerator.num_processes,
        prompt_lengths=data.prompt_lengths,
    )
    if tc.epochs is not None and max_steps is None:
        tc.max_steps = math.ceil(tc.epochs * batches.batches_per_epoch / tc.grad_accum)
    val_rows = np.sort(data.val_idx[: tc.eval_blocks])
    val_blocks = torch.from_numpy(np.asarray(data.rows[val_rows], dtype=np.int64))
    val_maskable = torch.from_numpy(data.maskable(val_rows))
    val_answer_tokens = int(data.answer_lengths[val_rows].sum()) if data.answer_lengths is not None else 0

    # 3. optimisation: AdamW + warmup/cosine; the LR lambda reads state.total_steps (fixed at calibration)
    state = TrainState(total_steps=tc.max_steps)
    optimizer = _optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(state, tc.warmup_steps, tc.min_lr_ratio, tc.warmup_ratio)
    )
    # The encoder/head module is what accelerate wraps (DDP/FSDP): the loss runs through its forward,
    # so gradient sync and parameter gathering see the whole computation.
    parts, optimizer, scheduler = accelerator.prepare(MaskedLMParts(model), optimizer, scheduler)
    generator = torch.Generator().manual_seed(tc.seed * 1000 + accelerator.process_index)

    if resume_from is not None:
        restored = load_training_checkpoint(accelerator, resume_from, generator)
        state.__dict__.update(restored.__dict__)
        if max_steps is not None:
            state.total_steps = max_steps  # --max-steps is the run's total; the cosine follows it
        if main:
            print(f"resumed from {resume_from} at step {state.step}/{state.total_steps}")
    metrics_path = out_dir / "metrics.jsonl"
    if main:
        _truncate_metrics(metrics_path, state.step)
        atomic_write_json(out_dir / "run_config.json", to_dict(cfg))
        if data.report_text:
            atomic_write_text(out_dir / "data_report.txt", data.report_text + "\n")

    def evaluate(step: int) -> dict:
        res = elbo_perplexity(
            parts,
            val_blocks,
            schedule=schedule,
            mask_id=mask_id,
            maskable=val_maskable,
            t_samples=tc.eval_t_samples,
            batch_size=tc.batch_size,
            seed=tc.seed + 12345,
        )
        row = {
            "kind": "eval",
            "step": step,
            "val_elbo_ppl": res.perplexity,
            "val_nelbo": res.nelbo_per_token,
            "val_stderr": res.stderr_nelbo,
            "val_tokens": res.tokens,
        }
        if val_answer_tokens:
            # the same NELBO (answer + end padding, given the prompt) per answer token: a bound on the
            # answer's per-token perplexity that padding does not dilute
            per_answer = res.nelbo_per_token * res.tokens / val_answer_tokens
            row["val_answer_nelbo"] = per_answer
            row["val_answer_elbo_ppl"] = math.exp(min(per_answer, 700.0))
        if main:
            _append_jsonl(metrics_path, row)
        return row

    # 4. the loop
    parts.train()
    bar = tqdm(
        total=state.total_steps,
        initial=state.step,
        desc="train",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    # the "before" numbers: measured now, or read back from the log of the run being resumed
    first_eval = evaluate(state.step) if state.step == 0 else _logged_eval(metrics_path, step=0)
    t_start, tokens_at_start, start_step = time.perf_counter(), state.tokens, state.step
    calibrated = resume_from is not None  # a resumed run keeps the total it fixed before
    elapsed_before = state.elapsed_s
    while state.step < state.total_steps:
        step_tokens, loss_sum = 0, 0.0
        for micro in range(tc.grad_accum):
            ids, maskable = batches.get(state)
            ids, maskable = ids.to(accelerator.device), maskable.to(accelerator.device)
            sync = micro == tc.grad_accum - 1
            ctx = accelerator.no_sync(parts) if not sync else _nullcontext()
            with ctx, accelerator.autocast():
                out = mdlm_loss(
                    parts,
                    ids,
                    maskable,
                    schedule=schedule,
                    mask_id=mask_id,
                    normalization=cfg.diffusion.normalization,
                    generator=generator,
                    antithetic=cfg.diffusion.antithetic,
                    eps=cfg.diffusion.t_eps,
                )
                accelerator.backward(out.loss / tc.grad_accum)
            loss_sum += float(out.loss.detach()) / tc.grad_accum
            step_tokens += out.n_maskable
        if tc.grad_clip > 0:
            accelerator.clip_grad_norm_(parts.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens += step_tokens * accelerator.num_processes
        elapsed = time.perf_counter() - t_start
        state.elapsed_s = elapsed_before + elapsed
        tok_s = (state.tokens - tokens_at_start) / max(elapsed, 1e-9)

        # time budget: after a few steps, fix the total so the cosine ends when the budget does
        if tc.max_minutes and not calibrated and state.step - start_step >= CALIBRATION_STEPS:
            calibrated = True
            per_step = elapsed / (state.step - start_step)
            budget_steps = state.step + int((tc.max_minutes * 60 - state.elapsed_s) / per_step)
            state.total_steps = max(state.step + 1, min(state.total_steps, budget_steps))
            bar.total = state.total_steps
        if main and (state.step % tc.log_every == 0 or state.step == state.total_steps):
            _append_jsonl(
                metrics_path,
                {
                    "kind": "train",
                    "step": state.step,
                    "loss": loss_sum,
                    "lr": scheduler.get_last_lr()[0],
                    "tokens": state.tokens,
                    "tokens_per_second": tok_s,
                },
            )
        bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
        bar.update(1)
        if tc.eval_every and state.step % tc.eval_every == 0 and state.step < state.total_steps:
            row = evaluate(state.step)
            bar.write(f"step {state.step}: val ELBO ppl {row['val_elbo_ppl']:.2f}")
        if tc.save_every and state.step % tc.save_every == 0 and state.step < state.total_steps:
            save_training_checkpoint(accelerator, ckpt_root, state, generator, tc.keep_last)
    bar.close()

    # 5. the end: final checkpoint, validation, model folder (LoRA merged) + card, plot, summary
    save_training_checkpoint(accelerator, ckpt_root, state, generator, tc.keep_last)
    final_eval = evaluate(state.step)
    model_dir = out_dir / "model"
    summary: dict = {}
    if main:
        net = accelerator.unwrap_model(parts).model
        if cfg.lora.enabled and cfg.lora.merge:
            net = merge_lora(net)
        elif cfg.lora.enabled:
            net.save_pretrained(out_dir / "adapter")
            net = merge_lora(net)
        save_checkpoint(model_dir, net, tokenizer, settings)
        plot_loss_curve(metrics_path, out_dir / "loss.png", title=out_dir.name)
        elapsed = time.perf_counter() - t_start
        summary = {
            "kind": data.kind,
            "val_elbo_ppl": final_eval["val_elbo_ppl"],
            "val_elbo_ppl_start": first_eval["val_elbo_ppl"] if first_eval else None,
            "val_nelbo_per_token": final_eval["val_nelbo"],
            "val_stderr": final_eval["val_stderr"],
            "steps": state.step,
            "train_tokens": state.tokens,
            "tokens_per_second": (state.tokens - tokens_at_start) / max(elapsed, 1e-9),
            "train_seconds": state.elapsed_s,
            "parameters": n_total,
            "trainable_parameters": n_trainable,
            "trainable_share": share,
            "train_blocks": int(len(data.train_idx)),
            "val_blocks": int(len(data.val_idx)),
            "block_size": data.length,
            "vocab_size": len(tokenizer),
            "schedule": schedule.to_dict(),
            "data_problems": data.report if data.kind == "pretrain" else None,
        }
        if data.kind == "sft":
            summary.update(
                val_answer_elbo_ppl=final_eval["val_answer_elbo_ppl"],
                val_answer_elbo_ppl_start=first_eval["val_answer_elbo_ppl"] if first_eval else None,
                epochs=state.step * tc.grad_accum / max(batches.batches_per_epoch, 1),
                sft_data=data.report,
            )
        write_model_card(model_dir, cfg, summary, card)
        atomic_write_json(out_dir / "summary.json", summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(out_dir=out_dir, model_dir=model_dir, state=state, val=final_eval, summary=summary)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _append_jsonl(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _logged_eval(path: Path, step: int) -> dict | None:
    rows = [r for r in read_metrics(path) if r.get("kind") == "eval" and r.get("step") == step]
    return rows[0] if rows else None


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop rows logged after the checkpoint: they will be logged again."""
    if not path.exists():
        return
    keep = [
        ln
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.strip() and json.loads(ln).get("step", 0) <= step
    ]
    if step == 0:
        keep = []
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def check_same_run(out_dir: Path, cfg: RunConfig, resuming: bool) -> None:
    """Refuse to continue a run folder with a config whose model, data or method differ."""
    saved = out_dir / "run_config.json"
    if not (resuming and saved.exists()):
        return
    old = json.loads(saved.read_text(encoding="utf-8"))
    new = to_dict(cfg)
    for section in ("model", "tokenizer", "data", "sft", "diffusion", "lora"):
        if old.get(section) != new.get(section):
            raise ValueError(
                f"cannot resume {out_dir}: its `{section}` settings differ from this config "
                f"({old.get(section)} vs {new.get(section)}): the checkpoint belongs to another model or data"
            )
