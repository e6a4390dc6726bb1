"""Quality guard for bf16 training on a CPU: the quickstart run in fp32 and under bf16 autocast.

    python benchmarks/bf16_quality.py [--steps 150] [--seeds 0,1,2] [--out /tmp/bf16-quality]

For each seed the quickstart's own configuration (``recipes.quickstart.quickstart_config``: tiny preset,
8k vocabulary, batch 16 x 128) trains ``--steps`` optimiser steps with ``training.precision`` ``no``
(fp32) and ``bf16``, alternated so a change of the machine's load hits both. The held-out ELBO is the
loop's own final validation (float32 weights, outside autocast, the same rows and masks for both), so
only the training precision differs. Prints per run: validation NELBO/token, its standard error, the
loop's tokens/s; then the mean difference bf16 - fp32 over the seeds and its spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from diffutron.hardware import cpu_bf16_units
from diffutron.recipes.quickstart import quickstart_config
from diffutron.training import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="/tmp/bf16-quality")
    args = ap.parse_args()
    print("bf16 units:", cpu_bf16_units())
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for precision in ("no", "bf16"):
            cfg = quickstart_config(minutes=1e6, seed=seed, max_steps=args.steps)
            cfg.training.precision = precision
            cfg.training.eval_every = 0
            cfg.training.save_every = 0
            out = Path(args.out) / f"s{seed}-{precision}"
            result = train(cfg, out, progress=False)
            s = result.summary
            row = {
                "seed": seed,
                "precision": "fp32" if precision == "no" else precision,
                "steps": result.state.step,
                "val_nelbo": s["val_nelbo_per_token"],
                "val_stderr": s["val_stderr"],
                "val_elbo_ppl": s["val_elbo_ppl"],
                "tokens_per_s": s.get("tokens_per_second"),
                "model_dir": str(result.model_dir),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    diffs = []
    for seed in sorted({r["seed"] for r in rows}):
        pair = {r["precision"]: r for r in rows if r["seed"] == seed}
        diffs.append(pair["bf16"]["val_nelbo"] - pair["fp32"]["val_nelbo"])
    print("| seed | fp32 NELBO/token | bf16 NELBO/token | bf16 - fp32 | fp32 tokens/s | bf16 tokens/s |")
    print("|---|---|---|---|---|---|")
    for seed in sorted({r["seed"] for r in rows}):
        f, b = ({r["precision"]: r for r in rows if r["seed"] == seed}[p] for p in ("fp32", "bf16"))
        print(
            f"| {seed} | {f['val_nelbo']:.4f} ± {f['val_stderr']:.4f} | {b['val_nelbo']:.4f} ± "
            f"{b['val_stderr']:.4f} | {b['val_nelbo'] - f['val_nelbo']:+.4f} | {f['tokens_per_s']:.0f} | "
            f"{b['tokens_per_s']:.0f} |"
        )
    spread = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    print(f"mean bf16 - fp32: {statistics.mean(diffs):+.4f} nats/token (sd over seeds {spread:.4f})")
    Path(args.out, "rows.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
