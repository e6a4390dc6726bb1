"""Training-step throughput: output head at masked positions only vs the full head.

    python benchmarks/train_throughput.py [--preset tiny] [--batch 16] [--length 128] [--steps 10]

Both paths train the same model on the same batches with the same masks (same generator seed), so
their losses must agree; the masked-only path skips the [B*L x V] logits at unmasked positions.
Model FLOP/s count the useful work (encoder, attention, and the head at masked positions) and are
compared with a float32 matrix-multiply peak measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import ModernBertForMaskedLM

from diffutron.diffusion import get_schedule, mdlm_loss
from diffutron.models import MaskedLMParts, preset_config


def matmul_peak(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def useful_flops_per_step(cfg, batch: int, length: int, masked_positions: float) -> float:
    d, inter, layers, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    per_token_layer = d * 3 * d + d * d + d * 2 * inter + inter * d  # Wqkv, Wo, Wi (GeGLU: 2x), Wo
    attn = 0
    for kind in cfg.layer_types:
        ctx = length if kind == "full_attention" else min(length, cfg.local_attention)
        attn += 2 * 2 * ctx * d  # QK^T and AV per token
    encoder = batch * length * (2 * per_token_layer * layers + attn)
    head = masked_positions * 2 * (d * d + d * vocab)
    return 3 * (encoder + head)  # forward + backward (2x)


def run(parts, model, opt, batches, sparse: bool, schedule, seed: int) -> tuple[float, list[float], int]:
    gen = torch.Generator().manual_seed(seed)
    losses, masked, t0 = [], 0, time.perf_counter()
    for ids in batches:
        out = mdlm_loss(
            parts,
            ids,
            torch.ones_like(ids, dtype=torch.bool),
            schedule=schedule,
            mask_id=4,
            generator=gen,
            sparse_head=sparse,
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss))
        masked += out.n_masked
    return time.perf_counter() - t0, losses, masked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternate the two paths this many times")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = preset_config(args.preset, vocab_size=args.vocab)
    base = ModernBertForMaskedLM(cfg)
    schedule = get_schedule("linear")
    batches = [torch.randint(5, args.vocab, (args.batch, args.length)) for _ in range(args.steps)]
    warm = [batches[0]]
    results = {True: [0.0, 0, None], False: [0.0, 0, None]}
    for r in range(args.rounds):
        for sparse in (True, False):
            model = copy.deepcopy(base).train()
            parts = MaskedLMParts(model)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            run(parts, model, opt, warm, sparse, schedule, seed=123)  # warm-up, not timed
            model.load_state_dict(base.state_dict())
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            secs, losses, masked = run(parts, model, opt, batches, sparse, schedule, seed=r)
            results[sparse][0] += secs
            results[sparse][1] += masked
            if results[sparse][2] is None or r == 0:
                results[sparse][2] = losses
    tokens = args.rounds * args.steps * args.batch * args.length
    peak = matmul_peak()
    print(
        f"preset={args.preset} params={sum(p.numel() for p in base.parameters()) / 1e6:.1f}M "
        f"batch={args.batch}x{args.length} steps={args.steps} rounds={args.rounds} threads={torch.get_num_threads()}"
    )
    print(f"fp32 matmul peak (measured): {peak / 1e9:.1f} GFLOP/s")
    tps = {}
    for sparse, name in ((False, "full head"), (True, "masked-only head")):
        secs, masked, _ = results[sparse]
        tps[sparse] = tokens / secs
        flops = useful_flops_per_step(cfg, args.batch, args.length, masked / (args.rounds * args.steps))
        achieved = flops * args.rounds * args.steps / secs
        print(
            f"{name:>17}: {tps[sparse]:8.0f} tokens/s   useful model FLOP/s {achieved / 1e9:6.1f} G "
            f"({achieved / peak:5.1%} of peak)"
        )
    same = max(abs(a - b) for a, b in zip(results[True][2], results[False][2], strict=True))
    print(
        f"speed-up masked-only / full: {tps[True] / tps[False]:.2f}x   max |loss difference| over "
        f"{args.steps} steps: {same:.2e}"
    )


if __name__ == "__main__":
    main()
