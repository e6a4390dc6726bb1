"""The training step of block diffusion against the MDLM's, per token, in the same process (issue 23).

    python benchmarks/block_step_cost.py                       # tiny quickstart model, batch 8 x 128
    python benchmarks/block_step_cost.py --blocks 4 16 --steps 6 --batch 8
    python benchmarks/block_step_cost.py --generate runs/quickstart-block/model   # sampling: cache none vs prefix
    python benchmarks/block_step_cost.py --blocks 4 --copies 2 --batch 16   # + k noised copies per clean copy

One loss + backward of ``diffusion.loss.mdlm_loss`` on the quickstart's ``tiny`` ModernBERT (8k
vocabulary, sliding window +-4), random token rows, the MDLM and each block size interleaved step by step
(so machine load hits all alike), after one warm-up step each. Reports the median *process CPU time*
and wall time per step and per 1k tokens, and the ratio to the MDLM: on a shared machine CPU time is
the steadier number. Block mode runs 2L tokens through the encoder (the [x_t ; x0] pass) with a 4D
mask, so about 2x is expected; the output head runs on the same masked rows in both.

``--copies K``: for each block size also ``diffusion.noised_copies`` K on ``batch / K`` rows, i.e. the
same number of loss samples per step (K noised copies of each of batch / K rows, one shared clean copy:
(K+1)L tokens a row, against 2L for each of ``batch`` rows): per sample (K+1)/(2K) of the block step.

``--generate MODEL`` (a block-mode checkpoint) instead times ``generate`` of the quickstart's prompts
(64 tokens, greedy, low-confidence, one token per step) re-encoding the prefix (``cache none``)
against the exact block cache (``cache prefix``), interleaved, and checks that both write the same
tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import ModernBertForMaskedLM

from diffutron.diffusion import get_schedule, mdlm_loss
from diffutron.models.heads import MaskedLMParts
from diffutron.models.presets import preset_config
from diffutron.recipes.quickstart import TINY_OVERRIDES


def generation(path: str, repeats: int) -> None:
    from diffutron.models.checkpoint import load_checkpoint
    from diffutron.recipes.quickstart import PROMPTS
    from diffutron.sampling import GenerationConfig, generate

    loaded = load_checkpoint(path)
    schedule = loaded.settings.make_schedule()
    cpu: dict = {"none": [], "prefix": []}
    texts = {}
    for _ in range(repeats):
        for cache in cpu:
            cfg = GenerationConfig(
                max_new_tokens=64, steps=64, temperature=0.0, stop_at_eos=False, cache=cache
            )
            c0 = time.process_time()
            out = generate(loaded.model, loaded.tokenizer, PROMPTS, cfg, schedule=schedule)
            cpu[cache].append(time.process_time() - c0)
            texts[cache] = out.token_ids
    same = texts["none"] == texts["prefix"]
    a, b = statistics.median(cpu["none"]), statistics.median(cpu["prefix"])
    print(f"| cache | CPU s per generate ({len(PROMPTS)} x 64 tokens) |\n|---|---:|")
    print(f"| none (re-encode) | {a:.2f} |\n| prefix (exact block cache) | {b:.2f} |")
    print(f"speed-up {a / b:.2f}x; same tokens: {same}; block size {loaded.settings.block_size}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--generate", default=None, help="a block-mode checkpoint: time sampling instead")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--copies",
        type=int,
        nargs="*",
        default=[],
        help="also K noised copies per clean copy on batch/K rows (the same loss samples per step)",
    )
    args = ap.parse_args()
    if any(k < 2 or args.batch % k for k in args.copies):
        ap.error(f"--copies: each K must be at least 2 and divide --batch {args.batch}, got {args.copies}")
    torch.set_num_threads(args.threads)
    if args.generate:
        generation(args.generate, args.repeats)
        return
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config("tiny", None, vocab_size=args.vocab, **TINY_OVERRIDES))
    parts = MaskedLMParts(model.train())
    ids = torch.randint(5, args.vocab, (args.batch, args.length))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    schedule = get_schedule("linear")
    # (block size, noised copies): the MDLM, each block size, each with K copies on batch / K rows
    modes = [(None, 1), *((b, 1) for b in args.blocks), *((b, k) for b in args.blocks for k in args.copies)]
    cpu: dict = {m: [] for m in modes}
    wall: dict = {m: [] for m in modes}
    for step in range(args.steps + 1):
        for m in modes:
            size, copies = m
            rows = args.batch // copies
            g = torch.Generator().manual_seed(step)
            c0, w0 = time.process_time(), time.perf_counter()
            out = mdlm_loss(
                parts,
                ids[:rows],
                maskable[:rows],
                schedule=schedule,
                mask_id=4,
                generator=g,
                block_size=size,
                copies=copies,
            )
            out.loss.backward()
            model.zero_grad(set_to_none=True)
            if step:  # the first step of each is a warm-up
                cpu[m].append(time.process_time() - c0)
                wall[m].append(time.perf_counter() - w0)
    tokens = args.batch * args.length
    base = statistics.median(cpu[(None, 1)])
    rows = []
    print(
        "| mode | CPU s/step | wall s/step | CPU ms / 1k loss-sample tokens | CPU vs MDLM |\n"
        "|---|---:|---:|---:|---:|"
    )
    for m in modes:
        c, w = statistics.median(cpu[m]), statistics.median(wall[m])
        size, copies = m
        name = "mdlm" if size is None else f"block L'={size}"
        if copies > 1:
            name += f", {copies} noised copies x {args.batch // copies} rows"
        print(f"| {name} | {c:.3f} | {w:.3f} | {1000 * c / tokens * 1000:.1f} | {c / base:.2f}x |")
        rows.append({"mode": name, "cpu_s": c, "wall_s": w, "ratio": c / base})
    print(json.dumps({"batch": args.batch, "length": args.length, "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
