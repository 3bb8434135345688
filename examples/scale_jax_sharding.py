"""The batch sharded over several devices under jax.jit, with topkloss.smooth_topk_svm.

On a CPU, XLA can pretend to have several devices; on GPUs or TPUs use the real ones. The
scores and labels are split along the batch over a one-axis mesh; ``jax.jit`` partitions
the loss and its gradient (topkloss's custom VJP) over the devices, and the result equals
the computation on one device.

    python examples/scale_jax_sharding.py [--devices 2]
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2, help="host (CPU) devices to simulate")
    args = parser.parse_args(argv)
    if "jax" not in sys.modules:  # must be set before JAX starts
        os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    import topkloss

    # one mesh axis, "batch"; Auto axes: XLA propagates the sharding through every operation
    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Auto,))
    by_rows = NamedSharding(mesh, PartitionSpec("batch"))  # (batch, ...) split along axis 0

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((64, 100)).astype(np.float32)
    labels = rng.integers(0, 100, 64)

    @jax.jit
    def loss_and_grad(scores, labels):
        return jax.value_and_grad(lambda s: topkloss.smooth_topk_svm(s, labels, k=5))(scores)

    loss, grad = loss_and_grad(jax.device_put(scores, by_rows), jax.device_put(labels, by_rows))
    print(f"{jax.device_count()} devices: loss {float(loss):.6f}, gradient sharded as {grad.sharding.spec}")

    # the same computation on one device
    loss1, grad1 = loss_and_grad(jnp.asarray(scores), jnp.asarray(labels))
    print(f"one device: loss {float(loss1):.6f}; largest difference in the gradient "
          f"{float(jnp.max(jnp.abs(grad - grad1))):.2e}")
    return loss, grad, loss1, grad1


if __name__ == "__main__":
    main()
