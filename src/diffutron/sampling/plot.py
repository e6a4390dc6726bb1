"""A picture of a decoding run: which token was committed at which step.

    out = generate(model, tokenizer, [prompt], cfg)
    plot_denoising(tokenizer, out, "steps.png", title=prompt)

Top: the answer laid out as lines of tokens, each cell coloured by the step that committed it and
labelled with the token and that step. Bottom: tokens committed per step (one per step for the
published setting; bursts for threshold decoding). What it does not know: the model (it reads only
``GenerationOutput.canvas`` / ``commit_step``).
"""

from __future__ import annotations

from pathlib import Path

from .engine import GenerationOutput


def plot_denoising(
    tokenizer, out: GenerationOutput, path: str | Path, row: int = 0, per_line: int = 16, title: str = ""
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    editable = out.editable[row] if out.editable is not None else out.commit_step[row] >= 0
    positions = editable.nonzero().flatten().tolist()
    if out.fills == [] and out.token_ids:  # generation: stop after the end of the text
        positions = positions[: max(len(out.token_ids[row]) + 1, 1)]
    steps = out.commit_step[row, positions]
    tokens = [tokenizer.decode([t]) for t in out.canvas[row, positions].tolist()]
    n_lines = -(-len(positions) // per_line)
    last = max(int(steps.max()), 1) if len(positions) else 1

    fig = plt.figure(figsize=(per_line * 0.9, 1.0 + 0.55 * n_lines + 1.8))
    grid = fig.add_gridspec(2, 1, height_ratios=[max(n_lines, 1) * 0.55, 1.6], hspace=0.45)
    ax = fig.add_subplot(grid[0])
    cmap = plt.get_cmap("viridis")
    for i, (tok, st) in enumerate(zip(tokens, steps.tolist(), strict=True)):
        x, y = i % per_line, i // per_line
        ax.add_patch(plt.Rectangle((x, -y - 1), 0.96, 0.92, color=cmap(st / last)))
        label = tok.replace("\n", "⏎").strip() or "␣"
        color = "white" if st / last < 0.6 else "black"
        ax.text(x + 0.48, -y - 0.45, label[:10], ha="center", va="center", fontsize=7, color=color)
        ax.text(x + 0.92, -y - 0.9, str(st), ha="right", va="bottom", fontsize=5, color=color)
    ax.set_xlim(0, per_line)
    ax.set_ylim(-max(n_lines, 1), 0)
    ax.axis("off")
    ax.set_title(title or "tokens coloured by the step that committed them", fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, last))
    fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="step")

    ax2 = fig.add_subplot(grid[1])
    counts = torch.bincount(steps[steps >= 0], minlength=last + 1) if len(positions) else torch.zeros(1)
    ax2.bar(range(len(counts)), counts.tolist(), color="tab:blue", width=0.9)
    ax2.set(xlabel="step", ylabel="tokens committed")
    ax2.set_title(f"{out.forward_passes} forward passes for {len(positions)} tokens", fontsize=9)
    ax2.grid(alpha=0.3, axis="y")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
