"""Our block-diffusion training step against dllm's ``BD3LMTrainer``, in one run (issue 23).

    python benchmarks/dllm_bd3lm_speed.py --dllm-python /work/dllm-venv/bin/python --dllm-src /work/dllm-src
    python benchmarks/dllm_bd3lm_speed.py ... --rows 8 --length 128 --block 4 --steps 6 --json out.json

dllm (github ZHZisZZ/dllm) pins transformers 4.57 and our project runs 5.x, so each side runs in its own
virtual environment: this driver starts one worker process per side (``--worker ours`` with this
interpreter, ``--worker dllm`` with ``--dllm-python``, importing dllm from its source checkout
``--dllm-src``) and asks them for one training step at a time, alternating, so machine load hits both
alike; only one of them computes at any moment. Each step is timed inside its worker: the median
*process CPU time* (steadier on a shared machine) and wall time per step after one warm-up step, and
training tokens/s counting L tokens a row (the data rows, not the 2L of the [x_t ; x0] pass).

Ours: ``diffusion.loss.mdlm_loss`` with ``block_size`` (the trainer's defaults: stratified t, sparse
output head on the masked rows) + backward + fused AdamW (as ``training.loop``), on the quickstart's
``tiny`` ModernBERT (``TINY_OVERRIDES``: sliding window +-4), fp32.

dllm: a real ``BD3LMTrainer`` built with its ``BD3LMConfig`` (``use_cpu``, fp32: ``bf16=False``, no
reporting, ``optim="adamw_torch_fused"``) around the model and a word-level tokenizer made in memory
(mask id 4, padding right); each step is ``trainer.training_step`` (its ``compute_loss``: x_t ⊕ x0, a
[1,1,2L,2L] bool mask, shared position ids, then ``accelerator.backward``) + ``optimizer.step`` from
``trainer.create_optimizer()``, without ``trainer.train()``'s loop (data loader, logging, scheduler).
dllm's package ``__init__`` imports its evaluation harness (``lm_eval``), so the worker registers the
``dllm`` packages without running their ``__init__`` and imports only the trainer and model modules.

Models: ``--dllm-model modernbert`` gives dllm transformers 4.57's ``ModernBertForMaskedLM`` of the
same shape (dllm's compute_loss passes a 4D mask, which ModernBERT 4.57 does not take: the error is
reported in the table). ``a2d-qwen3`` / ``a2d-llama`` (dllm's decoders made bidirectional, what its
BD3LM examples train) of the same size: layers, hidden, heads (head dim hidden/heads), MLP, vocabulary,
tied embeddings, randomly initialised. Ours always runs the tiny ModernBERT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPE = dict(hidden=256, layers=4, heads=4, mlp=512, window=8)  # presets "tiny" + TINY_OVERRIDES
MASK_ID = 4


def _data(args):
    import torch

    torch.manual_seed(0)
    return torch.randint(5, args.vocab, (args.rows, args.length))


def _ours(args):
    import torch
    from transformers import ModernBertForMaskedLM

    from diffutron.diffusion import get_schedule, mdlm_loss
    from diffutron.models.heads import MaskedLMParts
    from diffutron.models.presets import preset_config
    from diffutron.recipes.quickstart import TINY_OVERRIDES

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(preset_config("tiny", None, vocab_size=args.vocab, **TINY_OVERRIDES))
    parts = MaskedLMParts(model.train())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    ids = _data(args)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    schedule = get_schedule("linear")
    n = sum(p.numel() for p in model.parameters())
    state = {"step": 0}

    def step():
        g = torch.Generator().manual_seed(state["step"])
        state["step"] += 1
        out = mdlm_loss(
            parts, ids, maskable, schedule=schedule, mask_id=MASK_ID, generator=g, block_size=args.block
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    import transformers

    return step, {"model": "ModernBertForMaskedLM (tiny)", "params": n, "versions": _versions(transformers)}


def _versions(transformers):
    import torch

    return f"torch {torch.__version__}, transformers {transformers.__version__}"


def _dllm_imports(src):
    """The trainer and model modules, without dllm's package ``__init__`` (it imports lm_eval)."""
    import importlib
    import types

    sys.path.insert(0, src)
    for pkg in (
        "dllm",
        "dllm.core",
        "dllm.utils",
        "dllm.core.trainers",
        "dllm.pipelines",
        "dllm.pipelines.a2d",
    ):
        mod = types.ModuleType(pkg)
        mod.__path__ = [os.path.join(src, *pkg.split("."))]
        sys.modules[pkg] = mod
    return importlib.import_module("dllm.core.trainers.bd3lm")


