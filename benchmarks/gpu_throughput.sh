#!/bin/bash
# The GPU throughput check of issue #3, as one script for a lent GPU machine (about 5 minutes).
#
#   OUT=/tmp/gpu_bench bash benchmarks/gpu_throughput.sh [RUN ...]
#
# RUN names a subset of the runs below (paper_cnn paper_cnn_layouts small_cnn fig20_dense; default:
# all).  On the device machine the image lacks ml_collections: carry its wheel (benchmarks/README.md).
#
# Runs benchmarks/train_throughput.py on the default JAX device (a GPU) for the three workloads:
# the engine at S = 1, 16, 64 (seed_layout="auto"), the naive per-seed JAX loop, and the per-seed
# PyTorch loop on the same GPU (--torch_device=cuda); then, for the paper CNN at S=64, the other
# layouts, so that the auto choice on GPU rests on a measurement.  Each run has its own time limit,
# so one failure leaves the others' JSON in $OUT.  The target: S=64 seeds of the paper CNN in
# under 3x the time of one seed, i.e. engine model-steps/s at S=64 > 64/3 x that at S=1.
set -u
OUT=${OUT:-/tmp/gpu_bench}
ONLY="$*"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# Two frameworks share the GPU in one process: allocate on demand instead of JAX's 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$OUT/env.txt"
python3 - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import jax, jax.numpy as jnp, numpy as np, flax, optax
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())
rng = np.random.default_rng(0)
a, b = (rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(2))
ref = a.astype(np.float64) @ b.astype(np.float64)
err = np.linalg.norm(np.asarray(jnp.asarray(a) @ jnp.asarray(b)) - ref) / np.linalg.norm(ref)
print(f"default f32 matmul rel. error vs float64: {err:.1e} (~1e-3: TF32, ~1e-7: full f32)")
EOF
B="python3 -m benchmarks.train_throughput --arms=engine,naive_jax,torch --torch_device=cuda --repeats=3 --baseline_seeds=4 --peak_size=8192"
run() {  # name, limit_s, args...
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout "$limit" $B "$@" --json="$OUT/$name.json" > "/tmp/$name.log" 2>&1
  echo "rc=$?"; { echo "=== $name"; cat "/tmp/$name.log"; } >> "$OUT/logs.txt"
  grep -v "^I[0-9]\|^W[0-9]" "/tmp/$name.log" | tail -n 14
}
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
want paper_cnn && run paper_cnn 150 --model=paper_cnn --seeds=1,16,64 --steps=10
want paper_cnn_layouts && run paper_cnn_layouts 100 --model=paper_cnn --seeds=64 --steps=5 \
    --arms=engine --layout=vmap_im2col,vmap,map,vmap:fused,map_fused
want small_cnn && run small_cnn 130 --model=small_cnn --seeds=1,16,64 --steps=20 \
    --layout=auto,map,vmap
want fig20_dense && run fig20_dense 80 --model=fig20_dense --seeds=1,16,64 --steps=100 \
    --layout=auto,map
