"""The chunked output head under bf16 autocast at a 256k vocabulary: a frozen decoder cast once per
forward (now) against once per chunk and again in each chunk's recomputation (before issue 21).

    python benchmarks/head_cast.py [--vocab 256000] [--hidden 768] [--rows 524] [--reps 2]

Both variants run ``models.heads.head_cross_entropy`` forward and backward on the same rows under
``torch.autocast(bf16)`` with the same chunk limit (``MAX_LOGIT_ELEMENTS``: 131 rows at 256k); the
only difference is where ``suppressing_decoder`` is built: inside autocast (it casts the frozen weight
once) or outside it (the weight stays float32 and autocast casts it in every chunk's ``F.linear``,
which is what the head did before). Casts of the [V, H] weight are counted with the profiler; the
times alternate between variants in one run, so the ratio is measured on the same machine state.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.profiler import profile

from diffutron.models.heads import MAX_LOGIT_ELEMENTS, head_cross_entropy, suppressing_decoder


def run(lin: nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, cast_once: bool) -> float:
    hidden.grad = None
    t0 = time.perf_counter()
    decoder = suppressing_decoder(lin, 3) if not cast_once else None  # outside autocast: no cast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if cast_once:
            decoder = suppressing_decoder(lin, 3)
        ce = head_cross_entropy(decoder, hidden, targets, vocab_size=lin.out_features)
    ce.sum().backward()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=256_000)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--rows", type=int, default=524, help="masked rows (default 524: 4 chunks at 256k)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    lin = nn.Linear(args.hidden, args.vocab)
    lin.requires_grad_(False)  # the tied embedding of a LoRA stage
    hidden = torch.randn(args.rows, args.hidden, requires_grad=True)
    targets = torch.randint(4, args.vocab, (args.rows,))
    chunks = -(-args.rows // max(1, MAX_LOGIT_ELEMENTS // args.vocab))
    casts = {}
    for cast_once in (False, True):
        with profile(record_shapes=True) as prof:
            run(lin, hidden, targets, cast_once)
        shape = [args.vocab, args.hidden]
        casts[cast_once] = sum(
            1 for e in prof.events() if e.name == "aten::_to_copy" and list(e.input_shapes[0] or []) == shape
        )
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.reps):
        for cast_once in (False, True):
            times[cast_once].append(run(lin, hidden, targets, cast_once))
    before, after = min(times[False]), min(times[True])
    gb = args.vocab * args.hidden * 6 / 1e9  # read float32, write bf16
    print(
        f"vocab {args.vocab:,}, hidden {args.hidden}, {args.rows} rows in {chunks} chunks, threads {torch.get_num_threads()}"
    )
    print(
        f"before (cast per chunk): {casts[False]} casts of the decoder ({casts[False] * gb:.1f} GB), {before:.2f} s"
    )
    print(f"after  (cast per forward): {casts[True]} cast ({casts[True] * gb:.1f} GB), {after:.2f} s")
    print(f"ratio before/after: {before / after:.2f}x (best of {args.reps})")


if __name__ == "__main__":
    main()