def _dllm_model(args, transformers):
    import importlib

    common = dict(
        vocab_size=args.vocab,
        hidden_size=SHAPE["hidden"],
        num_hidden_layers=SHAPE["layers"],
        num_attention_heads=SHAPE["heads"],
        intermediate_size=SHAPE["mlp"],
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    if args.dllm_model == "modernbert":
        cfg = transformers.ModernBertConfig(
            **common,
            local_attention=SHAPE["window"],
            global_attn_every_n_layers=3,
            cls_token_id=2,
            sep_token_id=1,
        )
        return transformers.ModernBertForMaskedLM(cfg)
    family = args.dllm_model.split("-")[1]  # qwen3 / llama
    m = importlib.import_module(f"dllm.pipelines.a2d.models.{family}.modeling_{family}")
    name = {"qwen3": "Qwen3", "llama": "Llama"}[family]
    extra = dict(num_key_value_heads=SHAPE["heads"], head_dim=SHAPE["hidden"] // SHAPE["heads"])
    cfg = getattr(m, f"A2D{name}Config")(**common, **extra)
    return getattr(m, f"A2D{name}LMHeadModel")(cfg)


def _dllm(args):
    import tempfile

    import torch
    import transformers
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    bd3lm = _dllm_imports(args.dllm_src)
    torch.manual_seed(0)
    model = _dllm_model(args, transformers)
    names = ["[PAD]", "[EOS]", "[BOS]", "[UNK]", "[MASK]"] + [f"t{i}" for i in range(5, args.vocab)]
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({w: i for i, w in enumerate(names)}, unk_token="[UNK]")),
        pad_token="[PAD]",
        eos_token="[EOS]",
        bos_token="[BOS]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        padding_side="right",
    )
    assert tok.mask_token_id == MASK_ID
    cfg = bd3lm.BD3LMConfig(
        output_dir=tempfile.mkdtemp(prefix="dllm-bench-"),
        block_size=args.block,
        use_cpu=True,
        bf16=False,
        report_to="none",
        optim="adamw_torch_fused",
        learning_rate=1e-3,
        weight_decay=0.0,
        per_device_train_batch_size=args.rows,
        eval_strategy="no",
        save_strategy="no",
        max_steps=args.steps + 1,
    )
    trainer = bd3lm.BD3LMTrainer(args=cfg, model=model.train(), processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1  # set by trainer.train()'s loop
    opt = trainer.create_optimizer()
    ids = _data(args)
    inputs = {"input_ids": ids, "labels": ids.clone()}
    n = sum(p.numel() for p in model.parameters())

    def step():
        loss = trainer.training_step(model, dict(inputs))
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    kind = f"{type(model).__name__} (attn {model.config._attn_implementation})"
    return step, {"model": kind, "params": n, "versions": _versions(transformers)}


def worker(args) -> None:
    """Build one side, then answer each line on stdin with one timed training step as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    try:
        step, info = (_ours if args.worker == "ours" else _dllm)(args)
    except Exception as e:  # noqa: BLE001 - reported to the driver
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return
    print(json.dumps(info), flush=True)
    for _ in sys.stdin:
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            loss = step()
        except Exception as e:  # noqa: BLE001
            import traceback

            tb = traceback.extract_tb(e.__traceback__)[-3:]
            where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(tb))
            print(json.dumps({"error": f"{type(e).__name__}: {e} (at {where})"}), flush=True)
            return
        print(
            json.dumps({"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "loss": loss}),
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dllm-python", default="/work/dllm-venv/bin/python")
    ap.add_argument("--dllm-src", default="/work/dllm-src", help="a checkout of ZHZisZZ/dllm")
    ap.add_argument(
        "--dllm-model",
        nargs="+",
        default=["modernbert", "a2d-qwen3"],
        choices=["modernbert", "a2d-qwen3", "a2d-llama"],
    )
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=6, help="measured steps, after one warm-up step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", choices=["ours", "dllm"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.dllm_model = args.dllm_model[0]
        worker(args)
        return
    base = [
        *("--rows", str(args.rows), "--length", str(args.length), "--block", str(args.block)),
        *("--vocab", str(args.vocab), "--threads", str(args.threads), "--steps", str(args.steps)),
        *("--dllm-src", args.dllm_src),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    sides = [("ours", sys.executable, "modernbert")] + [
        ("dllm", args.dllm_python, m) for m in args.dllm_model
    ]
    procs, info, times = {}, {}, {}
    for who, python, model in sides:  # built one after another; idle workers wait on stdin
        name = "ours" if who == "ours" else f"dllm {model}"
        cmd = [python, os.path.abspath(__file__), "--worker", who, "--dllm-model", model, *base]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        info[name] = _reply(p)
        times[name] = []
        if "error" in info[name]:
            p.stdin.close()
            p.wait()
        else:
            procs[name] = p
    for rnd in range(args.steps + 1):
        order = list(procs) if rnd % 2 == 0 else list(reversed(procs))
        for name in order:
            p = procs[name]
            if p.poll() is not None or "error" in info[name]:
                continue
            p.stdin.write("step\n")
            p.stdin.flush()
            r = _reply(p)
            if "error" in r:
                info[name]["error"] = r["error"]
            elif rnd:  # round 0 is the warm-up
                times[name].append(r)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    _report(args, info, times)


def _reply(p) -> dict:
    line = p.stdout.readline()
    if not line:
        return {"error": f"worker exited with code {p.wait()} before answering"}
    return json.loads(line)


def _report(args, info, times) -> None:
    tokens = args.rows * args.length
    rows = []
    for name, t in times.items():
        row = {"side": name, **info[name]}
        if t:
            c = statistics.median(x["cpu"] for x in t)
            w = statistics.median(x["wall"] for x in t)
            row.update(
                cpu_s=c,
                wall_s=w,
                tok_per_cpu_s=tokens / c,
                tok_per_wall_s=tokens / w,
                last_loss=t[-1]["loss"],
            )
        rows.append(row)
    ours = rows[0].get("cpu_s")
    print(
        f"rows {args.rows} x L {args.length}, block {args.block}, vocab {args.vocab}, "
        f"{SHAPE['layers']} layers x {SHAPE['hidden']} hidden x {SHAPE['heads']} heads, MLP {SHAPE['mlp']}, "
        f"{args.threads} thread(s), median of {args.steps} steps after 1 warm-up; tokens = rows x L"
    )
    print(
        "| side | model | params | CPU s/step | wall s/step | tokens/CPU s | tokens/wall s | CPU s ours/this |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        if "cpu_s" not in r:
            n = f"{r['params'] / 1e6:.2f}M" if "params" in r else "-"
            print(f"| {r['side']} | {r.get('model', '-')} | {n} | failed: {r['error']} | | | | |")
            continue
        ratio = ours / r["cpu_s"] if ours else float("nan")
        r["ratio_ours_over_this_cpu"] = ratio
        print(
            f"| {r['side']} | {r['model']} | {r['params'] / 1e6:.2f}M | {r['cpu_s']:.3f} | {r['wall_s']:.3f} "
            f"| {r['tok_per_cpu_s']:.0f} | {r['tok_per_wall_s']:.0f} | {ratio:.2f} |"
        )
    for r in rows:
        print(f"{r['side']}: {r.get('versions', '')}")
    out = {
        "rows": args.rows,
        "length": args.length,
        "block": args.block,
        "vocab": args.vocab,
        "results": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
