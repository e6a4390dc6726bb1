"""Generation speed at equal exact match (issue 11): fewer passes (threshold decoding) x cheaper passes
(the approximate key/value cache), against the straightforward sampler, on the numbers testbed.

    python benchmarks/testbed_numbers.py --train-only            # train the testbed model once (cached)
    python benchmarks/generation_speed.py --model runs/testbed-numbers/numbers/model

For each prompt length (the testbed's own prompt, ~35 tokens, and the same question after Turkish
filler text up to 256 and 512 tokens), on the same held-out items:
- ``reference``: ``benchmarks/sampling.py``'s ``reference_generate`` — one token per pass, the full
  head over the whole canvas, float64 softmax everywhere, no cache (the straightforward sampler);
- the engine, one token per pass (low-confidence), with ``--cache none|prefix|dual``;
- the engine with threshold decoding (``--tau``), with each cache mode;
exact match (± standard error), forward passes per answer, answer tokens per second at batch 1 and
the speed-up over the reference measured in the same run. Then batch 8: the engine's throughput on 8
prompts at a time against a straightforward batched sampler (LLaDA's loop over a batch).
The filler goes inside the user message, before the question. A model trained with
``testbed_numbers.py --context 512`` (questions after up to 512 tokens of the embedded corpus; the
default model when it exists) answers there too, so the long-prompt rows compare decoders at a real
exact match; a model of the first stage only never saw a prompt longer than ~35 tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from sampling import reference_generate
from testbed_numbers import items, long_question
from turkish_sentences import SENTENCES

from diffutron.models.checkpoint import load_checkpoint
from diffutron.sampling import GenerationConfig, generate
from diffutron.text.chat import extract_answer, format_chat


def prompt_ids(tok, question: str, total: int | None) -> list[int]:
    """<bos> + the chat prompt of ``question`` after Turkish filler, ``total`` tokens at most (the
    testbed's own prompt when ``total`` is 0)."""
    content = long_question(tok, question, total, " ".join(SENTENCES)) if total else question
    chat = format_chat([{"role": "user", "content": content}], add_generation_prompt=True)
    return [tok.bos_token_id, *tok(chat, add_special_tokens=False, verbose=False).input_ids]


@torch.no_grad()
def reference_batch(model, prompts: list[list[int]], cfg: GenerationConfig, mask_id: int, eos: int):
    """A straightforward batched sampler (LLaDA's loop over a batch of equal-length prompts): every
    row runs every step until all rows have ended; full head, float64 softmax, greedy, one block."""
    n0 = len(prompts[0])
    x = torch.tensor([p + [mask_id] * cfg.max_new_tokens for p in prompts])
    done = torch.zeros(len(prompts), dtype=torch.bool)
    passes = 0
    for _ in range(cfg.steps):
        masked = x == mask_id
        if not masked.any() or done.all():
            break
        logits = model(input_ids=x).logits.double()
        passes += 1
        logits[..., mask_id] = float("-inf")
        x0 = logits.argmax(-1)
        conf = logits.softmax(-1).gather(-1, x0[..., None]).squeeze(-1)
        conf = torch.where(masked & ~done[:, None], conf, float("-inf"))
        best = conf.argmax(1)
        rows = (~done).nonzero().flatten()
        x[rows, best[rows]] = x0[rows, best[rows]]
        answer = x[:, n0:]
        is_eos = answer == eos
        before = is_eos.long().cumsum(1) == 0
        done |= is_eos.any(1) & ~((answer == mask_id) & before).any(1)
    out = []
    for row in x[:, n0:].tolist():
        out.append(row[: row.index(eos)] if eos in row else row)
    return out, passes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=("full", "easy"), default="easy", help="the testbed's task")
    ap.add_argument("--model", help="default: runs/testbed-numbers-<task>/numbers/model")
    ap.add_argument("--items", type=int, default=60, help="held-out items per decoder (batch 1)")
    ap.add_argument("--reference-items", type=int, default=20, help="items for the slow reference")
    ap.add_argument(
        "--prompt-tokens", type=int, nargs="+", default=[0, 256, 512], help="0: the testbed's own"
    )
    ap.add_argument("--length", type=int, default=32, help="max_new_tokens")
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--batch-items", type=int, default=32, help="items for the batch-8 comparison")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        runs = Path(f"runs/testbed-numbers-{args.task}")
        long = runs / "context512" / "model"
        args.model = str(long if long.exists() else runs / "numbers" / "model")
    print(f"model: {args.model}")
    loaded = load_checkpoint(args.model)
    model, tok = loaded.model.eval(), loaded.tokenizer
    schedule = loaded.settings.make_schedule()
    mask_id, eos = loaded.mask_id, tok.eos_token_id
    test = items(
        max(args.items, args.batch_items), args.seed + 1, task=args.task
    )  # the testbed's held-out items
    gold = [a for _, a, _ in test]
    gold_tokens = [len(tok(a + "\n[/Answer]", add_special_tokens=False).input_ids) for a in gold]
    L = args.length
    one = GenerationConfig(max_new_tokens=L, steps=L, block_size=args.block, temperature=0.0)
    fast = replace(one, remasking="threshold", threshold=args.tau)
    ref_cfg = GenerationConfig(
        max_new_tokens=L, steps=L, block_size=L, temperature=0.0, repetition_penalty=1.0
    )
    decoders = [("engine, 1 token/pass", one)]
    decoders += [(f"engine, 1 token/pass, cache {c}", replace(one, cache=c)) for c in ("prefix", "dual")]
    decoders += [
        (f"engine, threshold {args.tau}, cache {c}", replace(fast, cache=c))
        for c in ("none", "prefix", "dual")
    ]
    results: list[dict] = []

    def record(name, total, n, hits, passes, seconds, tokens):
        em = hits / n
        row = dict(
            name=name,
            prompt_tokens=total,
            items=n,
            exact_match=em,
            stderr=math.sqrt(em * (1 - em) / n),
            passes_per_answer=passes / n,
            tokens_per_second=tokens / seconds,
            seconds=seconds,
        )
        results.append(row)
        return row

    for total in args.prompt_tokens:
        prompts = [prompt_ids(tok, q, total) for q, _, _ in test]
        plen = sorted(len(p) for p in prompts)
        print(f"\n## prompt {plen[0]}-{plen[-1]} tokens, {L} new tokens, blocks of {args.block} (batch 1)")
        # reference first (slow, fewer items); all decoders are timed on the same first items too
        n_ref = args.reference_items
        t0, hits, passes = time.perf_counter(), 0, 0
        for p, g in zip(prompts[:n_ref], gold[:n_ref], strict=True):
            ids, k = reference_generate(model, p, ref_cfg, mask_id, eos)
            hits += extract_answer(tok.decode(ids, skip_special_tokens=True)) == g
            passes += k
        ref = record(
            "reference", total, n_ref, hits, passes, time.perf_counter() - t0, sum(gold_tokens[:n_ref])
        )
        print(
            f"{'reference (1 token/pass, full head)':<40} EM {100 * ref['exact_match']:5.1f}  "
            f"passes {ref['passes_per_answer']:5.1f}  {ref['tokens_per_second']:7.1f} tok/s"
        )
        for name, cfg in decoders:
            t0, hits, passes = time.perf_counter(), 0, 0
            t_ref = None
            for i, (p, g) in enumerate(zip(prompts[: args.items], gold[: args.items], strict=True)):
                out = generate(model, tok, [p], cfg, schedule=schedule)
                hits += extract_answer(out.texts[0]) == g
                passes += out.forward_passes
                if i + 1 == n_ref:
                    t_ref = time.perf_counter() - t0
            seconds = time.perf_counter() - t0
            n = min(args.items, len(prompts))
            r = record(name, total, n, hits, passes, seconds, sum(gold_tokens[:n]))
            r["speedup"] = (ref["seconds"] / t_ref) if t_ref else None  # same first items as the reference
            print(
                f"{name:<40} EM {100 * r['exact_match']:5.1f} ± {100 * r['stderr']:3.1f}  "
                f"passes {r['passes_per_answer']:5.1f}  {r['tokens_per_second']:7.1f} tok/s  "
                f"×{r['speedup'] or float('nan'):.2f} vs reference"
            )

    # batch 8: equal-length prompts (filler to the longest requested length, or the own prompt padded)
    total = max(args.prompt_tokens)
    prompts = [prompt_ids(tok, q, total) for q, _, _ in test[: args.batch_items]]
    if len({len(p) for p in prompts}) == 1:
        n = len(prompts)
        print(f"\n## batch 8, prompt {len(prompts[0])} tokens, {n} items")
        t0, hits, passes = time.perf_counter(), 0, 0
        for i in range(0, n, 8):
            outs, k = reference_batch(model, prompts[i : i + 8], ref_cfg, mask_id, eos)
            hits += sum(
                extract_answer(tok.decode(o, skip_special_tokens=True)) == g
                for o, g in zip(outs, gold[i : i + 8], strict=True)
            )
            passes += k * len(outs)
        ref = record(
            "reference batch 8", total, n, hits, passes, time.perf_counter() - t0, sum(gold_tokens[:n])
        )
        print(
            f"{'reference batch 8':<40} EM {100 * ref['exact_match']:5.1f}  {ref['tokens_per_second']:7.1f} tok/s"
        )
        for name, cfg in decoders:
            t0, hits, passes = time.perf_counter(), 0, 0
            for i in range(0, n, 8):
                out = generate(model, tok, prompts[i : i + 8], cfg, schedule=schedule)
                hits += sum(extract_answer(t) == g for t, g in zip(out.texts, gold[i : i + 8], strict=True))
                passes += sum(out.row_passes)
            r = record(
                name + ", batch 8", total, n, hits, passes, time.perf_counter() - t0, sum(gold_tokens[:n])
            )
            r["speedup"] = ref["seconds"] / r["seconds"]
            print(
                f"{name + ', batch 8':<40} EM {100 * r['exact_match']:5.1f}  "
                f"{r['tokens_per_second']:7.1f} tok/s  ×{r['speedup']:.2f} vs reference batch 8"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
