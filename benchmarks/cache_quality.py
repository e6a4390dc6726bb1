"""What the approximate key/value cache costs in text quality (issue 11): generative perplexity, with
and without ``--cache``, on a model trained on prose, for prompts of 32, 256 and 512 tokens.

    python benchmarks/quality_at_budget.py --minutes 10 --out runs/bench-quality   # an MDLM and an AR model
    python benchmarks/cache_quality.py --run runs/bench-quality/base-seed0

The testbed (``testbed_numbers.py``) measures the cache on exact answers; this measures it where most
generation happens: continuing Turkish prose. For each prompt length, prompts are windows of the
held-out documents of ``quality_at_budget.py`` (never seen by either model), each continued by
``--new-tokens`` tokens with the ``diffutron`` preset (temperature 0.1, repetition penalty 1.2, blocks
of ``--block``) and with the ``fast`` preset (threshold 0.9), under ``cache none|prefix|dual``:
- generative perplexity of the continuations under the autoregressive model trained beside the MDLM
  (same tokenizer, so no re-tokenisation), conditioned on the prompt, with its unigram entropy (bits):
  a cache that hurts raises the first or lowers the second;
- greedy agreement: with temperature 0 each cached decoder's tokens against the uncached decoder's
  (share of equal positions): 100 % where the cache is exact;
- forward passes and answer tokens per second (batch 1).
The cache is approximate: positions outside the block being decoded keep the keys and values of the
block's first pass, so a token committed in the block is seen by the others only after the refresh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from quality_at_budget import split_documents
from sampling import ar_perplexity, unigram_entropy
from transformers import AutoModelForCausalLM

from diffutron.models.checkpoint import load_checkpoint
from diffutron.sampling import generate, preset

CACHES = ("none", "prefix", "dual")


def held_out_prompts(tok, n: int, length: int, heldout_share: float = 0.02) -> list[list[int]]:
    """``n`` prompts of ``length`` tokens (``<bos>`` + a window of held-out text), evenly spread."""
    _, held = split_documents(heldout_share)
    ids = tok("\n".join(held), add_special_tokens=False, verbose=False).input_ids
    span = length - 1
    if len(ids) < span + n:
        raise ValueError(f"held-out text has {len(ids)} tokens: too few for {n} prompts of {length}")
    stride = (len(ids) - span) // n
    return [[tok.bos_token_id, *ids[i * stride : i * stride + span]] for i in range(n)]


def run(loaded, ar, prompts, cfg, seed: int) -> dict:
    model, tok = loaded.model, loaded.tokenizer
    schedule = loaded.settings.make_schedule()
    answers, passes, tokens = [], 0, 0
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        out = generate(model, tok, [p], replace(cfg, seed=seed + i), schedule=schedule)
        answers.append(out.token_ids[0])
        passes += out.forward_passes
        tokens += len(out.token_ids[0])
    seconds = time.perf_counter() - t0
    return dict(
        gen_ppl=ar_perplexity(ar, prompts, answers),
        entropy_bits=unigram_entropy(answers),
        passes=passes / len(prompts),
        tokens_per_second=tokens / seconds,
        answers=answers,
    )


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of positions where two decoders wrote the same token (the shorter answer padded)."""
    same = total = 0
    for x, y in zip(a, b, strict=True):
        n = max(len(x), len(y))
        same += sum(1 for i in range(min(len(x), len(y))) if x[i] == y[i])
        total += n
    return same / total if total else 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a quality_at_budget run folder holding mdlm/model and ar")
    ap.add_argument("--mdlm", help="MDLM checkpoint (default: RUN/mdlm/model)")
    ap.add_argument("--ar", help="autoregressive reference (default: RUN/ar)")
    ap.add_argument("--prompt-tokens", type=int, nargs="+", default=[32, 256, 512])
    ap.add_argument("--prompts", type=int, default=16, help="prompts per length")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--block", type=int, default=16, help="block size (the cache refreshes at each block)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mdlm_dir = args.mdlm or (args.run and f"{args.run}/mdlm/model")
    ar_dir = args.ar or (args.run and f"{args.run}/ar")
    if not mdlm_dir or not ar_dir:
        ap.error("give --run, or both --mdlm and --ar")
    loaded = load_checkpoint(mdlm_dir)
    loaded.model.eval()
    ar = AutoModelForCausalLM.from_pretrained(ar_dir).eval()
    if ar.config.vocab_size != loaded.model.config.vocab_size:
        raise SystemExit(
            f"{ar_dir} has another vocabulary than {mdlm_dir}: not the AR model trained beside it"
        )
    limit = loaded.model.config.max_position_embeddings
    print(f"MDLM {mdlm_dir}; AR reference {ar_dir}; {args.prompts} held-out prompts per length")

    base = preset("diffutron", max_new_tokens=args.new_tokens, steps=args.new_tokens, block_size=args.block)
    decoders = {
        "diffutron": base,
        "fast": replace(base, remasking="threshold", threshold=0.9),
        "greedy": replace(base, temperature=0.0),
    }
    rows = []
    for length in args.prompt_tokens:
        if length + args.new_tokens > limit:
            print(f"prompt {length}: over the model's {limit} positions, skipped")
            continue
        prompts = held_out_prompts(loaded.tokenizer, args.prompts, length)
        print(f"\n## prompt {length} tokens, {args.new_tokens} new tokens, blocks of {args.block}")
        print(
            f"{'decoder':<24} {'gen. ppl':>10} {'entropy':>8} {'passes':>7} {'tok/s':>8} {'× no cache':>10} "
            f"{'= no cache':>11}"
        )
        for name, cfg in decoders.items():
            plain = None
            for cache in CACHES:
                r = run(loaded, ar, prompts, replace(cfg, cache=cache), args.seed)
                plain = plain or r
                r.update(
                    prompt_tokens=length,
                    decoder=name,
                    cache=cache,
                    agreement=agreement(r["answers"], plain["answers"]),
                    speedup=r["tokens_per_second"] / plain["tokens_per_second"],
                )
                print(
                    f"{name + ', cache ' + cache:<24} {r['gen_ppl']:10.1f} {r['entropy_bits']:8.2f} "
                    f"{r['passes']:7.1f} {r['tokens_per_second']:8.1f} {r['speedup']:10.2f} "
                    f"{100 * r['agreement']:10.1f}%"
                )
                rows.append({k: v for k, v in r.items() if k != "answers"})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
