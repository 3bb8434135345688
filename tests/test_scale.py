"""Scale-out: DDP on 2 CPU processes, JAX with the batch sharded over 2 host devices, Dask.

(a) ``examples/scale_ddp.py`` trains with torch DistributedDataParallel (gloo, 2 processes,
    unequal shards); its gradients at every step and its final weights equal those of one
    process training on the full batch.
(b) In a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (set before
    JAX starts): ``examples/scale_jax_sharding.py``, then every entry of the loss table with
    the batch sharded under ``jax.jit`` equals the unsharded result, and keeps the batch
    sharding; also JAX's explicit-sharding mode.
(c) Every entry on Dask arrays chunked along the batch equals NumPy; outputs keep the batch
    chunks, no task holds the whole batch, and ``examples/scale_dask.py`` runs.

These are the recipes of ``docs/scale.md``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import topkloss
from loss_table import ALL, ids

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TESTS = Path(__file__).resolve().parent


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"topkloss_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args, timeout, env=None):
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu", **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ---------------------------------------------------------------- (a) torch DDP

def test_ddp_gradients_equal_one_process_on_the_full_batch(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    steps = 3
    out = tmp_path / "ddp.pt"
    _run([str(EXAMPLES / "scale_ddp.py"), "--world-size", "2", "--steps", str(steps), "--save", str(out)], timeout=240)
    ddp = torch.load(out)

    ex = _load_example("scale_ddp")
    model = ex.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = ex.make_data(steps)
    for step in range(steps):
        optimizer.zero_grad()
        topkloss.smooth_topk_svm(model(x[step]), y[step], k=5).backward()  # the mean over the full batch
        for p, g in zip(model.parameters(), ddp["grads"][step]):
            np.testing.assert_allclose(g.numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=f"step {step}")
        optimizer.step()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(ddp["state"][name].numpy(), value.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)


def test_ddp_shards_are_unequal():
    """The recipe covers the awkward case: a global batch that does not split evenly."""
    ex = _load_example("scale_ddp")
    sizes = [ex.shard(r, 2).stop - ex.shard(r, 2).start for r in range(2)]
    assert sum(sizes) == ex.BATCH and len(set(sizes)) == 2


# ---------------------------------------------------------------- (b) JAX, 2 host devices

_JAX_SCRIPT = r"""
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, sys.argv[1])
import importlib.util
import numpy as np
import jax, jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

jax.config.update("jax_enable_x64", True)
spec = importlib.util.spec_from_file_location("scale_jax_sharding", sys.argv[2])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
loss, grad, loss1, grad1 = example.main([])
report = {"devices": jax.device_count(), "example": {
    "loss": float(loss), "loss1": float(loss1), "grad_err": float(jnp.max(jnp.abs(grad - grad1))),
    "grad_spec": str(grad.sharding.spec)}}

from loss_table import ALL
import topkloss
B, N = 8, 6
LONG_ROWS = %r
meshes = {mode: jax.make_mesh((2,), ("batch",), axis_types=(axis_type,))
          for mode, axis_type in (("auto", AxisType.Auto), ("explicit", AxisType.Explicit))}
rng = np.random.default_rng(0)
for e in ALL:
    fn = getattr(topkloss, e.name, None)
    if fn is None:
        continue
    s, y = rng.standard_normal((B, N)), rng.integers(0, N, B)
    extras = e.arrays(rng, B, N)
    none = {"reduction": "none"} if e.reductions else {}
    if e.differentiable:
        f = jax.jit(jax.value_and_grad(lambda s, y, ex: fn(s, y, **e.params, **ex)))
    else:
        f = jax.jit(lambda s, y, ex: (fn(s, y, **e.params, **ex), s))
    # the one-device reference: the core in NumPy float64 (no compilation)
    if e.differentiable:
        v1, g1 = topkloss.value_and_grad(fn)(s, y, **e.params, **extras)
    else:
        v1, g1 = fn(s, y, **e.params, **extras), s
    r = report.setdefault(e.id, {})
    for mode, mesh in meshes.items():
        if mode == "explicit" and e.variant and e.id != "topk_hinge[margin-array]":
            continue  # one compilation less: the variants' code paths are the base entries'
        rows, same = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
        put = {k: jax.device_put(a, rows if e.extras[k].batch_axis else same) for k, a in extras.items()}
        ss, sy = jax.device_put(s, rows), jax.device_put(y, rows)
        try:
            with jax.set_mesh(mesh):
                v, g = f(ss, sy, put)
            r[mode] = {"value_err": abs(float(v) - float(v1)) / (1 + abs(float(v1))),
                       "grad_err": float(np.max(np.abs(np.asarray(g) - np.asarray(g1)))) if e.differentiable else 0.0,
                       "grad_spec": str(g.sharding.spec) if e.differentiable else None}
        except Exception as exc:
            r[mode] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        if mode == "auto" and not e.variant:  # eager (no jit) on the sharded arrays: per-sample values
            try:
                out = fn(ss, sy, **e.params, **put, **none)
                want = fn(s, y, **e.params, **extras, **none)
                r["eager"] = {"err": float(np.max(np.abs(np.asarray(out) - np.asarray(want)))), "spec": str(out.sharding.spec)}
            except Exception as exc:
                r["eager"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}

