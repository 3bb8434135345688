"""Regenerate the benchmark table and plot of the docs' Benchmarks page (``make bench-docs``).

Runs ``benchmarks/bench_losses.py --markdown`` and writes

- ``docs/benchmarks/<name>.md``: the machine, the command, then the table exactly as the
  benchmark script printed it (the Benchmarks page includes this file);
- ``docs/img/bench_<name>.png``: the ratio of each loss's time to the same backend's
  cross-entropy, per problem size.

Usage (from the repository root)::

    python docs/scripts/bench_docs.py                      # CPU, --repeat 9
    python docs/scripts/bench_docs.py --name gpu --machine "NVIDIA H100" -- --backends torch,jax
    python docs/scripts/bench_docs.py --from saved.txt     # re-render a saved run's output
    python docs/scripts/bench_docs.py --summary            # the figures the pages quote

Arguments after ``--`` go to ``benchmarks/bench_losses.py``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_losses.py"


def cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_table(text: str):
    """Rows of the Markdown table printed by ``bench_losses.py --markdown``, as dicts."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(dict(zip(head, cells)))
    return rows


def summary(rows) -> list[str]:
    """The figures the pages quote from a table: each loss's ratios to cross-entropy per backend,
    over the sizes in the table's order, and the time of ``smooth_topk_svm`` at k = 10 and
    k = 20 over its time at k = 5 (from the times, to two places)."""
    sizes = list(dict.fromkeys((r["batch"], r["n"]) for r in rows))
    times = {(r["backend"], r["loss"], r["batch"], r["n"]): r for r in rows}
    lines = ["sizes: " + " / ".join(f"{b}x{n}" for b, n in sizes)]
    for backend in dict.fromkeys(r["backend"] for r in rows):
        for loss in dict.fromkeys(r["loss"] for r in rows):
            cells = [times.get((backend, loss, *size)) for size in sizes]
            lines.append(f"{backend} {loss}: " + " / ".join(c["ratio to CE"] if c else "-" for c in cells))
        for k in (10, 20):
            pairs = [(times.get((backend, f"smooth_topk_svm_k{k}", *size)), times.get((backend, "smooth_topk_svm", *size))) for size in sizes]
            if all(a and b for a, b in pairs):
                ratios = [float(a["ms (fwd+bwd)"]) / float(b["ms (fwd+bwd)"]) for a, b in pairs]
                lines.append(f"{backend} k = {k} / k = 5: " + " / ".join(f"{x:.2f}" for x in ratios))
    return lines


def plot(rows, path: Path, title: str) -> None:
    """One panel per backend; in each, bars of the ratio to cross-entropy per loss and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r["backend"] for r in rows))
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    sizes = sorted({(int(r["batch"]), int(r["n"])) for r in rows}, key=lambda s: (s[1], s[0]))
    # from the two times (the table's ratio column is rounded to 0.1)
    ratio = {
        (r["backend"], r["loss"], int(r["batch"]), int(r["n"])): float(r["ms (fwd+bwd)"]) / float(r["CE ms"])
        for r in rows
    }
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(1, len(losses))
    fig, axes = plt.subplots(1, len(backends), figsize=(3.6 * len(backends), 3.8), dpi=110, sharey=True, squeeze=False)
    for ax, backend in zip(axes[0], backends):
        for i, loss in enumerate(losses):
            xs = [j - 0.4 + width * (i + 0.5) for j, size in enumerate(sizes) if (backend, loss, *size) in ratio]
            ys = [ratio[(backend, loss, *size)] for size in sizes if (backend, loss, *size) in ratio]
            ax.bar(xs, ys, width=width, color=colors[i % len(colors)], label=loss)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(sizes)), [f"{b}x{n}" for b, n in sizes], fontsize=8)
        ax.set_xlabel("batch x n", fontsize=9)
        ax.set_title(backend, fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].set_ylabel("time / cross-entropy time")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(losses), 5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="cpu", help="output names: docs/benchmarks/NAME.md, docs/img/bench_NAME.png")
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--machine", default=None, help="how to name the machine (default: the CPU model)")
    p.add_argument("--from", dest="from_file", default=None, help="use a saved output of bench_losses.py --markdown")
    p.add_argument("--plot-only", action="store_true", help="only redraw the plot from docs/benchmarks/NAME.md")
    p.add_argument("--note", default=None, help="a sentence shown with the table (conditions of the run)")
    p.add_argument("--summary", action="store_true", help="print the figures the pages quote from docs/benchmarks/NAME.md")
    a = p.parse_args(argv)

    md = ROOT / "docs" / "benchmarks" / f"{a.name}.md"
    png = ROOT / "docs" / "img" / f"bench_{a.name}.png"
    if a.summary:
        print("\n".join(summary(parse_table(md.read_text()))))
        return
    if a.plot_only:
        text = md.read_text()
        machine = a.machine or text.split("**Machine:** ", 1)[1].split("\n", 1)[0]
        plot(parse_table(text), png, f"forward + backward time relative to cross-entropy ({machine})")
        print(f"wrote {png.relative_to(ROOT)}")
        return

    command = ["benchmarks/bench_losses.py", "--markdown", "--repeat", str(a.repeat), *extra]
    if a.from_file:
        output = Path(a.from_file).read_text()
        shown = f"python {' '.join(command)}  (output saved and rendered with --from)"
    else:
        output = subprocess.run(
            [sys.executable, *command], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        shown = f"python {' '.join(command)}"
    header = [line[1:].strip() for line in output.splitlines() if line.startswith("#")]
    table = "\n".join(line for line in output.splitlines() if line.startswith("|"))
    machine = a.machine or f"{cpu_model()}, {os.cpu_count()} CPU cores"
    date = datetime.date.today().isoformat()

    md.parent.mkdir(parents=True, exist_ok=True)
    note = f"- **Note:** {a.note}\n" if a.note else ""
    md.write_text(
        f"- **Machine:** {machine}\n"
        f"- **Run:** {date}; the script's header: {'; '.join(header)}\n"
        f"- **Command:** `{shown}`\n{note}\n{table}\n"
    )
    plot(parse_table(table), png, f"forward + backward time relative to cross-entropy ({machine})")
    print(f"wrote {md.relative_to(ROOT)} and {png.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
