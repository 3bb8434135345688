"""The benchmark scripts run (tiny sizes, one repeat): their tables are what the docs quote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(*args):
    out = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_bench_losses_pins_the_allocator_and_prints_a_row():
    out = _run("bench_losses.py", "--backends", "numpy", "--sizes", "8x50", "--losses", "topk_svm", "--repeat", "1")
    assert "# allocator: glibc malloc pinned (MALLOC_ARENA_MAX=1" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  numpy") or line.startswith("numpy")]
    assert len(rows) == 1 and rows[0][:4] == ["numpy", "8", "50", "topk_svm"]
    system = _run("bench_losses.py", "--backends", "numpy", "--sizes", "8x50", "--losses", "topk_svm", "--repeat", "1", "--system-malloc")
    assert "# allocator: the process's own settings" in system


def test_bench_losses_times_each_backend_in_a_process_of_its_own():
    pytest.importorskip("torch")
    args = ("--sizes", "8x50", "--losses", "topk_svm", "--repeat", "1")
    out = _run("bench_losses.py", "--backends", "numpy,torch", *args)
    rows = [line.split()[:4] for line in out.splitlines() if line.split()[:1] in (["numpy"], ["torch"])]
    assert rows == [["numpy", "8", "50", "topk_svm"], ["torch", "8", "50", "topk_svm"]]
    assert out.count("# allocator:") == 1  # one header, from the parent
    sys.path.insert(0, str(BENCH))
    try:
        import bench_losses
    finally:
        sys.path.remove(str(BENCH))
    given = ["--backends", "a,b", "--sizes", "8x50", "--backends=c", "--memory", "--markdown"]
    assert bench_losses._without_backends(given) == ["--sizes", "8x50", "--markdown"]


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_layout_forms_benchmark_times_the_layouts_it_forces(backend):
    """Each column is the layout it names: forcing reaches the backend's namespace (NumPy's
    arrays come through array-api-compat under another name than "numpy")."""
    pytest.importorskip(backend)
    out = _run("layout_forms.py", "--backend", backend, "--sizes", "4x2000", "--repeat", "1")
    (row,) = [line.split() for line in out.splitlines() if line.strip().startswith("4x2000")]
    assert len(row) == 4 and all(float(v) > 0 for v in row[1:])
    sys.path.insert(0, str(BENCH))
    try:
        import layout_forms
    finally:
        sys.path.remove(str(BENCH))
    from topkloss.core import esf, smooth_svm

    scores = np.zeros((4, 2000), dtype=np.float32)
    saved = esf.NODES_LAST_EAGER, smooth_svm.NODES_LAST_MIN
    try:
        for last in (True, False):
            layout_forms._forced(backend, last)
            assert layout_forms.planned_layout(backend, scores, 5) is last
    finally:
        esf.NODES_LAST_EAGER, smooth_svm.NODES_LAST_MIN = saved


def test_floors_prints_one_header_and_every_backend():
    pytest.importorskip("torch")
    out = _run("floors.py", "--backends", "numpy,torch", "--sizes", "8x50,4x1000", "--repeat", "1", "--markdown")
    assert out.count("| backend |") == 1
    rows = [line.strip(" |").split(" | ") for line in out.splitlines() if line.startswith(("| numpy", "| torch"))]
    assert [r[0] for r in rows] == ["numpy", "numpy", "torch", "torch"]
    # the smooth SVM's columns: where the form by hand has the library's forms (torch: prefix
    # sums, up to 900 classes; NumPy: its tree nodes first, fewer than 1000)
    assert all(c.endswith("x") for r in (rows[0], rows[2]) for c in r[-2:])
    assert rows[1][-2:] == rows[3][-2:] == ["-", "-"]


def test_page_faults_runs_both_settings():
    out = _run("page_faults.py", "--backends", "numpy", "--sizes", "8x50", "--losses", "topk_svm", "--repeat", "1")
    rows = [line.split() for line in out.splitlines() if line.startswith("numpy")]
    assert [r[2] for r in rows] == ["cross_entropy", "topk_svm"]
    assert all(len(r) == 7 for r in rows)


def test_jax_top_k_benchmark_runs():
    pytest.importorskip("jax")
    out = _run("jax_top_k.py", "--sizes", "4x2048", "--ks", "5", "--repeat", "1")
    (row,) = [line.split() for line in out.splitlines() if line.strip().startswith("4x2048")]
    assert row[2] == "True"  # the blocked form at this size


def test_torch_top_k_benchmark_runs():
    pytest.importorskip("torch")
    out = _run("torch_top_k.py", "--sizes", "4x100,4x200,4x400", "--ks", "5", "--repeat", "1", "--threads", "1")
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("4x")]
    assert [r[0] for r in rows] == ["4x100", "4x200"]  # 400 >= 64 k: the heap already, no row
    # one thread: 200 entries at TORCH_NTH_ELEMENT_COST each cost more than the heap's 320, 100 less
    assert [r[2] for r in rows] == ["False", "True"] and all(len(r) == 6 for r in rows)


def test_torch_top_k_benchmark_times_group_sizes():
    pytest.importorskip("torch")
    out = _run("torch_top_k.py", "--groups", "8,16", "--sizes", "2x6000,2x3000", "--ks", "5", "--repeat", "1")
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("2x")]
    assert [r[:3] for r in rows] == [["2x6000", "5", "8"], ["2x3000", "5", "-"]]  # the plan: groups of 8 from 5000
    assert all(len(r) == 7 and r[-1].endswith("x") for r in rows)  # torch.topk's ms, two groups, the plan


def test_select_forms_benchmark_runs():
    out = _run("select_forms.py", "--sizes", "4x50", "--repeat", "1")
    (row,) = [line.split() for line in out.splitlines() if line.strip().startswith("4x50")]
    assert len(row) == 7 and all(float(v) >= 0 for v in row[1:])  # the size and six forms


def test_select_forms_times_group_sizes():
    """--groups: NumPy's ops.top_k with each group size and maxima form forced, as ratios to the
    planned form, and the planned group; rows too short for groups are left out."""
    out = _run("select_forms.py", "--sizes", "4x50,4x5000", "--repeat", "1", "--groups", "16,32")
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("4x")]
    assert [r[0] for r in rows] == ["4x50", "4x5000", "4x5000"]  # the first table, then the groups' row
    size, planned_ms, group, *ratios = rows[-1]
    assert int(group) == 16 and float(planned_ms) > 0 and len(ratios) == 4 and all(float(v) > 0 for v in ratios)


def test_bench_losses_compile_mode_is_named_in_the_header():
    pytest.importorskip("torch")
    out = _run(
        "bench_losses.py", "--backends", "torch", "--sizes", "4x10", "--losses", "topk_svm", "--repeat", "1",
        "--compile", "--compile-mode", "reduce-overhead",
    )
    assert "torch.compile (mode reduce-overhead)" in out


def test_scan_forms_benchmark_runs_and_names_the_policy():
    pytest.importorskip("torch")
    out = _run("scan_forms.py", "--ks", "5", "--ns", "20,2000", "--batch", "4", "--repeat", "1")
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("5 ")]
    assert [r[1] for r in rows] == ["20", "2000"]
    assert [" ".join(r[5:]) for r in rows] == ["prefix sums", "tree"]
    assert all(float(v) > 0 for r in rows for v in r[2:5])


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_product_forms_agree_with_the_library(backend):
    """product_forms.py's matrix-multiplication trees give what the library's chain, prefix sums
    and trees give (odd and even k; an odd number of leaves, which takes the padding node; fewer
    leaves than k, where e_j = 0 above their count), each row's difference within the rounding
    of the narrower of its two dtypes."""
    pytest.importorskip(backend)
    out = _run("product_forms.py", "--backend", backend, "--ks", "3,4", "--ns", "3,7,40", "--batch", "3", "--repeat", "1")
    rows = [line.split() for line in out.splitlines() if line[:2] in ("T ", "U ")]
    assert [(r[0], r[1], r[2]) for r in rows] == [(p, k, n) for k in "34" for p, n in (("T", "-"), ("U", "3"), ("U", "7"), ("U", "40"))]
    for r in rows:
        dtypes = {r[-6], r[-5]}  # the library's form's and the matmul tree's
        assert dtypes <= {"float32", "float64"}
        assert float(r[-1]) <= (1e-5 if "float32" in dtypes else 1e-13), r
        assert float(r[-4]) > 0 and float(r[-3]) > 0


@pytest.mark.parametrize("backend, by_hand", [("numpy", False), ("torch", False), ("torch", True), ("jax", False)])
def test_floors_native_transition_is_the_loss(backend, by_hand):
    """floors.py's native compositions of topk_transition (torch's also with the hand-derived
    gradient) are the same loss and gradient as topkloss's (on rows without a tie at the k-th
    value), so their columns are floors of that loss."""
    import numpy as np
    from backends import load

    import topkloss

    xp, reason = load(backend)  # JAX with x64, as in the rest of the suite
    if xp is None:
        pytest.skip(reason)
    sys.path.insert(0, str(BENCH))
    try:
        import floors
    finally:
        sys.path.remove(str(BENCH))
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=(16, 30)), rng.integers(0, 30, size=16)
    y[:4] = np.argsort(-s[:4], axis=1)[:, 2]  # some labels inside T_k
    want, want_grad = topkloss.value_and_grad(topkloss.topk_transition)(s, y, k=5)
    if backend == "torch":
        import torch

        args = (torch.asarray(s).requires_grad_(True), torch.asarray(y))
    else:
        args = (xp.asarray(s), xp.asarray(y))
    got, grad = floors.native_transition(backend, by_hand=by_hand)(*args)
    got = got.detach() if backend == "torch" else got
    np.testing.assert_allclose(float(got), want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_floors_native_smooth_svm_is_the_loss(backend, dtype):
    """floors.py's smooth top-k SVM by hand is topkloss's loss and gradient, so its column is
    a floor of that loss: rows with the label inside and outside the top k, some with the
    k-th value tied, at a width where torch's topk pads to ATen's heap and one where it does
    not, each where the form by hand has the library's forms."""
    import array_api_compat
    import numpy as np

    torch = pytest.importorskip("torch") if backend == "torch" else None

    import topkloss

    sys.path.insert(0, str(BENCH))
    try:
        import floors
    finally:
        sys.path.remove(str(BENCH))
    rng = np.random.default_rng(1)
    for n in (30, 400):
        s = rng.normal(size=(16, n)).astype(dtype)
        y = rng.integers(0, n, size=16)
        y[:4] = np.argsort(-s[:4], axis=1)[:, 2]  # labels inside the top k
        s[4:6, :3] = s[4:6, 3:4]  # ties at the top
        s[6, 10] = s[6, np.argsort(-s[6])[4]]  # a tie at the k-th value
        s[7] *= 300.0  # a row far past the margin
        want, want_grad = topkloss.value_and_grad(topkloss.smooth_topk_svm)(s, y)
        args = (torch.asarray(s).requires_grad_(True), torch.asarray(y)) if torch else (s.copy(), y)
        assert floors.smooth_svm_by_hand_applies(backend, array_api_compat.array_namespace(args[0]), args[0])
        got, grad = floors.native_smooth_svm(backend)(*args)
        if torch:
            got, grad = got.detach().numpy(), grad.numpy()
        assert got.dtype == grad.dtype == np.dtype(dtype)
        if backend == "numpy":
            np.testing.assert_array_equal(args[0], s)  # the scores untouched
        tol = 1e-12 if dtype == "float64" else 1e-6
        np.testing.assert_allclose(float(got), float(want), rtol=tol)
        np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol * np.abs(want_grad).max())


