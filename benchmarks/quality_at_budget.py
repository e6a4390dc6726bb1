"""Quality at a fixed budget: the ``tiny`` MDLM against an autoregressive model of the same shape (issue 12).

    python benchmarks/quality_at_budget.py --minutes 5 --seeds 0          # ~11 min on a 2-core CPU
    python benchmarks/quality_at_budget.py --steps 430                    # equal steps: for a busy machine
    python benchmarks/quality_at_budget.py --minutes 3 --no-ar --label lr2e-3 --set training.lr=2e-3
    python benchmarks/quality_at_budget.py --quick                        # a smoke run, ~1 min

Same corpus, tokenizer, parameter count, optimiser settings and wall-clock budget for both models:

1. documents: the embedded corpus (Atatürk's speeches) less a fixed, seeded ~2 % of its documents
   (by characters), which neither the tokenizer nor either model ever sees: the held-out text. When
   ``/work/shared/data/tquad_train`` exists, Wikipedia-style TQuAD paragraphs are a second, out-of-domain
   held-out text (read at run time; skipped when absent);
2. the MDLM: the quickstart's config (``recipes.quickstart.quickstart_config``: tiny ModernBERT with
   a sliding window of ±4 tokens, 8k BPE, blocks of 128, batch 16, lr 1e-3, warmup a quarter of the steps, cosine) through the project's ``train`` — the
   code behind ``diffutron train`` — on those documents for ``--minutes``; no validation or checkpoints
   inside the budget, so the minutes are training only. ``--set KEY=VALUE`` changes its config (ablations);
   ``--steps N`` trains both models N optimiser steps instead (equal compute whatever else runs);
3. the autoregressive model: ``LlamaForCausalLM`` with the MDLM's hidden size, layers, heads, MLP
   width, vocabulary and tied head, trained on the very same blocks in the same order (the loop's
   ``BlockBatches``) with the same optimiser, parameter groups, warmup + cosine and time-budget sizing;
4. held-out scoring on identical tokens: every document framed ``<bos> text <eos>`` in windows of 128
   tokens, each window after the first starting with the previous one's last token as context
   (``text_windows(context=1)``), so both models score every text token exactly once. The MDLM: the
   ELBO bound (stratified, ``--t-samples``) with its standard error, and the exact in-order likelihood
   (left-to-right unmasking, ``evaluation.sequential.inorder_nll``) on a seeded subset of windows
   (one forward pass per token: costly), with the ELBO of the same subset beside it; the AR model: its
   exact likelihood. Perplexity per token (same tokenizer, so comparable) and bits per character;
5. a few Turkish continuations from each model (nucleus sampling, the quickstart's settings).

Prints a Markdown table per seed and writes ``quality_at_budget.json`` into ``--out`` (a scratch
folder: runs inside it are replaced).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from diffutron.cli.train import with_overrides
from diffutron.data import DataReport, iter_documents
from diffutron.diffusion import elbo_perplexity
from diffutron.diffusion.block import block_size_of
from diffutron.evaluation.perplexity import bits_per_unit, text_windows
from diffutron.evaluation.sequential import SequenceNll, causal_nll, inorder_nll
from diffutron.io import atomic_write_json, atomic_write_text
from diffutron.models.checkpoint import load_checkpoint
from diffutron.models.heads import MaskedLMParts
from diffutron.recipes.quickstart import PROMPTS, quickstart_config, sample_config
from diffutron.sampling import generate
from diffutron.text.bos import with_bos
from diffutron.training import train
from diffutron.training.loop import BlockBatches, _lr_lambda, _TimeBudget
from diffutron.training.prepare import prepare_data
from diffutron.training.state import TrainState

TQUAD = Path("/work/shared/data/tquad_train/train-v0.1.minus_dev_contexts.json")
SPLIT_SEED = 1234  # the held-out documents: the same for every training seed


# ----------------------------------------------------------------------------------------------
# Data


def split_documents(share: float) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents): a seeded choice of whole documents holding about
    ``share`` of the corpus' characters is held out."""
    docs = list(iter_documents("embedded", DataReport()))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(docs))
    target, held, chars = share * sum(map(len, docs)), set(), 0
    for i in order:
        if chars >= 0.9 * target:
            break
        if chars + len(docs[i]) <= 1.1 * target:  # a long speech would overshoot: take the next one
            held.add(int(i))
            chars += len(docs[i])
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


