"""One prepared GPU check: training step, sampler and evaluation throughput in a single JSON.

    bash benchmarks/gpu_check.sh                     # on a lent GPU, < 5 minutes; writes gpu_check.json
    bash benchmarks/gpu_check.sh --cpu-smoke         # the same code paths at toy size on a CPU (a test runs this)

What it measures (the published shape unless ``--cpu-smoke``):
  1. training: ``mmbert-base`` with a synthetic 256k-token vocabulary, length 512, bf16 autocast, the
     MDLM loss with the head at masked rows: tokens/s and model FLOP utilisation (useful FLOPs per
     second over a bf16 matrix-multiply peak measured in the same run), full fine-tuning and LoRA
     r=256 alpha=256, each with ``torch.compile`` of the encoder off and on (``--compile``);
  2. the sampler in each precision (fp32, bf16, fp16; bf16 weights, as ``generate --dtype``), at the
     ``diffutron`` and ``fast`` presets, without and with the key/value cache (``dual``), batch 1
     and 16: new tokens/s and forward passes per answer (random weights: the speed, not the text);
  3. evaluation: multiple-choice items/s on the XCOPA-tr fixture (32 Monte-Carlo samples per choice).
Every row also holds ``max_memory_bytes`` (``torch.cuda.max_memory_allocated`` over that row) and
``sync_warnings`` (host synchronisations reported by ``torch.cuda.set_sync_debug_mode("warn")``); both
are null on a CPU. The JSON is rewritten (atomically) after every row, so a crash keeps what ran; a
section that fails records its error and the others still run (exit status 1 at the end).
With ``--cpu-smoke`` everything runs on the CPU with a micro model, a 1,000-token vocabulary, length
64 and a few steps (compile through dynamo with the ``eager`` backend: traced, no code generated), so
a test proves the script works before a GPU is ever lent. The CUDA generator of the training step is
built exactly as on a GPU, with ``device="cpu"``.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_shape import synthetic_tokenizer  # noqa: E402
from train_throughput import useful_flops_per_step  # noqa: E402

from diffutron.config import LoraConfig  # noqa: E402
from diffutron.diffusion import get_schedule, mdlm_loss  # noqa: E402
from diffutron.io import atomic_write_json  # noqa: E402
from diffutron.models import MaskedLMParts, preset_config  # noqa: E402
from diffutron.models.lora import apply_lora  # noqa: E402

MICRO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "eval"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def measured(device: str, row: dict):
    """Adds ``max_memory_bytes`` and ``sync_warnings`` to ``row`` (null on a CPU). Warnings of
    ``set_sync_debug_mode("warn")`` name each host synchronisation: the count shows whether a
    loop waits on the device every step."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield row
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    row["sync_warnings"] = sum("synchroniz" in str(w.message) for w in caught) if cuda else None
    row["max_memory_bytes"] = torch.cuda.max_memory_allocated() if cuda else None