# rows long enough for the blocked top-k (ops._blocked_top_k; 2100 = 131 blocks and a tail)
N_LONG = 2100
for e in ALL:
    if e.name not in LONG_ROWS or e.variant:
        continue
    fn = getattr(topkloss, e.name)
    s, y = rng.standard_normal((B, N_LONG)), rng.integers(0, N_LONG, B)
    f = jax.jit(jax.value_and_grad(lambda s, y, fn=fn, e=e: fn(s, y, **e.params)))
    v1, g1 = topkloss.value_and_grad(fn)(s, y, **e.params)
    for mode, mesh in meshes.items():
        rows = NamedSharding(mesh, P("batch"))
        try:
            with jax.set_mesh(mesh):
                v, g = f(jax.device_put(s, rows), jax.device_put(y, rows))
            result = {"value_err": abs(float(v) - float(v1)) / (1 + abs(float(v1))),
                      "grad_err": float(np.max(np.abs(np.asarray(g) - np.asarray(g1)))), "grad_spec": str(g.sharding.spec)}
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        report.setdefault("long", {}).setdefault(e.name, {})[mode] = result

# eager calls on sharded arrays: devices agree, and the label range is read
rows = NamedSharding(meshes["auto"], P("batch"))
s, y = jax.device_put(rng.standard_normal((B, N)), rows), jax.device_put(rng.integers(0, N, B), rows)
report["eager"] = {"value": float(topkloss.smooth_topk_svm(s, y, k=2))}
try:
    topkloss.smooth_topk_svm(s, y + N, k=2)
    report["eager"]["out_of_range"] = "no error"
except ValueError as exc:
    report["eager"]["out_of_range"] = str(exc)