def test_dask_tasks_prints_every_loss():
    pytest.importorskip("dask")
    out = _run("dask_tasks.py", "--ns", "16,64", "--batch", "8")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("smooth", "topk"))}
    assert set(rows) == {"smooth_topk_svm", "topk_svm", "topk_hinge", "topk_transition"}
    assert all(cells[1] == "(1)" and cells[3] == "(1)" for cells in rows.values())  # whole rows at both widths


def test_floors_runs():
    out = _run("floors.py", "--backends", "numpy", "--sizes", "8x50", "--repeat", "1")
    (row,) = [line.split() for line in out.splitlines() if line.startswith("numpy")]
    assert len(row) == 12 and row[-3] == "-"  # "by hand": torch only
    assert all(r.endswith("x") for r in row[3:-3] + row[-2:])  # the smooth SVM's columns on NumPy too


def test_ab_compares_a_revision_per_cross_entropy():
    """ab.py against HEAD (a clean clone has it): one row per loss and size, the raw ratio and
    the ratio of times per the run's own cross-entropy."""
    if subprocess.run(["git", "-C", str(BENCH.parent), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    out = _run("ab.py", "HEAD", "--backends", "numpy", "--sizes", "4x20", "--losses", "topk_svm", "--rounds", "2", "--repeat", "1")
    assert "in random order" in out and out.splitlines()[-2].split()[-1] == "CE"
    (row,) = [line.split() for line in out.splitlines() if line.startswith("numpy")]
    assert row[:3] == ["numpy", "4x20", "topk_svm"] and len(row) == 7 and all(float(v) > 0 for v in row[3:])


def test_count_ops_counts_both_plans():
    pytest.importorskip("torch")
    counts = []
    for extra in ((), ("--as-gpu",)):
        out = _run("count_ops.py", "--batch", "8", "--n", "100", "--top", "3", *extra)
        counts.append(int(out.splitlines()[1].split()[0]))
        assert out.splitlines()[1].endswith("operations; by origin:") and len(out.splitlines()) == 5
    assert all(c > 100 for c in counts)


def test_count_ops_counts_the_smooth_svm_by_hand():
    """floors.py's smooth SVM by hand: the library's polynomial forms (counted by origin) and
    fewer operations in all than the library's loss, at the same k (3 here, not the default:
    the form by hand at k = 5 would count more than the library at k = 3)."""
    pytest.importorskip("torch")
    counts = {}
    for loss in ("smooth_topk_svm", "smooth_topk_svm_by_hand"):
        out = _run("count_ops.py", "--loss", loss, "--batch", "8", "--n", "100", "--k", "3", "--top", "20")
        counts[loss] = int(out.splitlines()[1].split()[0])
    assert "scan_backprop" in out and "_times_top_backward" in out
    assert 100 < counts["smooth_topk_svm_by_hand"] < counts["smooth_topk_svm"]


def test_count_ops_counts_another_loss():
    pytest.importorskip("torch")
    out = _run("count_ops.py", "--loss", "topk_transition", "--batch", "8", "--n", "100", "--top", "3")
    assert out.startswith("# topk_transition, batch 8, n 100, k 5")
    assert 20 < int(out.splitlines()[1].split()[0]) < 317  # a single top-k and a few passes: far fewer than the smooth SVM
