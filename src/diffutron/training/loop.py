"""The training loop: MDLM pre-training, LoRA continual pre-training and instruction tuning on ``accelerate``.

    result = train(load_config(resolve("pretrain-tiny")), out_dir="runs/tiny")
    result = train(cfg, out_dir="runs/tiny", resume=True)       # continue after a crash

``train`` reads top to bottom as its phases: ``_prepare`` (run folder, components, optimiser,
resume), the loop of ``_step`` (one optimiser step), ``_evaluate`` (validation ELBO) and checkpoints,
then ``_finish`` (save the model, card, plot, summary). One loop for every kind of run: the data component yields fixed-length rows and a ``maskable`` mask
(every position for packed pre-training blocks; the answer and its end-token padding for SFT rows,
whose prompt is never masked). What a step does:
  1. take the next micro-batch of rows (a seeded permutation per epoch; each process its slice);
  2. ``mdlm_loss``: stratified t, masking of maskable positions, encoder, head at masked positions
     only, weighted CE, token or sequence normalisation;
  3. accumulate gradients (``accelerator.accumulate``: no all-reduce, no DeepSpeed engine step before
     the last micro-batch), clip, AdamW, warmup+cosine LR (one LR step per optimiser step).
Every ``eval_every`` steps (and before the first and after the last) the validation ELBO perplexity
is computed on a fixed slice of held-out rows with a fixed seed, so the numbers are comparable across
steps and runs; SFT runs also report it per answer token (the answer ELBO given the prompt). Every ``save_every``
steps an atomic checkpoint is written (see ``state.py``); ``resume=True`` continues from the latest and
ends bit-identical (on CPU) to an uninterrupted run, on the number of processes it was trained on.
Several processes come from ``torchrun`` or ``accelerate launch``; beyond each process's data slice,
this file only broadcasts a time budget's total and gathers a sharded model before the final save
(docs/distributed.md says what has run: DDP on CPU; FSDP and DeepSpeed are untested).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, broadcast, extract_model_from_parallel, set_seed
from tqdm.auto import tqdm

from ..config import RunConfig, to_dict
from ..diffusion import elbo_perplexity, get_schedule, mdlm_loss
from ..hardware import cpu_bf16_units
from ..io import atomic_write_json, atomic_write_text
from ..models.checkpoint import DiffusionSettings, save_checkpoint
from ..models.heads import MaskedLMParts
from ..models.lora import apply_lora, merge_lora, trainable_share
from .card import write_model_card
from .plots import plot_loss_curve, read_metrics
from .prepare import TrainData, build_model, prepare_chat_template, prepare_data, prepare_tokenizer
from .state import (
    TrainState,
    latest_checkpoint,
    load_latest_checkpoint,
    remove_leftovers,
    save_training_checkpoint,
)

log = logging.getLogger(__name__)
CALIBRATION_STEPS = 5  # steps a time-budgeted run takes before it first sizes itself


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path
    state: TrainState
    val: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def resolve_precision(name: str) -> str:
    """``training.precision`` as accelerate's ``mixed_precision``. ``auto``: bf16 autocast on a GPU with
    bf16 and on a CPU with usable bf16 units (``hardware.cpu_bf16_units``: AMX or AVX512-BF16), where it
    measured 2.2-2.3x faster than fp32 per step (tiny and small presets, docs/benchmarks.md "bf16 on
    CPUs"); fp32 (``no``) elsewhere: emulated bf16 runs ~20x slower. The choice and its reason are logged."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "no"
        why = "a CUDA device " + ("with" if chosen == "bf16" else "without") + " bf16"
    else:
        units = cpu_bf16_units()
        chosen, why = ("bf16" if units else "no"), units.why
    log.info("precision auto: %s (%s)", "bf16 autocast" if chosen == "bf16" else "fp32", why)
    return chosen


def _forget_other_precision(precision: str) -> None:
    """accelerate keeps one precision per process and refuses an Accelerator with another: a second run
    in one process (a benchmark comparing fp32 and bf16, a test of both) failed at its start. A single
    process may start afresh; a launched multi-process state stays, where all ranks chose alike."""
    shared = AcceleratorState._shared_state
    if (
        shared.get("_mixed_precision", precision) != precision
        and shared.get("distributed_type") == DistributedType.NO
    ):
        AcceleratorState._reset_state()


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
    """AdamW, fused (one kernel for all parameters, on CPU too) where torch has it: on CPU torch's
    default is a Python loop over the parameters, several passes each."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "embeddings" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), foreach=True)


def fill_deepspeed_config(ds: dict, tc) -> None:
    """Under DeepSpeed the engine, not this loop, clips and decides when to step, and it needs the
    micro-batch size (no data loader is prepared): all three come from the training config.
    A DeepSpeed or launch config that sets one of them to another value is refused; ``auto`` (or
    leaving it out) lets the training config decide."""
    wanted = {
        "train_micro_batch_size_per_gpu": ("batch_size", tc.batch_size),
        "gradient_accumulation_steps": ("grad_accum", tc.grad_accum),
        "gradient_clipping": ("grad_clip", float(tc.grad_clip)),
    }
    for key, (name, value) in wanted.items():
        given = ds.get(key, "auto")
        if given != "auto" and given != value:
            raise ValueError(
                f"the DeepSpeed config sets {key}: {given} but training.{name} is {value}: "
                f"set it to auto there (training.{name} decides) or change training.{name}"
            )
        ds[key] = value


def _should_compile(setting: bool | str, device: torch.device, processes: int = 1) -> bool:
    """``training.compile``: true, false, or auto. Auto is off on CPU: in this project's measurements
    (docs/benchmarks.md, Training) inductor's fused kernels win a few per cent per step on CPU, which
    its compile time (minutes cold on 2 cores) does not pay back in runs of minutes. On one CUDA
    device the fusion saves far more memory traffic and runs are long, so auto compiles there; not
    under DDP/FSDP/DeepSpeed, where compiling a wrapped encoder is untested here (set true to try)."""
    if setting == "auto":
        return device.type == "cuda" and processes == 1
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"training.compile must be true, false or auto, got {setting!r}")


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


@dataclass
class _Run:
    """Everything a run's phases share, built once by ``_prepare``."""

    cfg: RunConfig
    out_dir: Path
    accelerator: Accelerator
    tokenizer: object
    data: TrainData
    parts: torch.nn.Module  # MaskedLMParts, wrapped by accelerate
    schedule: object
    settings: DiffusionSettings
    batches: BlockBatches
    state: TrainState
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    val_blocks: torch.Tensor
    val_maskable: torch.Tensor
    val_answer_tokens: int
    parameters: tuple[int, int, float]  # trainable, total, share
    resumed: bool
    saved_step: int | None = None  # the step of the checkpoint on disk that matches the state in memory
    compiled: bool = False  # the encoder runs through torch.compile

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def ckpt_root(self) -> Path:
        return self.out_dir / "checkpoints"


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
    run = _prepare(cfg, Path(out_dir), resume, max_steps)
    tc, state = cfg.training, run.state
    run.parts.train()
    bar = tqdm(
        total=state.total_steps,
        initial=state.step,
        desc="train",
        disable=not (progress and run.main),
        dynamic_ncols=True,
    )
    # the "before" numbers: measured now, or read back from the log of the run being resumed
    first_eval = _evaluate(run, state.step) if state.step == 0 else _logged_eval(run.metrics_path, step=0)
    t_start, tokens_at_start, start_step = time.perf_counter(), state.tokens, state.step
    budget = _TimeBudget(tc.max_minutes, tc.max_steps, run.accelerator) if tc.max_minutes else None
    elapsed_before = state.elapsed_s
    first_step_s = None
    while state.step < state.total_steps:
        loss, step_tokens = _step(run)
        state.step += 1
        if first_step_s is None:
            first_step_s = time.perf_counter() - t_start  # with compile: mostly compiling
        state.tokens += step_tokens * run.accelerator.num_processes
        elapsed = time.perf_counter() - t_start
        state.elapsed_s = elapsed_before + elapsed
        tok_s = (state.tokens - tokens_at_start) / max(elapsed, 1e-9)
        # time budget: size the run from the recent pace, so the cosine ends when the budget does
        if budget is not None and budget.update(state, start_step):
            bar.total = state.total_steps
        if state.step % tc.log_every == 0 or state.step == state.total_steps or state.step == start_step + 1:
            shown = float(loss)  # the one host synchronisation of a step, on logging steps only
            if run.main and (state.step % tc.log_every == 0 or state.step == state.total_steps):
                lr = run.scheduler.get_last_lr()[0]
                row = {"kind": "train", "step": state.step, "loss": shown, "lr": lr, "tokens": state.tokens}
                _append_jsonl(run.metrics_path, {**row, "tokens_per_second": tok_s})
        bar.set_postfix(loss=f"{shown:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
        bar.update(1)
        if tc.eval_every and state.step % tc.eval_every == 0 and state.step < state.total_steps:
            row = _evaluate(run, state.step)
            bar.write(f"step {state.step}: val ELBO ppl {row['val_elbo_ppl']:.2f}")
        if tc.save_every and state.step % tc.save_every == 0 and state.step < state.total_steps:
            save_training_checkpoint(run.accelerator, run.ckpt_root, state, run.generator, tc.keep_last)
            run.saved_step = state.step
    bar.close()
    speed = (state.tokens - tokens_at_start) / max(time.perf_counter() - t_start, 1e-9)
    return _finish(run, first_eval, speed, card, first_step_s)


def _prepare(cfg: RunConfig, out_dir: Path, resume: bool, max_steps: int | None) -> _Run:
    """Phase 1: check the run folder, build tokenizer, data, model (+ LoRA), batches, optimiser, and
    restore a checkpoint when resuming."""
    tc = cfg.training
    if max_steps is not None:
        tc.max_steps = max_steps
    precision = resolve_precision(tc.precision)
    _forget_other_precision(precision)
    accelerator = Accelerator(
        mixed_precision=precision,
        cpu=not torch.cuda.is_available(),
        # accelerate's own accumulation: DDP skips the all-reduce and DeepSpeed its engine step on all
        # but the last micro-batch of a step (without it DeepSpeed stepped on every micro-batch)
        gradient_accumulation_steps=tc.grad_accum,
        # one LR step per optimiser step: accelerate's default steps a prepared scheduler once per
        # process, so on N processes the warmup and cosine ran N times too fast
        step_scheduler_with_optimizer=False,
    )
    if (
        os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        and accelerator.distributed_type != DistributedType.FSDP
    ):
        # accelerate turns an FSDP launch config on CPU into DDP without a word (its FSDP branch
        # exists only for GPU-type devices): a run must not claim sharding it does not do
        raise ValueError(
            f"the launch config asks for FSDP, but accelerate set up {accelerator.distributed_type} on "
            f"{accelerator.device.type}: accelerate runs FSDP only on GPU-type devices. For several CPU "
            "processes use launch/ddp-cpu-2proc.yaml or torchrun (docs/distributed.md)"
        )
    if accelerator.state.deepspeed_plugin is not None:
        fill_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, tc)
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
    if main:
        for name in remove_leftovers(ckpt_root):
            print(f"removed {ckpt_root / name}: an interrupted checkpoint write, never a complete checkpoint")
    set_seed(tc.seed)

    # components: tokenizer (+ chat template for SFT), data rows, model (+ LoRA), schedule
    with accelerator.main_process_first():
        tokenizer = prepare_tokenizer(cfg.tokenizer, cfg.model, cfg.data, out_dir, cfg.data.block_size)
        if cfg.sft is not None:
            prepare_chat_template(cfg.sft, tokenizer)
        data: TrainData = prepare_data(cfg, tokenizer, out_dir / "data", tc.seed)
    model = _network(cfg, tokenizer)
    compiled = _should_compile(tc.compile, accelerator.device, accelerator.num_processes)
    parameters = trainable_share(model)
    schedule = get_schedule(cfg.diffusion.schedule, **cfg.diffusion.schedule_args)
    settings = DiffusionSettings(
        schedule=schedule.to_dict(),
        mask_token_id=tokenizer.mask_token_id,
        normalization=cfg.diffusion.normalization,
        t_eps=cfg.diffusion.t_eps,
        context_length=int(data.length),
        mode=cfg.diffusion.mode,
        block_size=cfg.diffusion.block_size,
    )

    # batches; `epochs` fixes the step total from the epoch size
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

    # optimisation: AdamW + warmup/cosine; the LR lambda reads state.total_steps (a time budget moves it)
    state = TrainState(total_steps=tc.max_steps, processes=accelerator.num_processes)
    optimizer = _optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(state, tc.warmup_steps, tc.min_lr_ratio, tc.warmup_ratio)
    )
    # The encoder/head module is what accelerate wraps (DDP/FSDP): the loss runs through its forward,
    # so gradient sync and parameter gathering see the whole computation.
    parts = MaskedLMParts(model)
    if compiled:
        # in place (nn.Module.compile): parameter names, checkpoints and the saved model stay as they are
        parts.compile_encoder()
    parts, optimizer, scheduler = accelerator.prepare(parts, optimizer, scheduler)
    generator = torch.Generator().manual_seed(tc.seed * 1000 + accelerator.process_index)

    saved_step = None  # the step of the checkpoint on disk that matches the state in memory
    if resume_from is not None:
        resume_from, restored = load_latest_checkpoint(accelerator, ckpt_root, generator)
        state.__dict__.update(restored.__dict__)
        state.processes = accelerator.num_processes  # checked equal; older checkpoints did not record it
        saved_step = state.step
        if max_steps is not None:
            state.total_steps = max_steps  # --max-steps is the run's total; the cosine follows it
        if main:
            print(f"resumed from {resume_from} at step {state.step}/{state.total_steps}")
    if main:
        _truncate_metrics(out_dir / "metrics.jsonl", state.step, final=state.step >= state.total_steps)
        atomic_write_json(out_dir / "run_config.json", to_dict(cfg))
        if data.report_text:
            atomic_write_text(out_dir / "data_report.txt", data.report_text + "\n")
    return _Run(
        cfg=cfg,
        out_dir=out_dir,
        accelerator=accelerator,
        tokenizer=tokenizer,
        data=data,
        parts=parts,
        schedule=schedule,
        settings=settings,
        batches=batches,
        state=state,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        val_blocks=torch.from_numpy(np.asarray(data.rows[val_rows], dtype=np.int64)),
        val_maskable=torch.from_numpy(data.maskable(val_rows)),
        val_answer_tokens=int(data.answer_lengths[val_rows].sum()) if data.answer_lengths is not None else 0,
        parameters=parameters,
        resumed=resume_from is not None,
        saved_step=saved_step,
        compiled=compiled,
    )


