"""Data-parallel training with topkloss.smooth_topk_svm and torch DistributedDataParallel.

Two CPU processes (gloo backend) each take a shard of every batch; DDP averages their
gradients, so the model follows exactly the path of one process training on the full
batch. The shards may differ in size (here 32 and 31 rows): each process sums its losses
and scales by world_size / global batch, so that DDP's average over processes is the mean
over the whole batch.

    python examples/scale_ddp.py [--world-size 2] [--steps 5] [--save result.pt]

On a cluster, start the same ``train`` function with ``torchrun`` (init_method "env://")
and the "nccl" backend on GPUs; nothing in the loss changes.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import topkloss

N_CLASSES, N_FEATURES, BATCH = 20, 16, 63  # BATCH: the global batch, split over the processes


def make_model():
    torch.manual_seed(0)
    return torch.nn.Linear(N_FEATURES, N_CLASSES, dtype=torch.float64)


def make_data(steps):
    """``steps`` global batches of features and labels (the same in every process)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps, BATCH, N_FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, N_CLASSES, (steps, BATCH), generator=g)
    return x, y


def shard(rank, world_size):
    """This process's rows of a global batch: contiguous, sizes differing by at most one."""
    bounds = [BATCH * r // world_size for r in range(world_size + 1)]
    return slice(bounds[rank], bounds[rank + 1])


def train(rank, world_size, init_file, steps, save):
    torch.set_num_threads(1)  # one core per process
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    model = DistributedDataParallel(make_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = make_data(steps)
    rows = shard(rank, world_size)
    grads = []
    for step in range(steps):
        optimizer.zero_grad()
        scores = model(x[step, rows])
        # sum over this shard, scaled so that DDP's average over processes is the global mean
        loss = topkloss.smooth_topk_svm(scores, y[step, rows], k=5, reduction="sum") * (world_size / BATCH)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        optimizer.step()
    if rank == 0:
        print(f"{world_size} processes, {steps} steps of {BATCH} rows: done")
        if save:
            torch.save({"grads": grads, "state": model.module.state_dict()}, save)
    # every rank reaches this point before any tears down its gloo connections: without it a
    # rank that finishes first can close them under the other (which then aborts at exit)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--save", default=None, help="save rank 0's gradients and final weights here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:  # a file rendezvous: no network port needed
        init_file = os.path.join(tmp, "rendezvous")
        mp.spawn(train, args=(args.world_size, init_file, args.steps, args.save), nprocs=args.world_size)


if __name__ == "__main__":
    main()
