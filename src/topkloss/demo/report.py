"""The demo's outputs: the table (text, CSV, JSON) and the plot of top-5 accuracy against noise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

COLUMNS = ("loss", "noise", "seeds", "top1_mean", "top1_std", "top5_mean", "top5_std")


def summarize(runs, losses, noises):
    """One row per (noise, loss): mean and sample std (ddof=1; 0 for one seed) over seeds."""
    rows = []
    for noise in noises:
        for loss in losses:
            mine = [r for r in runs if r["loss"] == loss and r["noise"] == float(noise)]
            if not mine:
                continue
            row = {"loss": loss, "noise": float(noise), "seeds": len(mine)}
            for metric in ("top1", "top5"):
                values = np.array([r[metric] for r in mine])
                row[f"{metric}_mean"] = float(values.mean())
                row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            rows.append(row)
    return rows


def format_table(rows):
    """A Markdown table of accuracies in percent, mean ± std over seeds."""

    def pct(row, metric):
        return f"{100 * row[metric + '_mean']:.1f} ± {100 * row[metric + '_std']:.1f}"

    header = ["noise p", "loss", "top-1 (%)", "top-5 (%)"]
    body = [[f"{r['noise']:.2g}", r["loss"], pct(r, "top1"), pct(r, "top5")] for r in rows]
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
