"""The demo's MLP and training step in PyTorch (the default backend)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .experiment import topk_loss


def loss_function(name, generator):
    """``f(scores, labels) -> scalar`` for loss ``name``; the noised loss draws from ``generator``."""
    if name == "cross_entropy":
        return F.cross_entropy
    fn, params = topk_loss(name)
    if name == "noised_topk_hinge":
        params["seed"] = generator
    return lambda scores, labels: fn(scores, labels, **params)


@contextlib.contextmanager
def session():
    """Run torch on one thread meanwhile: the model is tiny, and on a busy CPU extra threads
    only wait for each other (a 2-core machine under load ran the demo 7x slower on 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Trainer:
    """A ReLU MLP with the given initial weights, trained by Adam on (x, y)."""

    def __init__(self, loss, params, lr, loss_seed, x, y):
        layers = []
        for w, b in params:
            linear = torch.nn.Linear(*w.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(w.T))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss = loss_function(loss, torch.Generator().manual_seed(loss_seed))
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def step(self, idx):
        idx = torch.from_numpy(idx)
        value = self.loss(self.model(self.x[idx]), self.y[idx])
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        self.optimizer.step()

    def scores(self, x):
        with torch.no_grad():
            return self.model(torch.from_numpy(x))

    @staticmethod
    def asarray(a):
        return torch.from_numpy(a)
