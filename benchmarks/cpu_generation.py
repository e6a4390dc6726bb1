"""Generation at the published shape on a CPU: fp32, bf16 (weights or autocast), int8, with and without
threshold decoding and the dual cache.

    python benchmarks/cpu_generation.py [--new 32] [--prompt 256] [--batch 1] [--variants ...]

The model is ``published_shape.py``'s: mmBERT-base with a synthetic 256,000-token tokenizer, random
N(0, 0.02) weights (speed and memory do not depend on the values). Each variant runs in its own process
(peak memory is its own) on the same ``--prompt`` random tokens and ``--batch`` rows, greedy
(temperature 0), blocks of 32:

* ``fp32-plain``: the plain sampler, one token per pass, no cache (``preset("diffutron")``);
* ``fp32-fast``: threshold decoding (0.9) with the dual cache (``preset("fast", cache="dual")``);
* ``bf16-plain`` / ``bf16-fast``: the same with the weights cast to bf16 (what ``--dtype bf16`` loads);
* ``autocast-fast``: fp32 weights under ``torch.autocast("cpu", bfloat16)``;
* ``int8-fast``: ``torch.ao.quantization.quantize_dynamic`` of every ``nn.Linear`` (qint8), fp32 else.

A random model is never 90 % sure of a token, so on it threshold decoding commits one token per pass
like the plain sampler: the ``fast`` rows measure the cache and the precision, not fewer passes (a trained
model's passes per token under threshold decoding are measured in docs/benchmarks.md). Reported: new
tokens/s (batch x new tokens / seconds), passes, peak RSS over the loaded model (``VmHWM`` reset after
loading), and against fp32 on one forward pass of the same noised input: the largest logit error
relative to the largest logit, and the share of masked positions whose argmax agrees.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from published_shape import _rss_kb, random_model, synthetic_tokenizer  # noqa: E402

VARIANTS = ("fp32-plain", "fp32-fast", "bf16-plain", "bf16-fast", "autocast-fast", "int8-fast")


def make(variant: str):
    import torch

    tok = synthetic_tokenizer()
    model = random_model(tok).eval()
    if variant.startswith("bf16"):
        model = model.to(torch.bfloat16)
    elif variant.startswith("int8"):
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return tok, model


def prompts(tok, batch: int, length: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(40, len(tok), (batch, length), generator=g).tolist()


def run_variant(variant: str, new: int, batch: int, length: int) -> dict:
    import contextlib

    import torch

    from diffutron.diffusion import get_schedule
    from diffutron.sampling import generate, preset

    torch.manual_seed(0)
    tok, model = make(variant)
    name = "diffutron" if variant.endswith("plain") else "fast"
    cfg = preset(
        name,
        max_new_tokens=new,
        steps=new,
        block_size=min(32, new),
        temperature=0.0,
        repetition_penalty=1.0,
        cache="none" if name == "diffutron" else "dual",
    )
    rows = prompts(tok, batch, length)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if variant.startswith("autocast")
        else contextlib.nullcontext()
    )
    loaded_kb = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    with autocast:
        out = generate(model, tok, rows, cfg, schedule=get_schedule("linear"), mask_id=tok.mask_token_id)
    seconds = time.perf_counter() - t0
    return {
        "variant": variant,
        "new_tokens": new,
        "batch": batch,
        "seconds": seconds,
        "tokens_per_s": batch * new / seconds,
        "forward_passes": out.forward_passes,
        "loaded_rss_gb": loaded_kb / 2**20,
        "extra_peak_gb": (_rss_kb("VmHWM") - loaded_kb) / 2**20,
        "token_ids": out.token_ids,
    }


def compare(length: int) -> dict:
    """One forward pass of a half-masked input: each low-precision variant's logits against fp32."""
    import torch

    tok, model = make("fp32")
    ids = torch.tensor(prompts(tok, 1, length))
    ids[:, length // 2 :] = tok.mask_token_id
    masked = ids == tok.mask_token_id
    with torch.no_grad():
        ref = model(input_ids=ids).logits[masked].double()
        outs = {}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs["autocast"] = model(input_ids=ids).logits[masked].double()
        q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        outs["int8"] = q(input_ids=ids).logits[masked].double()
        del q
        outs["bf16"] = model.to(torch.bfloat16)(input_ids=ids).logits[masked].double()
    scale = ref.abs().max()
    top2 = ref.topk(2, dim=-1).values
    return {
        "fp32_top1_top2_margin_median": float((top2[:, 0] - top2[:, 1]).median() / scale),
        **{
            k: {
                "max_rel_logit_error": float((v - ref).abs().max() / scale),
                "argmax_agreement": float((v.argmax(-1) == ref.argmax(-1)).double().mean()),
            }
            for k, v in outs.items()
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-compare", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_variant(args.worker, args.new, args.batch, args.prompt)))
        return 0
    if args.compare:
        print("RESULT " + json.dumps(compare(args.prompt)))
        return 0

    def sub(*extra: str) -> dict:
        cmd = [
            sys.executable,
            __file__,
            *extra,
            "--new",
            str(args.new),
            "--batch",
            str(args.batch),
            "--prompt",
            str(args.prompt),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not lines:
            raise RuntimeError(f"{extra} failed:\n{out.stderr[-3000:]}")
        return json.loads(lines[-1][7:])

    rows = []
    for v in args.variants.split(","):
        rows.append(sub("--worker", v))
        r = rows[-1]
        print(
            f"{v}: {r['tokens_per_s']:.2f} tok/s, {r['forward_passes']} passes, {r['seconds']:.1f} s, "
            f"loaded {r['loaded_rss_gb']:.2f} GB, extra peak {r['extra_peak_gb']:.2f} GB",
            flush=True,
        )
    base = next((r for r in rows if r["variant"] == "fp32-plain"), rows[0])
    ref = next((r for r in rows if r["variant"] == "fp32-fast"), None)
    print(f"\nmmbert-base, 256k vocabulary, prompt {args.prompt}, {args.new} new tokens, batch {args.batch}")
    print(
        "| variant | tokens/s | vs fp32 plain | passes | loaded RSS | extra peak | greedy tokens = fp32 same setting |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        same = ref if r["variant"].endswith("fast") else base
        agree = "—"
        if same is not None and r is not same:
            a = [t for row in same["token_ids"] for t in row]
            b = [t for row in r["token_ids"] for t in row]
            agree = f"{sum(x == y for x, y in zip(a, b, strict=False)) / len(a):.0%}"
        print(
            f"| {r['variant']} | {r['tokens_per_s']:.2f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
            f"{r['forward_passes']} | {r['loaded_rss_gb']:.2f} GB | {r['extra_peak_gb']:.2f} GB | {agree} |"
        )
    if not args.no_compare:
        print(json.dumps(sub("--compare"), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
