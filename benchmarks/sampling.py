"""Benchmark the sampling engine: speed against a straightforward implementation, quality per strategy.

    python benchmarks/sampling.py --model runs/quickstart/model       # ~6 minutes on a 2-core CPU
    python benchmarks/sampling.py                                      # trains a quickstart model first

1. loads a Turkish MDLM (or trains one with the quickstart recipe) and its tokenizer;
2. trains a small autoregressive reference (``LlamaForCausalLM``) on the same corpus and tokenizer;
3. speed: the ``diffutron`` preset through the engine and through ``reference_generate`` — the
   published generator written plainly (full logits every step, penalty, float64 Gumbel noise and
   softmax over every position, no reuse) — interleaved on the same prompts in the same run; at
   temperature 0 both must give identical tokens, so the comparison is of the same algorithm;
4. quality: for each commit rule and step budget, forward passes per answer, tokens/s (batched),
   generative perplexity of the answers under the AR reference, and unigram entropy (bits; low
   values flag repetition). Real continuations of the same prompts are scored as a yardstick.
Prints Markdown tables and writes ``sampling.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from diffutron.data import DataReport, build_blocks, iter_documents
from diffutron.models.checkpoint import load_checkpoint
from diffutron.sampling import GenerationConfig, generate, preset

# ----------------------------------------------------------------------------------------------
# The straightforward implementation (the baseline of the speed comparison)


@torch.no_grad()
def reference_generate(
    model, prompt_ids: list[int], cfg: GenerationConfig, mask_id: int, eos_id: int, seed=0
):
    """The published generator in plain form, one prompt at a time (LLaDA's loop + Diffutron's penalty)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.tensor([prompt_ids + [mask_id] * cfg.max_new_tokens])
    n0, n_blocks = len(prompt_ids), cfg.max_new_tokens // cfg.block_size
    steps = cfg.steps // n_blocks
    passes = 0
    for blk in range(n_blocks):
        start, end = n0 + blk * cfg.block_size, n0 + (blk + 1) * cfg.block_size
        n_mask = int((x[:, start:end] == mask_id).sum())
        counts = [n_mask // steps + (i < n_mask % steps) for i in range(steps)]  # LLaDA's transfer counts
        for i in range(steps):
            mask_index = x == mask_id
            if not mask_index[:, start:end].any():
                break
            logits = model(input_ids=x).logits  # [1, L, V]: the head at every position
            passes += 1
            present = torch.zeros(logits.shape[-1], dtype=torch.bool)
            present[x[0]] = True
            present[mask_id] = False
            pen = torch.where(logits > 0, logits / cfg.repetition_penalty, logits * cfg.repetition_penalty)
            logits = torch.where(present, pen, logits)
            logits[..., mask_id] = float("-inf")
            logits = logits.double()
            if cfg.temperature > 0:
                e = torch.empty(logits.shape, dtype=torch.float64).exponential_(generator=gen)
                x0 = (logits / cfg.temperature - e.log()).argmax(-1)
            else:
                x0 = logits.argmax(-1)
            p = logits.softmax(-1)
            x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, end:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, float("-inf"))
            chosen = confidence[0].topk(counts[i]).indices
            x[0, chosen] = x0[0, chosen]
            answer = x[0, n0:]
            eos = (answer == eos_id).nonzero()
            if len(eos) and not (answer[: int(eos[0])] == mask_id).any():
                x[0, n0:] = torch.where(answer == mask_id, eos_id, answer)
                ids = answer[: int(eos[0])].tolist()
                return ids, passes
    ids = x[0, n0:].tolist()
    return (ids[: ids.index(eos_id)] if eos_id in ids else ids), passes


# ----------------------------------------------------------------------------------------------
# The autoregressive reference model


