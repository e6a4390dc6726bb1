"""Multiple-choice scoring throughput: Diffutron's batched MC ELBO against the naive estimator.

    python benchmarks/eval_mc.py --model runs/quickstart/model              # turkmorfbench, 40 items
    python benchmarks/eval_mc.py --model M --task turkish_plu_step_inference \\
        --data-file ../shared/data/turkish_plu_val/step-inference-val.minus_test_items.csv

Three ways to score the same items (every choice, ``--samples`` Monte-Carlo samples), in one run:
  naive     one forward pass per sample per choice, output head on every position
            (``likelihood.reference_loglikelihood``);
  batched   samples x choices x items in passes of ``--batch-size`` rows, head only on masked
            answer positions, samples that drew the same mask share a row; the same masks as
            naive, so the same numbers (the script prints the largest difference);
  diffutron batched + exact enumeration of short answers (2^L - 1 <= samples): the default.
            Exact (no Monte-Carlo noise) for short answers, at up to 2^L - 1 rows per choice.
Prints items/s, forward passes per item and the ratios against naive, as a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from diffutron.evaluation.likelihood import ContinuationScorer, LikelihoodConfig, reference_loglikelihood
from diffutron.evaluation.metrics import argmax
from diffutron.evaluation.sources import load_task_data
from diffutron.evaluation.tasks import get_task, render
from diffutron.models.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--task", default="turkmorfbench")
    ap.add_argument("--data-file")
    ap.add_argument("--split")
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_checkpoint(args.model, device="cpu")
    task = get_task(args.task)
    data = load_task_data(task, data_file=args.data_file, split=args.split, limit=args.items)
    rendered = [render(task, item.fields) for item in data.items]
    requests = [(r.prompt, task.delimiter + c) for r in rendered for c in r.choices]
    golds = [r.gold for r in rendered]

    def accuracy(lls: list[float]) -> float:
        hits, offset = 0, 0
        for r in rendered:
            hits += argmax(lls[offset : offset + len(r.choices)]) == r.gold
            offset += len(r.choices)
        return hits / len(golds)

    rows = {}
    for name, enumerate_small in (("batched", False), ("diffutron", True)):
        cfg = LikelihoodConfig(
            samples=args.samples, batch_size=args.batch_size, seed=args.seed, enumerate_small=enumerate_small
        )
        scorer = ContinuationScorer(loaded.model, loaded.tokenizer, mask_id=loaded.mask_id, config=cfg)
        scorer.score(requests[:4])  # warm-up
        t0 = time.perf_counter()
        out = scorer.score(requests)
        rows[name] = (time.perf_counter() - t0, out.forward_passes, out.rows, out.loglikelihoods)
    t0 = time.perf_counter()
    naive_lls, naive_passes = reference_loglikelihood(
        loaded.model, loaded.tokenizer, requests, mask_id=loaded.mask_id, samples=args.samples, seed=args.seed
    )
    rows["naive"] = (time.perf_counter() - t0, naive_passes, naive_passes, naive_lls)
    diff = max(abs(a - b) for a, b in zip(rows["batched"][3], naive_lls, strict=True))

    n = len(rendered)
    answer_tokens = [
        len(loaded.tokenizer(task.delimiter + c, add_special_tokens=False)["input_ids"])
        for r in rendered
        for c in r.choices
    ]
    print(
        f"model {args.model} ({sum(p.numel() for p in loaded.model.parameters()) / 1e6:.1f}M parameters), "
        f"task {task.name} ({data.source}), {n} items, {len(requests)} choices, "
        f"{sum(answer_tokens) / len(answer_tokens):.1f} answer tokens per choice on average; "
        f"{args.samples} samples, batch {args.batch_size} rows; CPU {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| method | items/s | forward passes / item | rows / item | accuracy | speed-up vs naive |")
    print("|---|---|---|---|---|---|")
    base = n / rows["naive"][0]
    for name in ("naive", "batched", "diffutron"):
        seconds, passes, nrows, lls = rows[name]
        print(
            f"| {name} | {n / seconds:.2f} | {passes / n:.2f} | {nrows / n:.1f} | {accuracy(lls):.3f} | "
            f"{n / seconds / base:.1f}x |"
        )
    print()
    print(f"max |batched - naive| log-likelihood: {diff:.2e} (same masks: the same estimator)")


if __name__ == "__main__":
    main()
