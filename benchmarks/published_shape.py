"""The published shape on a CPU: mmBERT-base with a 256k vocabulary, LoRA r=256 alpha=256, batch 2 x 512.

    python benchmarks/published_shape.py [--steps 2] [--variants sparse+ckpt,sparse,full] [--skip-after]
    python benchmarks/published_shape.py --variants sparse,sparse:bf16 --skip-after   # fp32 vs bf16 autocast

A synthetic word-level tokenizer of 256,000 tokens stands in for Gemma's (which cannot be downloaded
here): the real Turkish words of a few sentences plus filler entries, so the embedding and the output
head have the published size. Each variant runs in its own process so peak memory is its own:

* ``sparse+ckpt``: the head only at masked rows, chunked cross-entropy, activation checkpointing
  (``training.gradient_checkpointing: true``, transformers' ``activation_checkpointing_enable``, formerly ``gradient_checkpointing_enable``);
* ``sparse``: the same without activation checkpointing;
* ``full``: the plain path, full ``[B, L, 256k]`` logits then cross-entropy at masked rows.

Reported per variant: trainable share (LoRA), resident memory of the loaded model, the step's extra
peak memory over it (peak RSS during the steps, reset after loading via ``/proc/self/clear_refs``,
minus the loaded RSS), seconds per step (the last of ``--steps``), and the ratio of each variant's
extra peak to the ``full`` path's. Then (unless ``--skip-after``) the LoRA adapters are merged, the
model is saved and reloaded with ``AutoModelForMaskedLM``, the sampler runs at the ``diffutron``
preset (32 new tokens: one block) on one prompt, and one multiple-choice item (XCOPA-tr fixture) is scored.
Linux only (reads ``/proc``). Heavy: ~20 s per step and ~5 GB of memory on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VOCAB = 256_000
WORDS = (
    "Ankara Türkiye Cumhuriyeti'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır . Iğdır'dan İstanbul'a "
    "giden otobüs sabah erkenden yola çıktı Öğretmenimiz bugün bize ılık bir sonbahar gününde şiir okudu "
    "Kadın şemsiyesini açtı Yağmur yağmaya başladı Güneş doğdu"
).split()


def synthetic_tokenizer(vocab: int = VOCAB):
    """A word-level fast tokenizer of exactly ``vocab`` tokens with the project's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    words = list(dict.fromkeys(WORDS))
    table = {t: i for i, t in enumerate(specials + words)}
    for i in range(len(table), vocab):
        table[f"▁w{i}"] = i
    backend = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=8192,
    )
    assert len(tok) == vocab, len(tok)
    return tok