def matmul_peak(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def train_step_rate(
    model_cfg, tok, device, dtype, batch, length, steps, lora: bool, peak: float, compile_options: dict | None
) -> dict:
    """``compile_options``: None = eager; else ``torch.compile`` options for the encoder."""
    from transformers import ModernBertForMaskedLM

    torch.manual_seed(0)
    model = ModernBertForMaskedLM(model_cfg)
    if lora:
        model = apply_lora(model, LoraConfig(enabled=True, r=256, alpha=256))
    model.to(device).train()
    parts = MaskedLMParts(model)
    if compile_options is not None:
        parts.compile_encoder(**compile_options)
    opt = torch.optim.AdamW([p for p in parts.parameters() if p.requires_grad], lr=1e-4)
    schedule = get_schedule("linear")
    g = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(10, model_cfg.vocab_size, (batch, length), device=device, generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    masked = 0
    times = []
    for i in range(steps + 2):  # two warm-up steps, not timed
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            out = mdlm_loss(parts, ids, maskable, schedule=schedule, mask_id=tok.mask_token_id, generator=g)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
            masked += out.n_masked
    secs = sum(times)
    flops = useful_flops_per_step(model_cfg, batch, length, masked / steps) * steps
    del model, parts, opt
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "lora": lora,
        "compile": compile_options is not None,
        "batch": batch,
        "length": length,
        "steps_timed": steps,
        "seconds_per_step": secs / steps,
        "tokens_per_second": batch * length * steps / secs,
        "model_flops_per_second": flops / secs,
        "mfu": flops / secs / peak,
        "loss": float(out.loss.detach()),
    }


def sampler_rates(model, tok, device, new_tokens: int, batches: list[int], rows: list[dict], save) -> None:
    """Appends a row to ``rows`` for each preset, cache and batch of one model (one precision), and
    calls ``save()`` after each."""
    from diffutron.sampling import generate, preset

    prompts = ["Ankara Türkiye Cumhuriyeti'nin", "Öğretmenimiz bugün bize"]
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    for name in ("diffutron", "fast"):
        for cache in ("none", "dual"):
            block = min(32, new_tokens)
            cfg = preset(name, max_new_tokens=new_tokens, block_size=block, steps=new_tokens, cache=cache)
            for b in batches:
                batch = [prompts[i % len(prompts)] for i in range(b)]
                kw = dict(schedule=get_schedule("linear"), mask_id=tok.mask_token_id)
                generate(model, tok, batch[:1], cfg, **kw)
                row = {"dtype": dtype, "preset": name, "cache": cache, "batch": b}
                with measured(device, row):
                    _sync(device)
                    t0 = time.perf_counter()
                    out = generate(model, tok, batch, cfg, **kw)
                    _sync(device)
                    secs = time.perf_counter() - t0
                row.update(
                    {
                        "new_tokens": sum(len(x) for x in out.token_ids),
                        "tokens_per_second": b * new_tokens / secs,
                        "forward_passes": out.forward_passes,
                        "seconds": secs,
                    }
                )
                rows.append(row)
                save()
                print(
                    f"sampler {dtype} {name} cache={cache} batch {b}: {row['tokens_per_second']:,.1f} tokens/s, "
                    f"{row['forward_passes']} passes",
                    flush=True,
                )


def eval_rate(model, tok, device, samples: int) -> dict:
    from diffutron.evaluation import EvalConfig, evaluate, resolve_tasks
    from diffutron.models.checkpoint import DiffusionSettings, Loaded

    loaded = Loaded(model=model, tokenizer=tok, settings=DiffusionSettings(mask_token_id=tok.mask_token_id))
    t0 = time.perf_counter()
    res = evaluate(
        loaded, resolve_tasks("xcopa_tr"), EvalConfig(samples=samples, batch_size=64, data_dir=str(FIXTURES))
    )
    _sync(device)
    r = res.tasks["xcopa_tr"].to_dict()
    return {
        "task": "xcopa_tr (fixture)",
        "items": r["n"],
        "samples": samples,
        "error": r["error"],
        "items_per_second": r["n"] / (time.perf_counter() - t0),
        "forward_passes": r["forward_passes"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU: proves the code paths")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--batch", type=int, help="training batch (default 16; smoke 2)")
    ap.add_argument("--steps", type=int, help="timed training steps (default 10; smoke 1)")
    ap.add_argument(
        "--compile",
        choices=["both", "off", "on"],
        default="both",
        help="training with torch.compile (default both)",
    )
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    smoke = args.cpu_smoke
    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    if not smoke and device == "cpu":
        raise SystemExit("no CUDA device: run with --cpu-smoke, or on a GPU machine")
    if device == "cuda":  # as the inference commands do (models.checkpoint.load_for_inference)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = torch.float32 if smoke else torch.bfloat16
    precisions = [torch.float32, torch.bfloat16] + ([] if smoke else [torch.float16])
    compile_options = {"backend": "eager"} if smoke else {}
    compiles = {"both": [None, compile_options], "off": [None], "on": [compile_options]}[args.compile]
    tok = synthetic_tokenizer(1000 if smoke else 256_000)
    overrides = dict(MICRO, max_position_embeddings=128) if smoke else {}
    model_cfg = preset_config("tiny" if smoke else "mmbert-base", tok, **overrides)
    length = 64 if smoke else 512
    batch = args.batch or (2 if smoke else 16)
    steps = args.steps or (1 if smoke else 10)
    out = Path(args.out)
    report: dict = {
        "mode": "cpu-smoke" if smoke else "gpu",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "complete": False,
        "errors": {},
        "model": {
            "preset": "tiny (micro)" if smoke else "mmbert-base",
            "vocab_size": len(tok),
            "parameters": None,
        },
        "train": [],
        "sampler": [],
    }

    def save() -> None:
        report["wall_seconds"] = time.perf_counter() - t_start
        atomic_write_json(out, report)

    @contextlib.contextmanager
    def section(name: str):
        """A failing section records its error (and the JSON so far) and the next one runs."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - any failure of a section is a result to keep
            report["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            print(f"{name}: FAILED ({type(exc).__name__}: {exc})", flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()  # an out-of-memory section leaves its blocks cached
        save()

    with section("matmul_peak"):
        report["matmul_peak_flops"] = matmul_peak(device, dtype, 256 if smoke else 8192, 3 if smoke else 50)
        report["matmul_dtype"] = str(dtype)
    peak = report.get("matmul_peak_flops") or float("nan")
    for opts in compiles:
        for lora in (False, True):
            with section(f"train lora={lora} compile={opts is not None}"):
                row: dict = {}
                with measured(device, row):
                    row.update(
                        train_step_rate(model_cfg, tok, device, dtype, batch, length, steps, lora, peak, opts)
                    )
                report["train"].append(row)
                print(
                    f"train lora={lora} compile={row['compile']}: {row['tokens_per_second']:,.0f} tokens/s, "
                    f"MFU {row['mfu']:.1%}",
                    flush=True,
                )

    from transformers import ModernBertForMaskedLM

    torch.manual_seed(0)
    base = ModernBertForMaskedLM(model_cfg).eval()
    report["model"]["parameters"] = sum(p.numel() for p in base.parameters())
    for precision in precisions:
        with section(f"sampler {precision}"):
            model = base.to(device=device, dtype=precision)
            batches = [1, 4] if smoke else [1, 16]
            sampler_rates(model, tok, device, 8 if smoke else 64, batches, report["sampler"], save)
    with section("eval"):
        model = base.to(device=device, dtype=dtype)
        row = {}
        with measured(device, row):
            row.update(eval_rate(model, tok, device, 2 if smoke else 32))
        report["eval"] = row
        print(f"eval: {row['items_per_second']:.2f} items/s", flush=True)
    report["complete"] = not report["errors"]
    save()
    print(
        f"wrote {out} ({report['wall_seconds']:.0f} s)"
        + (f", FAILED: {list(report['errors'])}" if report["errors"] else "")
    )
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
