"""Where bf16 pays on this CPU: one forward pass (inference) and one training step, fp32 against bf16.

    python benchmarks/cpu_bf16_shapes.py [--presets tiny,small,mmbert-base] [--repeats 3]

Per preset (random weights, vocabulary ``--vocab``; mmbert-base also at its published 256k):
inference, one no-grad forward of batch 1 x ``--length`` tokens with all logits, in fp32, with the
weights cast to bf16, and under bf16 autocast (weights fp32); training, one ``mdlm_loss`` + backward +
AdamW step at batch ``--batch`` x 128 in fp32 and under bf16 autocast. The variants alternate within
each repeat and the best of ``--repeats`` is kept, so load from other jobs hits all of them. Prints
seconds and the fp32/bf16 ratio (> 1: bf16 faster). These ratios set the size rule of
``--dtype auto`` and ``precision: auto`` on a CPU with bf16 units (``diffutron.hardware``).
"""

# ruff: noqa: B018, B023 - the closures run at once, inside the iteration that defines them

from __future__ import annotations

import argparse
import copy
import time

import torch

from diffutron.diffusion import get_schedule, mdlm_loss
from diffutron.hardware import cpu_bf16_units
from diffutron.models import MaskedLMParts


def build(preset: str, vocab: int):
    from transformers import ModernBertForMaskedLM

    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    cfg = preset_config(
        preset,
        None,
        vocab_size=vocab,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        cls_token_id=2,
        sep_token_id=1,
    )
    return ModernBertForMaskedLM(cfg).eval()


def best(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small,mmbert-base")
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--length", type=int, default=288)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    print("threads", torch.get_num_threads(), "bf16 units:", cpu_bf16_units())
    print(
        "| preset | vocab | hidden | inference fp32 s | bf16 weights s | autocast s | fp32/bf16 weights | "
        "train fp32 s/step | train autocast s/step | fp32/autocast |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    shapes = [(p, args.vocab) for p in args.presets.split(",")]
    if "mmbert-base" in args.presets:
        shapes.append(("mmbert-base", 256_000))
    for preset, vocab in shapes:
        model = build(preset, vocab)
        half = copy.deepcopy(model).to(torch.bfloat16)
        ids = torch.randint(5, vocab, (1, args.length), generator=torch.Generator().manual_seed(0))

        def fwd(m, autocast=False):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                m(input_ids=ids).logits

        times = {"fp32": [], "bf16": [], "autocast": []}
        for _ in range(args.repeats):
            fwd(model)  # warm-up of each variant inside the loop: first-call costs off the clock
            times["fp32"].append(best(lambda: fwd(model), 1))
            fwd(half)
            times["bf16"].append(best(lambda: fwd(half), 1))
            times["autocast"].append(best(lambda: fwd(model, True), 1))
        inf = {k: min(v) for k, v in times.items()}
        train = {"fp32": float("nan"), "autocast": float("nan")}
        if not args.no_train and vocab == args.vocab and preset != "mmbert-base":
            model.train()
            parts = MaskedLMParts(model)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
            tids = torch.randint(5, vocab, (args.batch, 128), generator=torch.Generator().manual_seed(1))
            maskable = torch.ones_like(tids, dtype=torch.bool)

            def step(autocast):
                g = torch.Generator().manual_seed(0)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    out = mdlm_loss(
                        parts, tids, maskable, schedule=get_schedule("linear"), mask_id=4, generator=g
                    )
                out.loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            tt = {"fp32": [], "autocast": []}
            step(False)
            step(True)
            for _ in range(args.repeats):
                tt["fp32"].append(best(lambda: step(False), 1))
                tt["autocast"].append(best(lambda: step(True), 1))
            train = {k: min(v) for k, v in tt.items()}
        print(
            f"| {preset} | {vocab} | {model.config.hidden_size} | {inf['fp32']:.3f} | {inf['bf16']:.3f} | "
            f"{inf['autocast']:.3f} | {inf['fp32'] / inf['bf16']:.2f}x | {train['fp32']:.3f} | "
            f"{train['autocast']:.3f} | {train['fp32'] / train['autocast']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