def tquad_paragraphs(n: int) -> list[str]:
    """``n`` distinct TQuAD paragraphs (a seeded choice), or none when the shared data is absent."""
    if not TQUAD.exists():
        return []
    data = json.loads(TQUAD.read_text(encoding="utf-8"))
    paras = sorted({p["context"] for art in data["data"] for p in art["paragraphs"]})
    pick = np.random.default_rng(SPLIT_SEED).permutation(len(paras))[:n]
    return [paras[i] for i in sorted(pick)]


# ----------------------------------------------------------------------------------------------
# The autoregressive model: the MDLM's shape, the MDLM's optimiser, the MDLM's batches


def ar_model_like(mdlm, tokenizer, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    c = mdlm.config
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,  # gated MLP of this width, as ModernBERT's
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_attention_heads,
        max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def ar_optimizer(model: torch.nn.Module, tc) -> torch.optim.Optimizer:
    """The training loop's AdamW groups (no decay on embeddings and 1-D parameters), by Llama's names."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas))


def train_ar(model, data, tc, minutes: float | None, progress: bool = True) -> dict:
    """Next-token training for ``minutes`` (None: ``tc.max_steps`` steps) on ``data``'s training
    blocks, step for step like the loop."""
    from tqdm.auto import tqdm

    batches = BlockBatches(data.rows, data.train_idx, tc.batch_size, tc.seed, 0, 1)
    state = TrainState(total_steps=tc.max_steps)
    opt = ar_optimizer(model, tc)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(state, tc.warmup_steps, tc.min_lr_ratio, tc.warmup_ratio)
    )
    budget = _TimeBudget(minutes, tc.max_steps) if minutes else None
    model.train()
    bar = tqdm(total=state.total_steps, desc="train AR", disable=not progress, dynamic_ncols=True)
    t0, cpu0, losses = time.perf_counter(), time.process_time(), []
    while state.step < state.total_steps:
        ids, _ = batches.get(state)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens += ids.numel()
        state.elapsed_s = time.perf_counter() - t0
        losses.append(float(loss.detach()))
        if budget is not None and budget.update(state, 0):
            bar.total = state.total_steps
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    model.eval()
    return {
        "steps": state.step,
        "train_tokens": state.tokens,
        "train_seconds": state.elapsed_s,
        "train_cpu_seconds": time.process_time() - cpu0,
        "final_train_loss": float(np.mean(losses[-20:])),
    }


# ----------------------------------------------------------------------------------------------
# Scoring and samples


def elbo_nll(model, ids, scored, attention, *, mask_id, schedule, t_samples, seed) -> dict:
    r = elbo_perplexity(
        MaskedLMParts(model),
        ids,
        schedule=schedule,
        mask_id=mask_id,
        maskable=scored,
        attention_mask=attention,
        t_samples=t_samples,
        batch_size=16,
        seed=seed,
    )
    return {
        "nll_per_token": r.nelbo_per_token,
        "perplexity": r.perplexity,
        "stderr_nll": r.stderr_nelbo,
        "tokens": r.tokens,
        "windows": r.sequences,
        "t_samples": t_samples,
    }


def score_text(name, texts, loaded, ar, args, inorder_windows: int) -> dict:
    """ELBO (+ in-order on a subset) of the MDLM and exact NLL of the AR model on ``texts``."""
    tok = loaded.tokenizer
    ids, scored, attention, counts = text_windows(tok, texts, args.block_size, context=1)
    chars, n_tokens = counts["characters"], int(scored.sum())
    out = {"text": name, **counts, "tokens": n_tokens, "windows": int(ids.shape[0])}
    t0 = time.perf_counter()
    schedule = loaded.settings.make_schedule()
    e = elbo_nll(
        loaded.model,
        ids,
        scored,
        attention,
        mask_id=loaded.mask_id,
        schedule=schedule,
        t_samples=args.t_samples,
        seed=0,
    )
    e["bits_per_char"] = bits_per_unit(e["nll_per_token"] * n_tokens, chars)
    out["mdlm_elbo"], out["seconds_elbo"] = e, time.perf_counter() - t0
    if ar is not None:
        t0 = time.perf_counter()
        a = causal_nll(ar, ids, scored, attention)
        out["ar"] = {**a.to_dict(), "bits_per_char": a.bits_per(chars)}
        out["seconds_ar"] = time.perf_counter() - t0
    if inorder_windows:
        # a seeded subset: one forward pass per token; bits per character from the text's own
        # characters per token, since a subset's characters are not counted separately
        pick = torch.from_numpy(np.random.default_rng(0).permutation(ids.shape[0])[:inorder_windows])
        sub = ids[pick], scored[pick], attention[pick]
        chars_per_token = chars / n_tokens
        t0 = time.perf_counter()
        o = inorder_nll(loaded.model, *sub, mask_id=loaded.mask_id, batch_size=args.inorder_batch)
        out["seconds_inorder"] = time.perf_counter() - t0
        sub_chars = round(float(o.tokens.sum()) * chars_per_token)
        out["mdlm_inorder_subset"] = {**o.to_dict(), "bits_per_char": o.bits_per(sub_chars)}
        # the ELBO of the same windows, window by window: paired with the in-order values
        es = SequenceNll(_per_window_elbo(loaded, *sub, schedule, args.t_samples), o.tokens)
        out["mdlm_elbo_subset"] = {**es.to_dict(), "bits_per_char": es.bits_per(sub_chars)}
        out["inorder_below_elbo_share"] = float((es.nll > o.nll).double().mean())
        if ar is not None:
            a_sub = causal_nll(ar, *sub)
            out["ar_subset"] = {**a_sub.to_dict(), "bits_per_char": a_sub.bits_per(sub_chars)}
    return out


def _per_window_elbo(loaded, ids, scored, attention, schedule, t_samples) -> torch.Tensor:
    """The ELBO's NLL of each window (its own stratified samples), for paired comparisons."""
    rows = []
    for i in range(ids.shape[0]):
        r = elbo_perplexity(
            MaskedLMParts(loaded.model),
            ids[i : i + 1],
            schedule=schedule,
            mask_id=loaded.mask_id,
            maskable=scored[i : i + 1],
            attention_mask=attention[i : i + 1],
            t_samples=t_samples,
            seed=i,
        )
        rows.append(r.nelbo_per_token * r.tokens)
    return torch.tensor(rows, dtype=torch.float64)


def samples(loaded, ar, seed: int) -> dict:
    """The quickstart's prompts continued by each model: 32 tokens, temperature 0.9, top-p 0.9,
    repetition penalty 1.2, the end token suppressed."""
    tok = loaded.tokenizer
    gen = sample_config(tok, seed)
    mdlm = generate(loaded.model, tok, PROMPTS, gen, schedule=loaded.settings.make_schedule()).texts
    out = {"mdlm": [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, mdlm, strict=True)]}
    if ar is not None:
        torch.manual_seed(seed)
        rows = []
        for p in PROMPTS:
            ids = torch.tensor([with_bos(tok, tok(p, add_special_tokens=False)["input_ids"])])
            with torch.no_grad():
                seq = ar.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    max_new_tokens=32,
                    temperature=0.9,
                    top_p=0.9,
                    repetition_penalty=1.2,
                    suppress_tokens=[tok.eos_token_id],
                    pad_token_id=tok.pad_token_id,
                )
            rows.append(
                {"prompt": p, "completion": tok.decode(seq[0, ids.shape[1] :], skip_special_tokens=True)}
            )
        out["ar"] = rows
    return out


