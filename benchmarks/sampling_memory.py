"""Peak memory of one pure-diffusion sampling step over a 256k vocabulary: float64 proposals in chunks
against the whole [N, V] at once (the baseline, measured in the same run).

    python benchmarks/sampling_memory.py                     # N = 512 answer tokens, V = 262,144
    python benchmarks/sampling_memory.py --answer 256 --vocab 65536

Each configuration runs in a fresh process (peak RSS is a high-water mark): a micro ModernBERT with a
V-token vocabulary, one prompt, ``--answer`` masked tokens in one block (``block_size=0``), one step, so
every position is a candidate and the engine holds N x V proposal logits. Reported: the rise of the
peak resident set over what the process held just before ``generate`` (the model, the warm-up), in MB,
and the ratio baseline / chunked. ``--temperature 1 --top-p 0.9`` also exercises the filtered draw.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys


class _Tokenizer:
    """The handful of attributes the engine reads; prompts are given as token ids."""

    mask_token_id, pad_token_id, eos_token_id, bos_token_id = 4, 0, 1, 2

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(map(str, ids))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    import diffutron.sampling.engine as engine
    from diffutron.sampling import GenerationConfig, generate

    if args.one_chunk:
        engine.MAX_PROPOSAL_ELEMENTS = 1 << 62  # the baseline: every candidate's float64 logits at once
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = ModernBertConfig(
        vocab_size=args.vocab, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=args.answer + 16, pad_token_id=0,
        eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1,
    )  # fmt: skip
    model = ModernBertForMaskedLM(config).eval()
    tok = _Tokenizer()
    cfg = GenerationConfig(
        max_new_tokens=args.answer,
        steps=1,
        block_size=0,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=0,
    )
    warm = GenerationConfig(max_new_tokens=4, steps=1, block_size=0)
    generate(model, tok, [[2, 10, 11]], warm)  # imports, allocator, kernels: not the step we measure
    before = _peak_mb()
    out = generate(model, tok, [[2, 10, 11]], cfg)
    print(json.dumps({"before_mb": before, "peak_mb": _peak_mb(), "rise_mb": _peak_mb() - before,
                      "tokens": len(out.token_ids[0])}))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--answer", type=int, default=512, help="masked answer tokens N (default 512)")
    p.add_argument("--vocab", type=int, default=262_144, help="vocabulary V (default 262,144)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--one-chunk", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    common = [
        "--answer", str(args.answer), "--vocab", str(args.vocab),
        "--temperature", str(args.temperature), "--top-p", str(args.top_p), "--child",
    ]  # fmt: skip
    results = {}
    for name, extra in (("one chunk (baseline)", ["--one-chunk"]), ("chunked", [])):
        run = subprocess.run(
            [sys.executable, __file__, *common, *extra],
            capture_output=True,
            text=True,
            env=os.environ,
            check=True,
        )
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])
    base, new = results["one chunk (baseline)"]["rise_mb"], results["chunked"]["rise_mb"]
    print(f"N = {args.answer}, V = {args.vocab:,}, temperature {args.temperature}, top_p {args.top_p}")
    print("| proposals | peak RSS rise during generate (MB) |")
    print("|---|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['rise_mb']:,.0f} |")
    print(f"baseline / chunked: {base / max(new, 1e-9):.2f}x")


if __name__ == "__main__":
    main()
