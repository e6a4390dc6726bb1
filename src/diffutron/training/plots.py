"""Loss curves: people would rather look at a training run than read its log."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    rows = []
    path = Path(path)
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path, title: str = "training") -> Path:
    """Training loss per step and validation ELBO perplexity (log scale) in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train"]
    val = [(r["step"], r["val_elbo_ppl"]) for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        ax[0].plot(*zip(*train, strict=True), lw=1, color="tab:blue")
    ax[0].set(xlabel="optimiser step", ylabel="MDLM loss (NELBO / token)", title=f"{title}: training loss")
    ax[0].grid(alpha=0.3)
    if val:
        ax[1].plot(*zip(*val, strict=True), marker="o", color="tab:orange")
        ax[1].set_yscale("log")
    ax[1].set(xlabel="optimiser step", ylabel="ELBO perplexity", title="validation")
    ax[1].grid(alpha=0.3, which="both")
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