# ----------------------------------------------------------------------------------------------


def run_seed(seed: int, args, train_docs: list[str], heldout: dict[str, list[str]]) -> dict:
    run_dir = Path(args.out) / f"{args.label}-seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a scratch folder: each run starts clean
    run_dir.mkdir(parents=True)
    docs_path = run_dir / "train-docs.jsonl"
    atomic_write_text(
        docs_path, "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in train_docs)
    )

    cfg = quickstart_config(args.minutes, seed)
    cfg.data.sources = [str(docs_path)]
    if args.steps:  # equal optimiser steps instead of equal minutes: immune to a busy machine's load
        cfg.training.max_minutes, cfg.training.max_steps = None, args.steps
    cfg.training.eval_every = 0  # the budget is training only, for both models
    cfg.training.save_every = 0
    cfg = with_overrides(cfg, args.set or [])
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes} min"
    print(f"[seed {seed}] MDLM: {budget} ...", flush=True)
    load = [os.getloadavg()[0]]
    result = train(cfg, run_dir / "mdlm", progress=not args.no_progress)
    load.append(os.getloadavg()[0])
    loaded = load_checkpoint(result.model_dir)
    mdlm_params = sum(p.numel() for p in loaded.model.parameters())
    row: dict = {
        "seed": seed,
        "mdlm_train": {
            k: result.summary.get(k)
            for k in (
                "steps",
                "train_tokens",
                "train_seconds",
                "tokens_per_second",
                "val_elbo_ppl",
                "vocab_size",
            )
        },
        "mdlm_parameters": mdlm_params,
        "mdlm_config": {"training": vars(cfg.training), "diffusion": vars(cfg.diffusion)},
    }
    ar = None
    if not args.no_ar:
        data = prepare_data(cfg, loaded.tokenizer, run_dir / "mdlm" / "data", cfg.training.seed)
        ar = ar_model_like(loaded.model, loaded.tokenizer, seed)
        row["ar_parameters"] = sum(p.numel() for p in ar.parameters())
        print(f"[seed {seed}] AR ({row['ar_parameters']:,} parameters): {budget} ...", flush=True)
        minutes = None if args.steps else args.minutes
        tc = cfg.training
        if args.steps and args.ar_steps:  # equal compute when an AR step costs another share of an MDLM step
            tc = copy.copy(cfg.training)
            tc.max_steps = args.ar_steps
            print(f"[seed {seed}] AR: {args.ar_steps} steps instead", flush=True)
        row["ar_train"] = train_ar(ar, data, tc, minutes, progress=not args.no_progress)
        ar.save_pretrained(run_dir / "ar")  # beside the MDLM's model: a reference for generative perplexity
        loaded.tokenizer.save_pretrained(run_dir / "ar")
        load.append(os.getloadavg()[0])
    row["load_average"] = load  # 1-minute load at the start, after the MDLM, after the AR
    loaded.model.eval()
    row["held_out"] = {}
    for name, texts in heldout.items():
        if texts:
            print(f"[seed {seed}] scoring {name} ...", flush=True)
            n_inorder = args.inorder_windows if name == "held-out documents" else 0
            if n_inorder and block_size_of(loaded.model) is not None:
                # evaluation.sequential unmasks one token at a time over the whole row: an MDLM's order,
                # not a block model's (whose exact likelihood is its bound per block, scored above)
                print(
                    f"[seed {seed}] in-order likelihood skipped: not defined for a block model here",
                    flush=True,
                )
                n_inorder = 0
            row["held_out"][name] = score_text(name, texts, loaded, ar, args, n_inorder)
    row["samples"] = samples(loaded, ar, seed)
    return row


