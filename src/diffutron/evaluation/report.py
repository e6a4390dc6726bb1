"""Readable reports of a results file: a markdown table and a bar chart next to the published numbers.

    results = json.loads(Path("results.json").read_text())
    Path("results.md").write_text(markdown_report(results))
    plot_comparison(results, "results.png")

``PUBLISHED`` holds the CETVEL accuracies (%) reported for Diffutron and the baselines
(``recipe.md``: zero-shot, multiple choice; how the Diffutron numbers were estimated is not
published). The table and the chart put this model's ``acc`` next to them and next to chance
(computed from the items scored: the mean of 1 / number of choices).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Accuracy (%) from the Diffutron paper's CETVEL table (recipe.md); blank cells are not listed.
PUBLISHED: dict[str, dict[str, float]] = {
    "belebele_tr": {
        "Diffutron 1st stage": 22.22, "Diffutron 2nd stage": 27.00, "TURNA 1.1B": 22.56, "Kumru 2B": 29.00,
        "Kanarya 2B": 28.11, "Llama-3.2 3B": 55.78, "Trendyol 7B": 36.22, "Aya-101 13B": 22.89,
    },
    "exams_tr": {
        "Diffutron 1st stage": 25.95, "Diffutron 2nd stage": 27.74, "TURNA 1.1B": 23.66, "Kumru 2B": 30.03,
        "Kanarya 2B": 30.03, "Llama-3.2 3B": 26.21, "Trendyol 7B": 28.50, "Aya-101 13B": 22.90,
    },
    "ironytr": {
        "Diffutron 1st stage": 50.67, "Diffutron 2nd stage": 52.00, "TURNA 1.1B": 48.33, "Kumru 2B": 51.00,
        "Kanarya 2B": 50.00, "Llama-3.2 3B": 50.17, "Trendyol 7B": 50.00, "Aya-101 13B": 52.17,
    },
    "news_cat": {
        "Diffutron 1st stage": 23.20, "Diffutron 2nd stage": 32.40, "TURNA 1.1B": 32.80, "Kumru 2B": 26.40,
        "Kanarya 2B": 66.8,
    },
    "mnli_tr": {"Diffutron 2nd stage": 33.29},
    "sts_tr": {"Diffutron 2nd stage": 18.78},
    "xcopa_tr": {"Diffutron 2nd stage": 53.80},
}  # fmt: skip
SYSTEMS = list(dict.fromkeys(name for row in PUBLISHED.values() for name in row))
MC_METRICS = ("acc", "acc_norm", "f1", "macro_f1")
GEN_METRICS = ("exact_match", "f1", "rouge1", "rouge2", "rougeL")


def _pct(metric: dict[str, Any] | None) -> str:
    if not metric or metric.get("value") is None or math.isnan(metric["value"]):
        return ""
    se = metric.get("stderr")
    se_text = f" ± {100 * se:.1f}" if se is not None and not math.isnan(se) else ""
    return f"{100 * metric['value']:.1f}{se_text}"


def markdown_report(results: dict[str, Any]) -> str:
    """Markdown: settings, a multiple-choice table with the published numbers, a generation table,
    and every task that failed or skipped rows."""
    s = results.get("settings", {})
    tasks = results.get("tasks", {})
    lines = [
        f"# Evaluation of `{results.get('model', '?')}`",
        "",
        f"Zero-shot. Multiple choice by the Monte-Carlo ELBO ({s.get('samples')} samples per choice, exact "
        f"for short answers), seed {s.get('seed')}; values in %, ± one standard error; "
        f"n = items scored. Published numbers: the Diffutron paper's CETVEL table (accuracy).",
        "",
    ]
    mc = {k: v for k, v in tasks.items() if v.get("kind") != "generate" and not v.get("error")}
    if mc:
        systems = [n for n in SYSTEMS if any(n in PUBLISHED.get(t, {}) for t in mc)]
        metrics = [m for m in MC_METRICS if any(m in v["metrics"] for v in mc.values())]
        head = ["task", "n", *metrics, "chance", *systems]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, t in mc.items():
            cells = [name, str(t["n"]), *(_pct(t["metrics"].get(m)) for m in metrics)]
            cells.append(f"{100 * t['chance']:.1f}" if t.get("chance") is not None else "")
            cells += [f"{PUBLISHED[name][n]:.2f}" if n in PUBLISHED.get(name, {}) else "" for n in systems]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    gen = {k: v for k, v in tasks.items() if v.get("kind") == "generate" and not v.get("error")}
    if gen:
        metrics = [m for m in GEN_METRICS if any(m in v["metrics"] for v in gen.values())]
        head = ["task", "n", *metrics]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, t in gen.items():
            lines.append(
                "| " + " | ".join([name, str(t["n"]), *(_pct(t["metrics"].get(m)) for m in metrics)]) + " |"
            )
        lines.append("")
    speed = [(k, v) for k, v in tasks.items() if v.get("items_per_second")]
    if speed:
        lines.append(
            "Speed: "
            + "; ".join(
                f"{k} {v['items_per_second']:.2f} items/s, {v['forward_passes_per_item']} passes/item"
                for k, v in speed
            )
        )
        lines.append("")
    notes = []
    subsets = {k: v["selection"] for k, v in tasks.items() if v.get("selection", "all") != "all"}
    if subsets:
        notes.append("- items scored: " + "; ".join(f"{k} {v}" for k, v in subsets.items()))
    for name, t in tasks.items():
        if t.get("error"):
            notes.append(f"- **{name}**: not run: {t['error']}")
        elif t.get("skipped"):
            shown = "; ".join(t.get("problems", [])[:3])
            notes.append(
                f"- {name}: {t['skipped']} rows skipped ({shown}{' ...' if t['skipped'] > 3 else ''})"
            )
        if t.get("truncated"):
            notes.append(f"- {name}: {t['truncated']} prompts shortened to fit the model")
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def plot_comparison(results: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars per multiple-choice task: this model's acc, the published systems, chance (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = {
        k: v
        for k, v in results.get("tasks", {}).items()
        if v.get("kind") != "generate" and not v.get("error") and "acc" in v.get("metrics", {})
    }
    if not tasks:
        raise ValueError("no multiple-choice task with an accuracy to plot")
    systems = [n for n in SYSTEMS if any(n in PUBLISHED.get(t, {}) for t in tasks)]
    series = ["this model", *systems]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(20.0, 3.5 + 1.1 * len(tasks)), 4.5))
    grey = plt.get_cmap("Greys")
    for j, name in enumerate(series):
        xs, ys, errs = [], [], []
        for i, (task, t) in enumerate(tasks.items()):
            if name == "this model":
                m = t["metrics"]["acc"]
                value, err = 100 * m["value"], 100 * (m["stderr"] if m["stderr"] == m["stderr"] else 0.0)
            elif name in PUBLISHED.get(task, {}):
                value, err = PUBLISHED[task][name], 0.0
            else:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(value)
            errs.append(err)
        if name == "this model":
            color = "tab:red"
        elif name.startswith("Diffutron"):
            color = "tab:blue" if "2nd" in name else "tab:cyan"
        else:
            color = grey(0.35 + 0.5 * j / len(series))
        ax.bar(xs, ys, width, yerr=errs if name == "this model" else None, label=name, color=color)
    for i, t in enumerate(tasks.values()):
        if t.get("chance") is not None:
            ax.hlines(100 * t["chance"], i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.plot([], [], "k--", linewidth=1, label="chance")
    ax.set_xticks(range(len(tasks)), list(tasks), rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"CETVEL (zero-shot): {Path(str(results.get('model', ''))).name or 'model'}")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(0, 100)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