print("REPORT " + json.dumps(report))
"""


LONG_ROWS = ("topk_transition", "topk_hinge", "smooth_topk_svm")
"""Losses that select with ops.top_k, run on the sharded batch with rows long enough for the
blocked top-k as well (and, for smooth_topk_svm, for its trees built nodes last)."""


@pytest.fixture(scope="module")
def jax_report():
    pytest.importorskip("jax")
    out = _run(["-c", _JAX_SCRIPT % (LONG_ROWS,), str(TESTS), str(EXAMPLES / "scale_jax_sharding.py")], timeout=300)
    line = [ln for ln in out.splitlines() if ln.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_jax_example_sharded_equals_one_device(jax_report):
    assert jax_report["devices"] == 2
    ex = jax_report["example"]
    assert abs(ex["loss"] - ex["loss1"]) <= 1e-6 * (1 + abs(ex["loss1"]))  # float32 (the example's dtype)
    assert ex["grad_err"] <= 1e-6
    assert "batch" in ex["grad_spec"]


def test_jax_eager_call_on_sharded_arrays(jax_report):
    eager = jax_report["eager"]
    assert np.isfinite(eager["value"])
    assert "labels must be in" in eager["out_of_range"]


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_jax_batch_sharded_under_jit(jax_report, entry):
    """Auto (GSPMD) axes: sharded == unsharded, in float64 to rounding."""
    entry.fn
    r = jax_report[entry.id]["auto"]
    assert "error" not in r, r
    assert r["value_err"] <= 1e-12 and r["grad_err"] <= 1e-12, r


def _known_failure(result, reason, what):
    """``result`` (a dict of the subprocess's report) has no error; or, pinned as a known failure
    with ``reason``, still has one (else the pin must go) and the test is an expected failure."""
    if reason is None:
        assert "error" not in result, result
        return
    assert "error" in result, f"{what} now works: remove it from the known failures"
    pytest.xfail(f"{reason} (reported): {result['error']}")


EAGER_SHARDED_FAILS: dict = {}  # none known (the hinge's 0-d fill took the sharding of x: fixed with ones_like)
BASE = [e for e in ALL if not e.variant]


@pytest.mark.parametrize("entry", BASE, ids=ids(BASE))
def test_jax_eager_call_on_sharded_arrays_per_sample(jax_report, entry):
    """Without jit, on batch-sharded arrays: per-sample values right, and still sharded."""
    entry.fn
    r = jax_report[entry.id]["eager"]
    _known_failure(r, EAGER_SHARDED_FAILS.get(entry.name), f"{entry.id} eagerly on sharded arrays")
    assert r["err"] <= 1e-12, r
    if entry.reductions:
        assert "batch" in r["spec"], r  # per-sample losses stay on their devices


@pytest.mark.parametrize("entry", [e for e in ALL if e.differentiable], ids=ids([e for e in ALL if e.differentiable]))
def test_jax_gradient_keeps_the_batch_sharding(jax_report, entry):
    entry.fn
    spec = jax_report[entry.id]["auto"]["grad_spec"]
    assert "batch" in spec, spec  # not gathered onto every device (topk_svm's was, while it scattered by index)


# JAX's explicit-sharding mode (axis_types=Explicit; jax.make_mesh's default in recent JAX)
# types every array with its sharding, and some operations need an explicit out_sharding.
EXPLICIT_FAILS: dict = {}  # none known (each loss's scatters, gathers and fills keep the batch sharding)


EXPLICIT = [e for e in ALL if not e.variant or e.id == "topk_hinge[margin-array]"]


@pytest.mark.parametrize("entry", EXPLICIT, ids=ids(EXPLICIT))
def test_jax_explicit_sharding_mode(jax_report, entry):
    entry.fn
    r = jax_report[entry.id]["explicit"]
    _known_failure(r, EXPLICIT_FAILS.get(entry.id), f"{entry.id} in explicit mode")
    assert r["value_err"] <= 1e-12 and r["grad_err"] <= 1e-12, r
    if entry.differentiable:
        assert "batch" in r["grad_spec"], r


@pytest.mark.parametrize("mode", ["auto", "explicit"])
@pytest.mark.parametrize("name", LONG_ROWS)
def test_jax_sharded_long_rows(jax_report, name, mode):
    """Rows of 2100 classes (the blocked top-k, with a tail) on the sharded batch, in both
    sharding modes: equal to the one-device NumPy result, the gradient still sharded."""
    r = jax_report["long"][name][mode]
    assert "error" not in r, r
    assert r["value_err"] <= 1e-12 and r["grad_err"] <= 1e-12, r
    assert "batch" in r["grad_spec"], r


# ---------------------------------------------------------------- (c) Dask

B_DASK, N_DASK, CHUNK = 64, 12, 8


@pytest.fixture(scope="module")
def dask_env():
    da = pytest.importorskip("dask.array")
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield da, dask


def _dask_inputs(da, entry):
    rng = np.random.default_rng(3)
    s, y = rng.standard_normal((B_DASK, N_DASK)), rng.integers(0, N_DASK, B_DASK)
    extras = entry.arrays(rng, B_DASK, N_DASK)
    dextras = {k: da.from_array(a, chunks=((CHUNK,) * (B_DASK // CHUNK),) + tuple((d,) for d in a.shape[1:]))
               if entry.extras[k].batch_axis else da.from_array(a) for k, a in extras.items()}
    return (s, y, extras), (da.from_array(s, chunks=(CHUNK, N_DASK)), da.from_array(y, chunks=CHUNK), dextras)


class _Peak:
    """The largest result of any task while a graph is computed (bytes)."""

    def __enter__(self):
        from dask.callbacks import Callback

        peak = self

        class _CB(Callback):
            def _posttask(self, key, result, dsk, state, id):
                peak.bytes = max(peak.bytes, getattr(result, "nbytes", 0))

        self.bytes = 0
        self._cb = _CB()
        self._cb.__enter__()
        return self

    def __exit__(self, *exc):
        self._cb.__exit__(*exc)


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_dask_equals_numpy(dask_env, entry):
    da, dask = dask_env
    (s, y, extras), (ds, dy, dextras) = _dask_inputs(da, entry)
    fn = entry.fn
    for reduction in entry.reductions or (None,):
        kw = {"reduction": reduction} if reduction else {}
        out = fn(ds, dy, **entry.params, **dextras, **kw)
        assert type(out).__module__.startswith("dask")
        want = np.asarray(fn(s, y, **entry.params, **extras, **kw))
        np.testing.assert_allclose(np.asarray(out.compute()), want, rtol=1e-12, atol=1e-14)
        if reduction == "none":
            assert out.chunks == dy.chunks  # one output chunk per batch chunk
    if entry.differentiable:
        value, grad = topkloss.value_and_grad(fn)(ds, dy, **entry.params, **dextras)
        want_v, want_g = topkloss.value_and_grad(fn)(s, y, **entry.params, **extras)
        v, g = dask.compute(value, grad)
        np.testing.assert_allclose(v, want_v, rtol=1e-12)
        np.testing.assert_allclose(g, want_g, rtol=1e-12, atol=1e-14)
        assert grad.chunks[0] == ds.chunks[0]


@pytest.mark.parametrize("entry", ALL, ids=ids(ALL))
def test_dask_streams_chunk_by_chunk(dask_env, entry):
    """No task of the loss (or of a reduction of its gradient) holds the whole batch: memory is
    a few chunks, whatever the number of rows. (The noise of the noised hinge is n_samples
    times the scores: its chunks are that much bigger.)"""
    da, dask = dask_env
    _, (ds, dy, dextras) = _dask_inputs(da, entry)
    fn = entry.fn
    total = ds.nbytes + sum(a.nbytes for a in dextras.values())
    with _Peak() as peak:
        fn(ds, dy, **entry.params, **dextras).compute()
    assert peak.bytes < total / 2, (peak.bytes, total)
    if entry.differentiable:
        _, grad = topkloss.value_and_grad(fn)(ds, dy, **entry.params, **dextras)
        with _Peak() as peak:
            (grad * grad).sum().compute()
        assert peak.bytes < total / 2, (peak.bytes, total)


@pytest.mark.parametrize("entry", [e for e in ALL if e.differentiable], ids=ids([e for e in ALL if e.differentiable]))
def test_dask_gradient_keeps_whole_rows(dask_env, entry):
    """On Dask a gradient split into one-column chunks multiplies the tasks by n (the product
    trees' backward concatenated two halves a level: smooth_topk_svm's came out so)."""
    da, _ = dask_env
    _, (ds, dy, dextras) = _dask_inputs(da, entry)
    _, grad = topkloss.value_and_grad(entry.fn)(ds, dy, **entry.params, **dextras)
    assert grad.chunks == ds.chunks


def test_dask_concat_merges_only_axes_whole_in_every_input(dask_env):
    """The core's Dask namespace: ``concat`` gives one chunk along an axis where every input is
    one chunk along it (the trees' halves), and keeps the chunks of an axis that an input splits
    (the batch)."""
    da, _ = dask_env
    from topkloss.adapters import numpy_like

    a = da.from_array(np.arange(24.0).reshape(4, 6), chunks=(2, 6))
    xp = numpy_like.namespace(a)
    wide = xp.concat([a, a[:, :2]], axis=-1)
    assert wide.chunks == ((2, 2), (8,))
    tall = xp.concat([a, a], axis=0)
    assert tall.chunks == ((2, 2, 2, 2), (6,))
    flat = xp.concat([a, a], axis=None)
    np.testing.assert_array_equal(flat.compute(), np.concatenate([a.compute().ravel()] * 2))
    np.testing.assert_array_equal(wide.compute(), np.concatenate([a.compute(), a.compute()[:, :2]], axis=1))


@pytest.mark.parametrize("k", [2, 5])
def test_dask_smooth_gradient_tasks_grow_with_the_depth_not_the_classes(dask_env, k):
    """16 times the classes, 4 more tree levels: the task graph of smooth_topk_svm's gradient
    grows by the levels (under 2x), not by the classes (14x when the halves kept their chunks)."""
    da, _ = dask_env
    tasks = []
    for n in (64, 1024):
        rng = np.random.default_rng(0)
        s, y = rng.standard_normal((32, n)), rng.integers(0, n, 32)
        _, grad = topkloss.value_and_grad(topkloss.smooth_topk_svm)(da.from_array(s, chunks=(16, n)), da.from_array(y, chunks=16), k=k)
        tasks.append(len(dict(grad.__dask_graph__())))
    assert tasks[1] < 2 * tasks[0], tasks


def test_dask_example(dask_env):
    da, dask = dask_env
    ex = _load_example("scale_dask")
    results = ex.main(["--rows", "600", "--classes", "12", "--chunk", "100"])
    scores = da.random.default_rng(0).standard_normal((600, 12), chunks=(100, -1)).compute()
    labels = da.random.default_rng(1).integers(0, 12, 600, chunks=100).compute()
    for name, value in ex.evaluate(scores, labels).items():
        np.testing.assert_allclose(float(results[name]), float(value), rtol=1e-12, err_msg=name)


def test_dask_unknown_chunk_sizes_are_rejected(dask_env):
    """After boolean indexing a Dask array has unknown (NaN) chunk sizes: a clear ValueError
    naming the argument, which says what to do."""
    da, _ = dask_env
    (s, y, _), (ds, dy, _) = _dask_inputs(da, ALL[0])
    keep = dy != 0
    with pytest.raises(ValueError, match=r"scores must have a known shape.*compute_chunk_sizes"):
        topkloss.smooth_topk_svm(ds[keep], dy[keep], k=2)
    ds2, dy2 = ds[keep].compute_chunk_sizes(), dy[keep].compute_chunk_sizes()
    np.testing.assert_allclose(topkloss.smooth_topk_svm(ds2, dy2, k=2).compute(),
                               topkloss.smooth_topk_svm(s[y != 0], y[y != 0], k=2), rtol=1e-12)
