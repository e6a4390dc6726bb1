"""Where a training step's time goes: torch.profiler self time of ``mdlm_loss`` + backward + clip +
the loop's AdamW, grouped by kind of operation.

    python benchmarks/train_profile.py tiny small [--vocab 16000] [--batch 16] [--length 128]

The groups (matrix multiplies, the head's cross-entropy, copies/indexing, attention, elementwise, ...)
say what a faster step could still remove: everything but the matmuls is overhead to fuse or skip.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import ModernBertForMaskedLM

from diffutron.config import TrainingConfig
from diffutron.diffusion import get_schedule, mdlm_loss
from diffutron.models import MaskedLMParts, preset_config
from diffutron.training.loop import _optimizer

GROUPS = {
    "matrix multiplies": ("aten::mm", "aten::addmm", "aten::bmm"),
    "copies, indexing, fills": (
        "aten::copy_",
        "aten::cat",
        "aten::fill_",
        "aten::zero_",
        "aten::clone",
        "aten::index",
        "aten::index_put_",
        "aten::masked_scatter_",
        "aten::embedding_dense_backward",
        "aten::index_add_",
        "aten::nonzero",
        "aten::masked_select",
    ),
    "elementwise (RoPE, residuals, gate)": (
        "aten::mul",
        "aten::add",
        "aten::add_",
        "aten::mul_",
        "aten::neg",
        "aten::sum",
        "aten::div",
        "aten::cos",
        "aten::sin",
        "aten::sub",
        "aten::where",
        "aten::rsub",
    ),
}


def group_of(name: str) -> str:
    for group, names in GROUPS.items():
        if name in names:
            return group
    if "scaled_dot_product" in name:
        return "attention (sdpa)"
    if "log_softmax" in name or "nll_loss" in name:
        return "cross-entropy of the head"
    if "adam" in name.lower():
        return "optimizer"
    if "layer_norm" in name or "gelu" in name:
        return "layer norm, GELU"
    return "other"


def profile_preset(preset: str, vocab: int, batch: int, length: int) -> None:
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config(preset, vocab_size=vocab)).train()
    parts, opt = MaskedLMParts(model), _optimizer(model, TrainingConfig())
    schedule, gen = get_schedule("linear"), torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, length))
    maskable = torch.ones_like(ids, dtype=torch.bool)

    def step() -> None:
        out = mdlm_loss(parts, ids, maskable, schedule=schedule, mask_id=4, generator=gen)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    print(f"{preset}: {(time.perf_counter() - t0) / 3:.3f} s/step without the profiler")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if not event.key.startswith(("autograd::", "Optimizer", "ProfilerStep")):
            shares[group_of(event.key)] += event.self_cpu_time_total
    total = sum(shares.values())
    for group, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {group:40s} {t / total:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets:
        profile_preset(preset, args.vocab, args.batch, args.length)


if __name__ == "__main__":
    main()
