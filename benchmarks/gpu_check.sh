#!/usr/bin/env bash
# The GPU checks of a lent GPU machine, in one go: the GPU tests, the benchmark on the GPU
# (torch CUDA, CuPy, JAX) and, with SUITE=1, the suite's torch cases with torch arrays on CUDA.
# Usage: bash benchmarks/gpu_check.sh OUTDIR. Each step's log goes to OUTDIR (the benchmark
# reports each size as it finishes); a step's failure or time-out does not stop the next.
# STEPS (default: all of test_gpu bench_gpu_torch_cupy bench_gpu_jax bench_gpu_compile
# bench_gpu_compile_graphs product_forms_gpu) picks steps, so that 10-minute calls can split
# them; SUITE=1 adds suite_torch_cuda (the suite's torch and CuPy cases).
out=${1:?usage: gpu_check.sh OUTDIR}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, jax, cupy, numpy; print('torch', torch.__version__, 'jax', jax.__version__, jax.devices(), 'cupy', cupy.__version__, 'numpy', numpy.__version__)" | tee -a "$out/gpu.txt"
# which code ran: the device's copy of .git need not be the session's, the working tree is
echo "src sha256 $(find src -name '*.py' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)" | tee -a "$out/gpu.txt"
steps=" ${STEPS:-test_gpu bench_gpu_torch_cupy bench_gpu_jax bench_gpu_compile bench_gpu_compile_graphs product_forms_gpu} "
run() { local name=$1 limit=$2; shift 2; [[ $steps == *" $name "* || $name == suite_torch_cuda ]] || return 0; echo "== $name"; timeout "$limit" "$@" > "$out/$name.log" 2>&1; echo "exit $?"; tail -n 4 "$out/$name.log"; }
run test_gpu 330 python3 -m pytest -v -p no:cacheprovider --durations=10 tests/test_gpu.py
run bench_gpu_torch_cupy 120 python3 benchmarks/bench_losses.py --device cuda --backends torch,cupy --repeat 20 --memory
run bench_gpu_jax 180 python3 benchmarks/bench_losses.py --device cuda --backends jax --repeat 20 \
    --losses smooth_topk_svm,topk_svm,topk_hinge,noised_topk_hinge_5,noised_topk_hinge_10,topk_transition
run bench_gpu_compile 200 python3 benchmarks/bench_losses.py --device cuda --backends torch --compile --repeat 20 \
    --losses smooth_topk_svm,topk_transition
run bench_gpu_compile_graphs 300 python3 benchmarks/bench_losses.py --device cuda --backends torch --compile \
    --compile-mode reduce-overhead --repeat 20 --losses smooth_topk_svm,topk_transition
# the polynomial products as matrix multiplications, fewer launches (slower on CPUs, see the page)
run product_forms_gpu 240 bash -c 'for b in torch cupy jax; do python3 benchmarks/product_forms.py --backend $b --device cuda --ns 100,1000,10000 --repeat 20; done'
if [ -n "$SUITE" ]; then  # the suite's torch and CuPy cases, torch arrays on the GPU (a few minutes)
    TOPKLOSS_TEST_TORCH_DEVICE=cuda run suite_torch_cuda 300 python3 -m pytest -v --tb=short -p no:cacheprovider -n 8 \
        -k "torch or cupy" --ignore=tests/test_docs.py --ignore=tests/test_demo.py --ignore=tests/test_gpu.py
fi
