"""Evaluate losses and top-k accuracy on logits that do not fit in memory, with Dask.

The logits are a Dask array chunked along the batch (each chunk holds whole rows: all the
classes of some samples). topkloss builds a task graph chunk by chunk and nothing is
computed until ``dask.compute``, which streams the chunks through the workers: memory holds
a few chunks at a time, whatever the number of rows. Here the logits are generated lazily;
real ones would come from disk (``da.from_zarr``, ``da.from_npy_stack``, ``da.from_array``
on an HDF5 dataset) or from a model applied with ``map_blocks``.

    python examples/scale_dask.py [--rows 100000] [--classes 1000] [--chunk 5000]
"""

from __future__ import annotations

import argparse


def evaluate(scores, labels, k=5):
    """Every metric in one pass over the data: a dict of lazy 0-d Dask arrays."""
    import topkloss

    return {
        "smooth_topk_svm": topkloss.smooth_topk_svm(scores, labels, k=k),
        "topk_svm": topkloss.topk_svm(scores, labels, k=k),
        "topk_hinge": topkloss.topk_hinge(scores, labels, k=k),
        "topk_transition": topkloss.topk_transition(scores, labels, k=k),
        f"top-{k} accuracy": topkloss.topk_accuracy(scores, labels, k=k),
        f"top-{k} accuracy (macro)": topkloss.topk_accuracy(scores, labels, k=k, average="macro"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=2_000, help="rows per chunk")
    args = parser.parse_args(argv)

    import dask
    import dask.array as da

    # chunks=(rows, all the classes): one chunk holds whole rows
    scores = da.random.default_rng(0).standard_normal((args.rows, args.classes), chunks=(args.chunk, -1))
    labels = da.random.default_rng(1).integers(0, args.classes, args.rows, chunks=args.chunk)

    lazy = evaluate(scores, labels)  # a task graph: nothing is computed yet
    (results,) = dask.compute(lazy)  # one pass over the chunks
    gib = args.rows * args.classes * 8 / 2**30
    print(f"{args.rows} rows x {args.classes} classes ({gib:.2f} GiB of float64 logits), "
          f"chunks of {args.chunk} rows:")
    for name, value in results.items():
        print(f"  {name:28s} {float(value):.6f}")
    return results


if __name__ == "__main__":
    main()