def train_reference(tokenizer, blocks: np.ndarray, minutes: float, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # Small on purpose: with an 8k vocabulary the output layer is most of the cost, and the reference
    # must learn something within a minute or two of a shared 2-core CPU.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=blocks.shape[1],
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    t0, step = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - t0 < minutes * 60:
        lr = 3e-3 * min(1.0, (step + 1) / 20)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = torch.from_numpy(blocks[rng.integers(0, len(blocks), 8)].astype(np.int64))
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    model.eval()
    return model, step


@torch.no_grad()
def ar_perplexity(ar, prompts: list[list[int]], answers: list[list[int]]) -> float:
    """exp(mean NLL of the answer tokens given the prompt) under the AR reference."""
    nll, n = 0.0, 0
    for p, a in zip(prompts, answers, strict=True):
        if not a:
            continue
        ids = torch.tensor([p + a])
        logp = ar(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        target = ids[0, 1:]
        tok = logp.gather(1, target[:, None]).squeeze(1)[len(p) - 1 :]
        nll, n = nll - float(tok.sum()), n + len(a)
    return math.exp(nll / max(n, 1))


def unigram_entropy(answers: list[list[int]]) -> float:
    """Mean over answers of the entropy (bits) of each answer's token histogram."""
    values = []
    for a in answers:
        if a:
            c = np.array(list(Counter(a).values()), dtype=np.float64) / len(a)
            values.append(float(-(c * np.log2(c)).sum()))
    return float(np.mean(values)) if values else 0.0


# ----------------------------------------------------------------------------------------------


def speed(loaded, schedule, prompts: list[list[int]], repeats: int) -> dict:
    """Engine vs reference at the diffutron preset, batch 1, interleaved; tokens = answer positions decided."""
    model, tok = loaded.model, loaded.tokenizer
    cfg = preset("diffutron")
    eos = tok.eos_token_id
    # Same algorithm: at temperature 0 both give the same tokens.
    greedy = preset("diffutron", temperature=0.0)
    same = all(
        generate(model, tok, [p], greedy, schedule=schedule).token_ids[0]
        == reference_generate(model, [tok.bos_token_id, *p], greedy, loaded.mask_id, eos)[0]
        for p in prompts[:2]
    )
    times = {"engine": 0.0, "reference": 0.0}
    passes = {"engine": 0, "reference": 0}
    n_tokens = 0
    for r in range(repeats):
        for i, p in enumerate(prompts):
            order = ("engine", "reference") if (i + r) % 2 == 0 else ("reference", "engine")
            for name in order:
                t0 = time.perf_counter()
                if name == "engine":
                    out = generate(model, tok, [p], cfg, schedule=schedule)
                    passes[name] += out.forward_passes
                else:
                    _, n_pass = reference_generate(model, [tok.bos_token_id, *p], cfg, loaded.mask_id, eos)
                    passes[name] += n_pass
                times[name] += time.perf_counter() - t0
            n_tokens += cfg.max_new_tokens
    tps = {k: n_tokens / v for k, v in times.items()}
    return {
        "greedy_outputs_identical": same,
        "tokens_per_second": tps,
        "forward_passes": passes,
        "seconds_per_pass": {k: times[k] / max(passes[k], 1) for k in times},
        "speedup": tps["engine"] / tps["reference"],
        "prompts": len(prompts) * repeats,
    }


SWEEP = [  # (commit rule, steps, threshold)
    ("low_confidence", 64, None),  # the published setting: one token per pass
    ("low_confidence", 32, None),
    ("low_confidence", 16, None),
    ("margin", 64, None),
    ("entropy", 64, None),
    ("random", 64, None),
    ("threshold", 64, 0.9),
    ("threshold", 64, 0.5),
    ("threshold", 64, 0.1),
    ("threshold", 64, 0.05),
    ("threshold", 64, 0.02),
]


def quality(loaded, schedule, ar, prompts, real, sweep) -> list[dict]:
    rows = []
    real_ppl = ar_perplexity(ar, prompts, real)
    rows.append(
        {
            "decoder": "real text",
            "steps": None,
            "passes": None,
            "tokens_per_second": None,
            "gen_ppl": real_ppl,
            "entropy": unigram_entropy(real),
        }
    )
    for rule, steps, tau in sweep:
        cfg = preset("diffutron", remasking=rule, steps=steps, threshold=tau or 0.9)
        t0 = time.perf_counter()
        out = generate(loaded.model, loaded.tokenizer, prompts, cfg, schedule=schedule)
        seconds = time.perf_counter() - t0
        answers = out.token_ids
        name = f"threshold {tau}" if tau else rule
        rows.append(
            {
                "decoder": name,
                "steps": steps if not tau else None,
                "passes": float(np.mean(out.row_passes)),
                "tokens_per_second": sum(len(a) for a in answers) / seconds,
                "gen_ppl": ar_perplexity(ar, prompts, answers),
                "entropy": unigram_entropy(answers),
            }
        )
        print(
            f"  {name:16s} steps {steps:3d}: {rows[-1]['passes']:5.1f} passes  ppl {rows[-1]['gen_ppl']:8.1f}"
            f"  entropy {rows[-1]['entropy']:.2f}",
            flush=True,
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="an MDLM folder (default: train one with the quickstart recipe)")
    ap.add_argument(
        "--train-minutes", type=float, default=3.0, help="quickstart budget when --model is absent"
    )
    ap.add_argument("--ar-minutes", type=float, default=2.0, help="training budget of the AR reference")
    ap.add_argument("--prompts", type=int, default=12, help="prompts in the quality sweep (one batch)")
    ap.add_argument("--speed-prompts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="passes over the speed prompts")
    ap.add_argument("--out", default="runs/bench-sampling")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny budgets, few configs")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    if args.model is None:
        from diffutron.recipes.quickstart import run_quickstart

        print(f"training a quickstart MDLM for {args.train_minutes} min ...", flush=True)
        args.model = str(
            Path(run_quickstart(out_dir / "quickstart", minutes=args.train_minutes)["model_dir"])
        )
    loaded = load_checkpoint(args.model)
    schedule = loaded.settings.make_schedule()
    tok = loaded.tokenizer

    blocks = build_blocks(iter_documents("embedded", DataReport()), tok, 128, progress=False)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(blocks))
    held, train_blocks = blocks[order[:64]], blocks[order[64:]]
    prompt_len, n_new = 8, 64
    prompts = [held[i, :prompt_len].tolist() for i in range(args.prompts)]
    real = [held[i, prompt_len : prompt_len + n_new].tolist() for i in range(args.prompts)]
    real = [r[: r.index(tok.eos_token_id)] if tok.eos_token_id in r else r for r in real]

    print(f"training the AR reference for {args.ar_minutes} min ...", flush=True)
    ar, ar_steps = train_reference(tok, train_blocks, 0.1 if args.quick else args.ar_minutes)
    held_ppl = ar_perplexity(ar, [b[:1].tolist() for b in held[16:48]], [b[1:].tolist() for b in held[16:48]])
    print(f"  {ar_steps} steps; held-out perplexity {held_ppl:.1f}", flush=True)

    print("speed: diffutron preset, engine vs reference ...", flush=True)
    speed_prompts = [held[32 + i, :prompt_len].tolist() for i in range(args.speed_prompts)]
    sp = speed(
        loaded, schedule, speed_prompts[: 2 if args.quick else None], 1 if args.quick else args.repeats
    )
    print(
        f"  engine {sp['tokens_per_second']['engine']:.1f} tok/s, reference "
        f"{sp['tokens_per_second']['reference']:.1f} tok/s: {sp['speedup']:.2f}x; "
        f"greedy outputs identical: {sp['greedy_outputs_identical']}",
        flush=True,
    )

    print("quality sweep ...", flush=True)
    sweep = SWEEP[:1] + SWEEP[-1:] if args.quick else SWEEP
    rows = quality(loaded, schedule, ar, prompts, real, sweep)

    result = {
        "model": args.model,
        "ar_reference": {"steps": ar_steps, "held_out_ppl": held_ppl},
        "speed": sp,
        "quality": rows,
        "prompts": len(prompts),
        "max_new_tokens": n_new,
        "threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - t_start,
    }
    (out_dir / "sampling.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print()
    print(
        "| decoder | steps | forward passes / answer | tokens/s (batch) | gen. perplexity (AR) | unigram entropy (bits) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
        print(
            f"| {r['decoder']} | {fmt(r['steps'], 'd')} | {fmt(r['passes'], '.1f')} | "
            f"{fmt(r['tokens_per_second'], '.0f')} | {r['gen_ppl']:.1f} | {r['entropy']:.2f} |"
        )
    print(
        f"\nspeed at the diffutron preset (batch 1): engine {sp['tokens_per_second']['engine']:.1f} tok/s, "
        f"reference {sp['tokens_per_second']['reference']:.1f} tok/s -> {sp['speedup']:.2f}x"
    )
    print(f"wall time {result['wall_seconds']:.0f} s; results in {out_dir / 'sampling.json'}")


if __name__ == "__main__":
    main()