def random_model(tok):
    """mmBERT-base for ``tok``, weights drawn from N(0, 0.02) in seconds: ``transformers``' own
    initialisation of a 256k x 768 embedding takes minutes on this CPU, and the values do not
    matter for memory or time."""
    import torch
    from transformers import ModernBertForMaskedLM
    from transformers.initialization import no_init_weights

    from diffutron.models import preset_config

    with no_init_weights():
        model = ModernBertForMaskedLM(preset_config("mmbert-base", tok))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02, generator=g)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)  # norm weights
    model.tie_weights()  # skipped by no_init_weights; the head shares the embedding as published
    return model


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_variant(variant: str, steps: int, batch: int, length: int) -> dict:
    """One variant in this process: build, LoRA, a few training steps; memory and time. A ``:bf16``
    suffix runs the steps under CPU bf16 autocast (what ``training.precision: bf16`` does)."""
    import contextlib

    import torch

    from diffutron.config import LoraConfig
    from diffutron.diffusion import get_schedule, mdlm_loss
    from diffutron.models import MaskedLMParts
    from diffutron.models.lora import apply_lora, trainable_share
    from diffutron.training.loop import enable_activation_checkpointing

    variant, _, precision = variant.partition(":")
    bf16 = precision == "bf16"
    torch.manual_seed(0)
    tok = synthetic_tokenizer()
    model = random_model(tok)
    if variant == "sparse+ckpt":
        enable_activation_checkpointing(model)  # what training.gradient_checkpointing: true does
    model = apply_lora(model, LoraConfig(enabled=True, r=256, alpha=256, target_modules=["Wqkv", "Wo", "Wi"]))
    n_train, n_total, share = trainable_share(model)
    parts = MaskedLMParts(model)
    parts.train()
    opt = torch.optim.AdamW([p for p in parts.parameters() if p.requires_grad], lr=1e-4)
    schedule = get_schedule("linear")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(len(WORDS) + 5, VOCAB, (batch, length), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    loaded_kb = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            out = mdlm_loss(parts, ids, maskable, schedule=schedule, mask_id=tok.mask_token_id, generator=g,
                            sparse_head=variant != "full")
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    peak_kb = _rss_kb("VmHWM")
    return {
        "variant": variant + (":bf16" if bf16 else ""),
        "parameters": n_total,
        "trainable": n_train,
        "trainable_share_pct": round(100 * share, 2),
        "loaded_rss_gb": loaded_kb / 2**20,
        "extra_peak_gb": (peak_kb - loaded_kb) / 2**20,
        "step_seconds": times[-1],
        "step_seconds_all": times,
        "loss": float(out.loss.detach()),
    }


def after_training(out_dir: Path) -> dict:
    """Merge, save, reload with AutoModelForMaskedLM, sample at the diffutron preset, score one MC item."""
    import torch
    from transformers import AutoModelForMaskedLM

    from diffutron.config import LoraConfig
    from diffutron.evaluation import EvalConfig, evaluate, resolve_tasks
    from diffutron.models.checkpoint import DiffusionSettings, load_checkpoint, save_checkpoint
    from diffutron.models.lora import apply_lora, merge_lora
    from diffutron.sampling import generate, preset

    torch.manual_seed(0)
    tok = synthetic_tokenizer()
    model = apply_lora(random_model(tok), LoraConfig(enabled=True, r=256, alpha=256))
    t0 = time.perf_counter()
    merged = merge_lora(model)
    save_checkpoint(out_dir, merged, tok, DiffusionSettings(mask_token_id=tok.mask_token_id))
    save_s = time.perf_counter() - t0
    again = AutoModelForMaskedLM.from_pretrained(out_dir)
    same = all(torch.equal(a, b) for a, b in zip(merged.state_dict().values(), again.state_dict().values(), strict=True))
    del model, merged, again
    loaded = load_checkpoint(out_dir)
    cfg = preset("diffutron", max_new_tokens=32)  # one block: enough to show it runs
    t0 = time.perf_counter()
    gen = generate(loaded.model, loaded.tokenizer, ["Ankara Türkiye Cumhuriyeti'nin"], cfg,
                   schedule=loaded.settings.make_schedule(), mask_id=loaded.mask_id)
    sample_s = time.perf_counter() - t0
    fixtures = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "eval"
    t0 = time.perf_counter()
    res = evaluate(loaded, resolve_tasks("xcopa_tr"), EvalConfig(samples=4, batch_size=8, limit=1, data_dir=str(fixtures)))
    eval_s = time.perf_counter() - t0
    task = res.tasks["xcopa_tr"].to_dict()
    return {
        "merge_save_seconds": save_s,
        "reload_identical": same,
        "sample_new_tokens": len(gen.token_ids[0]),
        "sample_forward_passes": gen.forward_passes,
        "sample_seconds": sample_s,
        "mc_items_scored": task["n"],
        "mc_error": task["error"],
        "mc_seconds": eval_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--variants", default="sparse+ckpt,sparse,full")
    ap.add_argument("--skip-after", action="store_true", help="only the training steps")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    ap.add_argument("--after", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_variant(args.worker, args.steps, args.batch, args.length)))
        return 0
    if args.after:
        with tempfile.TemporaryDirectory() as d:
            print("RESULT " + json.dumps(after_training(Path(d) / "model")))
        return 0

    def sub(*extra: str) -> dict:
        out = subprocess.run([sys.executable, __file__, *extra, "--steps", str(args.steps), "--batch",
                              str(args.batch), "--length", str(args.length)], capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not lines:
            raise RuntimeError(f"{extra} failed:\n{out.stderr[-3000:]}")
        return json.loads(lines[-1][7:])

    rows = [sub("--worker", v) for v in args.variants.split(",")]
    base = next((r for r in rows if r["variant"] == "full"), None)
    print(f"mmbert-base, vocabulary {VOCAB:,}, LoRA r=256 alpha=256 on Wqkv/Wo/Wi, batch {args.batch} x {args.length}")
    print(f"{'variant':<12} {'trainable':>10} {'loaded RSS':>11} {'extra peak':>11} {'vs full':>8} {'s/step':>7}")
    for r in rows:
        ratio = f"{r['extra_peak_gb'] / base['extra_peak_gb']:.0%}" if base else "—"
        print(f"{r['variant']:<12} {r['trainable_share_pct']:>9.2f}% {r['loaded_rss_gb']:>9.2f}GB "
              f"{r['extra_peak_gb']:>9.2f}GB {ratio:>8} {r['step_seconds']:>7.1f}")
    if not args.skip_after:
        a = sub("--after")
        print(f"merged + saved in {a['merge_save_seconds']:.1f} s; reloads with AutoModelForMaskedLM "
              f"identically: {a['reload_identical']}")
        print(f"sampling (diffutron preset): {a['sample_new_tokens']} tokens, {a['sample_forward_passes']} "
              f"forward passes, {a['sample_seconds']:.1f} s")
        print(f"multiple choice (xcopa_tr fixture): {a['mc_items_scored']} item scored in {a['mc_seconds']:.1f} s")
    print(json.dumps({"variants": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
