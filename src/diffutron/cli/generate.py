"""``diffutron generate``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from ..models.checkpoint import load_checkpoint
    from ..sampling import GenerationConfig, generate

    prompts = list(args.prompt or [])
    if args.prompts_file:
        lines = Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
        prompts += [ln for ln in lines if ln.strip()]
    if not prompts:
        raise ValueError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    loaded = load_checkpoint(args.model)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, steps=args.steps, block_size=args.block_size,
                           temperature=args.temperature, repetition_penalty=args.repetition_penalty,
                           remasking=args.remasking, seed=args.seed)
    t0 = time.perf_counter()
    out = generate(loaded.model, loaded.tokenizer, prompts, cfg, schedule=loaded.settings.make_schedule())
    seconds = time.perf_counter() - t0
    n_tokens = sum(len(ids) for ids in out.token_ids)
    if args.json:
        rows = [{"prompt": p, "text": t, "forward_passes": out.forward_passes, "new_tokens": len(ids),
                 "tokens_per_second": n_tokens / max(seconds, 1e-9), "seconds": seconds}
                for p, t, ids in zip(prompts, out.texts, out.token_ids, strict=True)]
        print(json.dumps(rows[0] if len(rows) == 1 else rows, ensure_ascii=False))
    else:
        for p, t in zip(prompts, out.texts, strict=True):
            sep = "" if t[:1].isspace() else " "
            print(f"{p}{sep}{t}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="generate text by iterative unmasking")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--prompts-file", help="a file with one prompt per line")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.2)
    p.add_argument("--remasking", default="low_confidence", choices=["low_confidence", "random"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON object (text, forward_passes, ...)")
    p.set_defaults(func=_generate)