def _network(cfg: RunConfig, tokenizer) -> torch.nn.Module:
    """The model as built for training: the preset or pretrained weights, checkpointing, LoRA."""
    model = build_model(cfg.model, tokenizer)
    if cfg.training.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    return model


def gather_full_model(
    parts: torch.nn.Module, rebuild: Callable[[], torch.nn.Module], main: bool
) -> torch.nn.Module | None:
    """The trained network (``MaskedLMParts.model``), whole, on the main process; None on the others.
    Every process must call it. Unsharded (one process, DDP) it is the trained module itself. Sharded
    (FSDP1 flat parameters, FSDP2 DTensors), its full state dict is gathered, a collective: the main
    process alone waited forever on the others, and a state dict taken on each process held the
    root unit's weights as shards. The full weights are loaded into ``rebuild()``, an unsharded
    ``MaskedLMParts`` of the same network, where LoRA can be merged and the model saved."""
    # imported here: only the final save needs them
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    sharded = isinstance(parts, FullyShardedDataParallel) or any(
        isinstance(p, DTensor) for p in parts.parameters()
    )
    if not sharded:
        return extract_model_from_parallel(parts).model if main else None
    full = get_model_state_dict(parts, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not main:
        return None
    whole = rebuild()
    whole.load_state_dict(full)
    return whole.model


def _step(run: _Run) -> tuple[torch.Tensor, int]:
    """Phase 2, one optimiser step: ``grad_accum`` micro-batches, clip, AdamW, LR. Returns the loss
    (a tensor on the device: reading it waits for the device, so the loop does that only when it
    logs) and the maskable tokens of this process (counted on the host, before the copy)."""
    tc, accelerator, parts = run.cfg.training, run.accelerator, run.parts
    step_tokens, loss_sum = 0, torch.zeros((), device=accelerator.device)
    for _ in range(tc.grad_accum):
        ids, maskable = run.batches.get(run.state)
        step_tokens += int(maskable.sum())
        ids, maskable = ids.to(accelerator.device), maskable.to(accelerator.device)
        with accelerator.accumulate(parts), accelerator.autocast():
            out = mdlm_loss(
                parts,
                ids,
                maskable,
                schedule=run.schedule,
                mask_id=run.settings.mask_token_id,
                normalization=run.cfg.diffusion.normalization,
                generator=run.generator,
                stratified=run.cfg.diffusion.stratified_t,
                eps=run.cfg.diffusion.t_eps,
                estimator=run.cfg.diffusion.estimator,
                max_logit_elements=tc.max_logit_elements,
                block_size=run.settings.diffusion_block,
                clip=run.cfg.diffusion.t_clip,
                block_noise=run.cfg.diffusion.block_noise,
                copies=run.cfg.diffusion.noised_copies,
            )
            accelerator.backward(out.loss)  # divided by grad_accum there (by the engine under DeepSpeed)
        loss_sum += out.loss.detach() / tc.grad_accum
    if tc.grad_clip > 0:
        accelerator.clip_grad_norm_(parts.parameters(), tc.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum, step_tokens


def _evaluate(run: _Run, step: int) -> dict:
    """Phase 3: validation ELBO perplexity on the fixed held-out rows (fixed seed), logged."""
    tc = run.cfg.training
    res = elbo_perplexity(
        run.parts,
        run.val_blocks,
        schedule=run.schedule,
        mask_id=run.settings.mask_token_id,
        maskable=run.val_maskable,
        t_samples=tc.eval_t_samples,
        batch_size=tc.batch_size,
        seed=tc.seed + 12345,
        block_size=run.settings.diffusion_block,
    )
    row = {
        "kind": "eval",
        "step": step,
        "val_elbo_ppl": res.perplexity,
        "val_nelbo": res.nelbo_per_token,
        "val_stderr": res.stderr_nelbo,
        "val_tokens": res.tokens,
    }
    if run.val_answer_tokens:
        # the same NELBO (answer + end padding, given the prompt) per answer token: a bound on the
        # answer's per-token perplexity that padding does not dilute
        per_answer = res.nelbo_per_token * res.tokens / run.val_answer_tokens
        row["val_answer_nelbo"] = per_answer
        row["val_answer_elbo_ppl"] = math.exp(min(per_answer, 700.0))
    if run.main:
        _append_jsonl(run.metrics_path, row)
    return row


def _finish(
    run: _Run,
    first_eval: dict | None,
    tokens_per_second: float,
    card: dict | None,
    first_step_s: float | None,
) -> TrainResult:
    """Phase 4, save: final checkpoint, validation, model folder (LoRA merged) + card, plot, summary."""
    cfg, tc, state, data = run.cfg, run.cfg.training, run.state, run.data
    if run.saved_step != state.step:  # resumed from the run's last checkpoint: it is on disk already
        save_training_checkpoint(run.accelerator, run.ckpt_root, state, run.generator, tc.keep_last)
    final_eval = _evaluate(run, state.step)
    model_dir = run.out_dir / "model"
    summary: dict = {}
    net = gather_full_model(run.parts, lambda: MaskedLMParts(_network(cfg, run.tokenizer)), run.main)
    if run.main:
        if cfg.lora.enabled and cfg.lora.merge:
            net = merge_lora(net)
        elif cfg.lora.enabled:
            net.save_pretrained(run.out_dir / "adapter")
            net = merge_lora(net)
        save_checkpoint(model_dir, net, run.tokenizer, run.settings)
        plot_loss_curve(run.metrics_path, run.out_dir / "loss.png", title=run.out_dir.name)
        n_trainable, n_total, share = run.parameters
        summary = {
            "kind": data.kind,
            "val_elbo_ppl": final_eval["val_elbo_ppl"],
            "val_elbo_ppl_start": first_eval["val_elbo_ppl"] if first_eval else None,
            "val_nelbo_per_token": final_eval["val_nelbo"],
            "val_stderr": final_eval["val_stderr"],
            "steps": state.step,
            "train_tokens": state.tokens,
            "tokens_per_second": tokens_per_second,
            "compiled": run.compiled,
            "first_step_seconds": first_step_s,
            "train_seconds": state.elapsed_s,
            "parameters": n_total,
            "trainable_parameters": n_trainable,
            "trainable_share": share,
            "train_blocks": int(len(data.train_idx)),
            "val_blocks": int(len(data.val_idx)),
            "block_size": data.length,
            "vocab_size": len(run.tokenizer),
            "schedule": run.schedule.to_dict(),
            "data_problems": data.report if data.kind == "pretrain" else None,
        }
        if data.kind == "sft":
            summary.update(
                val_answer_elbo_ppl=final_eval["val_answer_elbo_ppl"],
                val_answer_elbo_ppl_start=first_eval["val_answer_elbo_ppl"] if first_eval else None,
                epochs=state.step * tc.grad_accum / max(run.batches.batches_per_epoch, 1),
                sft_data=data.report,
            )
        write_model_card(model_dir, cfg, summary, card)
        atomic_write_json(run.out_dir / "summary.json", summary)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return TrainResult(out_dir=run.out_dir, model_dir=model_dir, state=state, val=final_eval, summary=summary)


class _TimeBudget:
    """Sizes a run to ``max_minutes`` of training. The first steps are the slowest (warm-up of the
    allocator, caches, the first evaluation's pages), so the pace is re-measured as training runs:
    after ``CALIBRATION_STEPS`` steps, and from then on every step from the steps since then only.
    The total is the steps the remaining time allows at that pace (at most the configured
    ``max_steps``); when the time is spent, the run stops. Evaluations inside the loop count as
    training time: the budget given is the budget spent. On several processes the main process's
    total is the total of all: each process's clock differs, and a process that stopped one step
    before the others would leave them waiting in a collective (and the LR would differ by process)."""

    def __init__(self, minutes: float, max_steps: int, accelerator: Accelerator | None = None):
        self.seconds, self.cap, self.accelerator = minutes * 60, max_steps, accelerator
        self.mark: tuple[int, float] | None = None  # (step, elapsed) where the pace is measured from

    def update(self, state: TrainState, start_step: int) -> bool:
        """Re-size ``state.total_steps``; True when it changed."""
        if state.step - start_step < CALIBRATION_STEPS:
            return False
        if self.mark is None or state.step == self.mark[0]:
            self.mark = self.mark or (state.step, state.elapsed_s)
            pace = state.elapsed_s / max(state.step, 1)  # the first estimate: the slow steps only
        else:
            pace = (state.elapsed_s - self.mark[1]) / (state.step - self.mark[0])
        left = self.seconds - state.elapsed_s
        total = state.step + max(0, int(left / max(pace, 1e-9)))
        total = max(state.step, min(self.cap, total))
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            agreed = broadcast(torch.tensor([total], device=self.accelerator.device), from_process=0)
            total = int(agreed.item())
        changed, state.total_steps = total != state.total_steps, total
        return changed


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """transformers' own activation checkpointing: each layer's activations are recomputed in backward.
    Non-reentrant, so it also works when the inputs need no gradient (frozen embeddings under LoRA)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 (the old name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _append_jsonl(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _logged_eval(path: Path, step: int) -> dict | None:
    rows = [r for r in read_metrics(path) if r.get("kind") == "eval" and r.get("step") == step]
    return rows[0] if rows else None


def _truncate_metrics(path: Path, step: int, final: bool = False) -> None:
    """On resume, drop rows logged after the checkpoint at ``step``: they will be logged again. Rows
    at ``step`` itself were logged before the checkpoint was written, except the final validation
    (``final``: the checkpoint is the run's last), which follows it. A line cut short by a crash
    is dropped too."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            continue  # an append cut short by a crash (only ever the last line)
        s = row.get("step", 0)
        if s < step or (s == step and not (final and row.get("kind") == "eval" and step > 0)):
            keep.append(ln)
    if step == 0:
        keep = []
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _with_added_defaults(saved: dict | None, section: object) -> dict | None:
    """A saved config section with the options added to its dataclass since it was written, at their
    defaults: a run from before an option existed behaved as its default, so it resumes under a
    config that keeps the default and is refused under one that does not."""
    if not isinstance(saved, dict) or not is_dataclass(section):
        return saved
    defaults = to_dict(type(section)())
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


def check_same_run(out_dir: Path, cfg: RunConfig, resuming: bool) -> None:
    """Refuse to continue a run folder with a config whose model, data or method differ."""
    saved = out_dir / "run_config.json"
    if not (resuming and saved.exists()):
        return
    old = json.loads(saved.read_text(encoding="utf-8"))
    new = to_dict(cfg)
    for section in ("model", "tokenizer", "data", "sft", "diffusion", "lora"):
        if _with_added_defaults(old.get(section), getattr(cfg, section, None)) != new.get(section):
            raise ValueError(
                f"cannot resume {out_dir}: its `{section}` settings differ from this config "
                f"({old.get(section)} vs {new.get(section)}): the checkpoint belongs to another model or data"
            )
