"""The demo's outputs: the table (text, CSV, JSON) and the plot of top-5 accuracy against noise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

BASELINE = "cross_entropy"
COLUMNS = ("loss", "noise", "seeds", "top1_mean", "top1_std", "top5_mean", "top5_std", "top5_vs_ce_mean", "top5_vs_ce_std")


def _mean_std(values):
    """Mean and sample std (ddof=1; 0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def summarize(runs, losses, noises):
    """One row per (noise, loss): accuracies, mean and std over seeds.

    ``top5_vs_ce`` is the paired difference of top-5 accuracy to cross-entropy trained on the
    same seed (same data, noisy labels, init and batches), mean and std over seeds; None when
    cross-entropy was not run.
    """
    rows = []
    for noise in map(float, noises):
        here = [r for r in runs if r["noise"] == noise]
        baseline = {r["seed"]: r["top5"] for r in here if r["loss"] == BASELINE}
        for loss in losses:
            mine = [r for r in here if r["loss"] == loss]
            if not mine:
                continue
            row = {"loss": loss, "noise": noise, "seeds": len(mine)}
            for metric in ("top1", "top5"):
                row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([r[metric] for r in mine])
            paired = [r["top5"] - baseline[r["seed"]] for r in mine if r["seed"] in baseline]
            row["top5_vs_ce_mean"], row["top5_vs_ce_std"] = _mean_std(paired) if paired else (None, None)
            rows.append(row)
    return rows


def format_table(rows):
    """A Markdown table of accuracies in percent, mean ± std over seeds."""

    def pct(row, metric, signed=""):
        if row[metric + "_mean"] is None:
            return "n/a"
        return f"{100 * row[metric + '_mean']:{signed}.1f} ± {100 * row[metric + '_std']:.1f}"

    header = ["noise p", "loss", "top-1 (%)", "top-5 (%)", "top-5 vs CE (points)"]
    body = [
        [f"{r['noise']:.2g}", r["loss"], pct(r, "top1"), pct(r, "top5"),
         "(baseline)" if r["loss"] == BASELINE else pct(r, "top5_vs_ce", "+")]
        for r in rows
    ]
    if all(r["top5_vs_ce_mean"] is None for r in rows):
        header, body = header[:-1], [cells[:-1] for cells in body]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_json(document, path):
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def plot(rows, losses, path, title):
    """Top-5 accuracy against noise, one line per loss (error bars: std over seeds), as PNG.

    Uses the Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for loss in losses:
        mine = [r for r in rows if r["loss"] == loss]
        if mine:
            x = [r["noise"] for r in mine]
            y = [100 * r["top5_mean"] for r in mine]
            err = [100 * r["top5_std"] for r in mine]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=loss)
    ax.set_xlabel("label noise p (labels re-drawn within their block)")
    ax.set_ylabel("clean test top-5 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
