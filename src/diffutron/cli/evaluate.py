"""``diffutron eval``, ``diffutron perplexity`` and ``diffutron lm-eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import add_device_flags


def _list_tasks() -> int:
    from ..evaluation.tasks import GROUPS, TASKS

    for name, t in TASKS.items():
        source = t.hub.path if t.hub else f"package {t.package}"
        print(f"{name:44s} {t.kind:16s} {t.split:19s} {','.join(t.metrics):24s} {source}")
    print()
    for name, members in GROUPS.items():
        print(f"group {name}: {', '.join(members)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.list_tasks:
        return _list_tasks()
    if not args.model:
        raise ValueError("give a model folder or hub id (or --list-tasks)")
    from ..evaluation import EvalConfig, evaluate, resolve_tasks
    from ..evaluation.report import markdown_report, plot_comparison
    from ..models.checkpoint import load_for_inference

    tasks = resolve_tasks(args.tasks)
    files = {}
    for spec in args.data_file or []:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"--data-file expects TASK=PATH, got {spec!r}")
        files[name.strip()] = path.strip()
    config = EvalConfig(
        samples=args.samples,
        batch_size=args.batch_size,
        seed=args.seed,
        limit=args.limit,
        sample=args.sample,
        data_dir=args.data_dir,
        data_files=files,
        split=args.split,
        dataset_revision=args.dataset_revision,
        enumerate_small=not args.no_enumerate,
        max_length=args.max_length,
        max_new_tokens=args.max_new_tokens,
        gen_steps=args.gen_steps,
        gen_block_size=args.gen_block_size,
        log_items=args.log_items,
    )
    loaded = load_for_inference(args.model, device=args.device, dtype=args.dtype, revision=args.revision)
    results = evaluate(loaded, tasks, config, progress=not args.quiet)
    data = results.to_dict()
    report = markdown_report(data)
    print(report)
    if args.output:
        out = results.save(args.output)
        md = Path(args.report) if args.report else out.with_suffix(".md")
        md.write_text(report, encoding="utf-8")
        written = [str(out), str(md)]
        try:
            written.append(
                str(plot_comparison(data, Path(args.plot) if args.plot else out.with_suffix(".png")))
            )
        except ValueError:
            pass  # no multiple-choice task with an accuracy: nothing to plot
        print("wrote " + ", ".join(written))
    failed = [k for k, v in data["tasks"].items() if v["error"]]
    if failed and len(failed) == len(tasks):
        # found by the fuzz suite: the reasons were only in the report, the exit status said nothing
        reasons = "; ".join(f"{k}: {data['tasks'][k]['error']}" for k in failed)
        print(f"diffutron: error: no task could be evaluated ({reasons})", file=sys.stderr)
        return 1
    return 0


def _perplexity(args: argparse.Namespace) -> int:
    from ..data.sources import DataReport, iter_documents
    from ..evaluation import text_perplexity
    from ..models.checkpoint import load_for_inference

    loaded = load_for_inference(args.model, device=args.device, dtype=args.dtype, revision=args.revision)
    report = DataReport()
    docs = (d for src in args.sources for d in iter_documents(src, report))
    r = text_perplexity(
        loaded.model,
        loaded.tokenizer,
        docs,
        mask_id=loaded.mask_id,
        schedule=loaded.settings.make_schedule(),
        t_samples=args.t_samples,
        max_length=args.max_length,
        context_length=loaded.settings.context_length,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps({"model": args.model, "sources": args.sources, **r.to_dict()}, ensure_ascii=False))
    else:
        print(
            f"ELBO perplexity {r.perplexity:,.2f} (NELBO {r.nelbo_per_token:.4f} ± {r.stderr_nelbo:.4f} nats/token, "
            f"{r.t_samples} t samples)\n"
            f"bits per byte {r.bits_per_byte:.4f} ± {r.stderr_bits_per_byte:.4f}, bits per character "
            f"{r.bits_per_char:.4f}\n"
            f"{r.documents:,} documents, {r.tokens:,} tokens in {r.windows:,} windows, {r.bytes:,} bytes"
        )
        if report.n_problems:
            print(report.summary())
    return 0


def _lm_eval(args: argparse.Namespace) -> int:
    try:
        from ..evaluation import harness
    except ImportError as exc:
        raise RuntimeError(f"lm-eval is not installed ({exc}): pip install lm-eval") from None
    return harness.main(args.args)


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on CETVEL tasks (multiple choice by the MC ELBO)")
    p.add_argument("model", nargs="?", help="model folder or hub id")
    p.add_argument(
        "--tasks", default="diffutron", help="task and group names, comma-separated (default: diffutron)"
    )
    p.add_argument("--list-tasks", action="store_true", help="list tasks and groups and exit")
    p.add_argument(
        "--data-dir", help="local data: DIR/<task>/ or DIR/ with release file names or {split}.jsonl"
    )
    p.add_argument(
        "--data-file", action="append", metavar="TASK=PATH", help="an explicit file or folder for one task"
    )
    p.add_argument("--split", help="score this split instead of each task's CETVEL split")
    p.add_argument("--limit", type=int, help="score the first N items of each task (as lm-eval)")
    p.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="score N items of each task drawn at random (seeded by --seed)",
    )
    p.add_argument("--samples", type=int, default=32, help="Monte-Carlo samples per choice (default 32)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass (default 32)")
    p.add_argument("--no-enumerate", action="store_true", help="sample even where the exact ELBO is as cheap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, help="tokens per sequence (default: the model's context)")
    p.add_argument("--max-new-tokens", type=int, help="generation tasks (default: the task's, 64)")
    p.add_argument("--gen-steps", type=int, help="generation steps (default: one per new token)")
    p.add_argument("--gen-block-size", type=int, default=32)
    p.add_argument("--dataset-revision", help="hub dataset revision (commit) for every hub task")
    p.add_argument("--revision", help="model revision on the hub")
    add_device_flags(p)
    p.add_argument("--output", help="results JSON; a markdown table and a bar chart are written next to it")
    p.add_argument("--report", help="markdown path (default: OUTPUT with .md)")
    p.add_argument("--plot", help="bar chart path (default: OUTPUT with .png)")
    p.add_argument("--log-items", help="write every item's prompt, scores and prediction to this JSONL")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_eval)

    p = sub.add_parser("perplexity", help="ELBO perplexity (and bits per byte) of text files or datasets")
    p.add_argument("model", help="model folder or hub id")
    p.add_argument("sources", nargs="+", help="text sources: file.txt, file.jsonl, dir/, hub:<id>, embedded")
    p.add_argument("--t-samples", type=int, default=8, help="stratified noise levels per window (default 8)")
    p.add_argument(
        "--max-length",
        type=int,
        help="window length in tokens (default: the training length in the checkpoint, else the context)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--revision", help="model revision on the hub")
    add_device_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_perplexity)

    # prefix_chars="+": every "--option" after the command belongs to lm_eval, none to us.
    p = sub.add_parser(
        "lm-eval",
        help="the stock lm_eval command line with the diffutron model registered",
        prefix_chars="+",
        add_help=False,
        description="Arguments go to lm_eval unchanged, e.g. --model diffutron --model_args "
        "pretrained=DIR,mc_samples=32 --tasks xcopa_tr --include_path cetvel/tasks",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="lm_eval arguments")
    p.set_defaults(func=_lm_eval)