def table(row: dict) -> str:
    m, a = row["mdlm_train"], row.get("ar_train")
    lines = [
        "| model | parameters | optimiser steps | tokens trained | training seconds |",
        "|---|---|---|---|---|",
        f"| MDLM (tiny ModernBERT) | {row['mdlm_parameters']:,} | {m['steps']} | {m['train_tokens']:,} | "
        f"{m['train_seconds']:.0f} |",
    ]
    if a:
        lines.append(
            f"| AR (Llama) | {row['ar_parameters']:,} | {a['steps']} | {a['train_tokens']:,} | "
            f"{a['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "| text | model | estimate | perplexity (± s.e.) | bits / char | ratio to AR ppl |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(name, model, kind, r, ar_ppl):
        lo, hi = (
            math.exp(r["nll_per_token"] - r["stderr_nll"]),
            math.exp(r["nll_per_token"] + r["stderr_nll"]),
        )
        ratio = f"{r['perplexity'] / ar_ppl:.2f}×" if ar_ppl else "—"
        return (
            f"| {name} | {model} | {kind} | {r['perplexity']:,.1f} ({lo:,.1f}–{hi:,.1f}) | "
            f"{r['bits_per_char']:.3f} | {ratio} |"
        )

    for name, h in row["held_out"].items():
        ar_ppl = h["ar"]["perplexity"] if "ar" in h else None
        if "ar" in h:
            lines.append(fmt(name, "AR (Llama)", f"exact, {h['windows']} windows", h["ar"], ar_ppl))
        lines.append(fmt(name, "MDLM", f"ELBO bound, {h['windows']} windows", h["mdlm_elbo"], ar_ppl))
        if "mdlm_inorder_subset" in h:
            n = h["mdlm_inorder_subset"]["windows"]
            sub_ar = h["ar_subset"]["perplexity"] if "ar_subset" in h else None
            if sub_ar:
                lines.append(fmt(name, "AR (Llama)", f"exact, subset of {n}", h["ar_subset"], sub_ar))
            lines.append(fmt(name, "MDLM", f"ELBO bound, subset of {n}", h["mdlm_elbo_subset"], sub_ar))
            lines.append(
                fmt(
                    name, "MDLM", f"in order (left to right), subset of {n}", h["mdlm_inorder_subset"], sub_ar
                )
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget of each model")
    ap.add_argument(
        "--steps", type=int, default=0, help="train each model this many steps instead (0: --minutes)"
    )
    ap.add_argument(
        "--ar-steps",
        type=int,
        default=0,
        help="with --steps: the AR model trains this many steps (0: --steps)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--set", action="append", help="override an MDLM config key (repeatable), as `train --set`"
    )
    ap.add_argument("--label", default="base", help="names the run folders and the JSON row")
    ap.add_argument("--no-ar", action="store_true", help="MDLM only (ablations)")
    ap.add_argument(
        "--heldout-share", type=float, default=0.02, help="share of the corpus' characters held out"
    )
    ap.add_argument(
        "--tquad", type=int, default=24, help="TQuAD paragraphs scored when the shared data exists"
    )
    ap.add_argument("--t-samples", type=int, default=8, help="noise levels per window of the ELBO")
    ap.add_argument("--inorder-windows", type=int, default=16, help="windows scored in order (0: skip)")
    ap.add_argument("--inorder-batch", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run: a few seconds of training, small scoring"
    )
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.t_samples, args.inorder_windows, args.tquad = 0.1, 2, 2, 4
        args.heldout_share = 0.003
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    train_docs, held_docs = split_documents(args.heldout_share)
    heldout = {"held-out documents": held_docs, "TQuAD paragraphs": tquad_paragraphs(args.tquad)}
    print(
        f"{len(train_docs)} training documents, {len(held_docs)} held out "
        f"({sum(map(len, held_docs)):,} characters); TQuAD: {len(heldout['TQuAD paragraphs'])} paragraphs",
        flush=True,
    )
    rows = []
    for seed in args.seeds:
        row = run_seed(seed, args, train_docs, heldout)
        rows.append(row)
        print()
        print(table(row))
        for model, ss in row["samples"].items():
            for s in ss:
                print(f"  {model}: {s['prompt']} | {s['completion']}")
        print()
    result = {
        "label": args.label,
        "minutes": None if args.steps else args.minutes,
        "steps": args.steps or None,
        "ar_steps": (args.ar_steps or args.steps) if args.steps else None,
        "overrides": args.set or [],
        "threads": torch.get_num_threads(),
        "held_out_documents": len(held_docs),
        "held_out_characters": sum(map(len, held_docs)),
        "runs": rows,
        "wall_seconds": time.perf_counter() - t_start,
    }
    out = Path(args.out) / f"quality_at_budget-{args.label}.json"
    atomic_write_json(out, result)
    print(f"wall time {result['wall_seconds']:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
