#!/bin/bash
# The accelerator benchmark of issue 15 and the GPU-relevant tests (issue 21), as one
# self-contained script for a lent GPU machine.  Not yet timed there.  Every run has its own time
# limit and the whole script a budget (BUDGET_S, default 470 s: under 8 minutes with the start):
# a run that the budget no longer fits is cut to what is left or skipped, and says so in
# logs.txt.  The runs go in order of importance: tests, kernel, paper_cnn, small_cnn,
# fig20_dense, sweep.  The device tool brings back 8 files: run it as two calls for every file,
# e.g. `tests kernel paper_cnn` then `small_cnn fig20_dense sweep`.
#
#   bash benchmarks/gpu_throughput.sh --fetch-wheels      # once, on a machine with PyPI access
#   OUT=/tmp/gpu_bench bash benchmarks/gpu_throughput.sh [RUN ...]   # on the GPU machine
#   DRY_RUN=1 OUT=/tmp/dry bash benchmarks/gpu_throughput.sh        # CPU, tiny sizes: the plumbing
#
# RUN names a subset of: tests kernel paper_cnn small_cnn fig20_dense sweep (default: all).
#
# Wheels: the lent H200's image (Python 3.12, jax, flax, optax, chex, absl, orbax, torch, pytest,
# pytest-xdist, matplotlib) lacks ml_collections (the engine's configs), grain (the host input
# pipeline) with array_record and portpicker, and tensorboardX (the engine's event files).
# --fetch-wheels downloads them (the versions installed here, for Python 3.12) and matplotlib's
# stack into build/wheels/ (git ignores build/; about 30 MB); carry that folder to the device (the device
# tool's `carry: ["build/wheels"]`).  On the device the script imports each module and installs
# only the missing ones from there (--no-deps: each dependency is in the list), with no network.
#
# Runs (each appends its log to $OUT/logs.txt):
# - tests: the GPU-relevant part of the test suite on this backend (GPU_TESTS below, chosen by
#   their CPU durations, benchmarks/README.md): the accelerator layouts' equality guarantees
#   (tests/test_layouts.py; conv_impl="pallas" there is the real Triton lowering on a GPU), the
#   engine, packing, host feed, Pallas and mixed-precision tests.  JAX_DEFAULT_MATMUL_PRECISION=
#   highest: the engine's "default" precision follows it and the tests' float32 bounds need it
#   (XLA's default on a GPU is TF32: tests/tolerances.py, matmul_eps).  Writes $OUT/tests.xml
#   (JUnit: every test's outcome and time) and $OUT/tests.log (the pytest output and summary).
# Each benchmark run writes $OUT/<run>.json:
# - kernel: the Pallas conv -> ReLU -> dense block (rl_align/pallas_fused.py, Triton backend)
#   against the unfused XLA block at the paper CNN's shapes, vmapped over S=64 seeds: max relative
#   error of the value and of every parameter gradient (reference at HIGHEST precision), and
#   ms per forward + backward for a few tile plans, float32 and bfloat16.
# - paper_cnn, small_cnn, fig20_dense: benchmarks/train_throughput.py at S=64, engine (auto layout;
#   the paper CNN also with the Pallas block, `vmap:pallas`; the small CNN also `map` and gradient
#   micro-batches of 16, `auto/16`, the measurements choose_layout / choose_microbatch need) vs
#   the naive per-seed JAX loop, float32 and bfloat16 side by side (--dtypes), every row with its
#   roofline: FLOPs and bytes per model-step, the matmul peak per dtype and the copy bandwidth
#   measured in the same run, the floor and the fraction of it (benchmarks/roofline.py).  The
#   paper CNN also runs the PyTorch per-seed loop on the GPU.
# - sweep: benchmarks/sweep_throughput.py (a packed sweep vs one run per point), if present.
#
# Targets (issue 15, one H200, S=64): paper CNN >= 4x 1353 model-steps/s and >= 40% of its floor;
# small CNN engine >= 2x naive JAX; Fig 20 dense >= 13x naive.
set -u
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-build/wheels}
START=$(date +%s)
# The tests that run on the GPU (the measured CPU durations and the choice: benchmarks/README.md).
GPU_TESTS=(${GPU_TESTS:-tests/test_layouts.py tests/test_pallas_fused.py tests/test_mixed_precision.py
  tests/test_packing.py tests/test_host_feed.py tests/test_train.py})
# Left out: the multi-process and kill -9 tests (CPU subprocesses by design) and the two
# science checks of test_mixed_precision (minutes of training each).
GPU_TESTS_K=${GPU_TESTS_K:-"not two_processes and not kill_9 and not fig2_eigen and not fig20_right"}

if [ "${1:-}" = "--fetch-wheels" ]; then
  # Pure-Python or manylinux wheels for the device's Python (3.12 on the lent H200 images).
  PY=${PY_VERSION:-3.12}
  mkdir -p "$WHEELS"
  pinned=$(python3 -c "import importlib.metadata as m, sys
for d in sys.argv[1:]:
  try: print(f'{d}=={m.version(d)}')
  except m.PackageNotFoundError: print(d)" ml_collections grain array_record portpicker tensorboardX)
  pip download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform any \
      -d "$WHEELS" $pinned matplotlib contourpy cycler fonttools kiwisolver pyparsing \
      python-dateutil six pillow packaging
  du -sh "$WHEELS"; ls "$WHEELS"
  exit
fi

OUT=${OUT:-/tmp/gpu_bench}
DRY=${DRY_RUN:-0}
BUDGET=${BUDGET_S:-$([ "$DRY" = 1 ] && echo 7200 || echo 470)}
ONLY="$*"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# Two frameworks share the GPU in one process: allocate on demand instead of JAX's 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# --- Environment: install what is missing from the carried wheels, record the machine. ---------
# module:wheel pairs; one Python process finds the missing modules without importing them.
missing=$(python3 -c "import importlib.util, sys
print(' '.join(p.split(':')[1] for p in sys.argv[1:] if importlib.util.find_spec(p.split(':')[0]) is None))" \
    ml_collections:ml_collections grain:grain array_record:array_record portpicker:portpicker \
    tensorboardX:tensorboardX matplotlib:matplotlib contourpy:contourpy cycler:cycler \
    fontTools:fonttools kiwisolver:kiwisolver pyparsing:pyparsing dateutil:python-dateutil PIL:pillow)
if [ -n "$missing" ]; then
  echo "installing from $WHEELS:$missing"
  pip_in() { python3 -m pip install -q --no-index --no-deps --find-links "$WHEELS" "$@" $missing; }
  pip_in > /tmp/pip_install.log 2>&1 || pip_in --break-system-packages > /tmp/pip_install.log 2>&1
  tail -n 3 /tmp/pip_install.log
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
  python3 - <<'EOF'
import sys, jax, jax.numpy as jnp, numpy as np, flax, optax
print("python", sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__,
      "optax", optax.__version__, jax.devices())
rng = np.random.default_rng(0)
a, b = (rng.standard_normal((1024, 1024)).astype(np.float32) for _ in range(2))
ref = a.astype(np.float64) @ b.astype(np.float64)
err = np.linalg.norm(np.asarray(jnp.asarray(a) @ jnp.asarray(b)) - ref) / np.linalg.norm(ref)
print(f"default f32 matmul rel. error vs float64: {err:.1e} (~1e-3: TF32, ~1e-7: full f32)")
EOF
} 2>&1 | tee "$OUT/env.txt"

log_run() {  # name, limit_s, command...: run within its limit and the budget, keep the log
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - $(date +%s) + START))
  if [ "$left" -lt 30 ]; then
    echo "=== $name: skipped, ${left}s left of the script's ${BUDGET}s budget" | tee -a "$OUT/logs.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && echo "(limit ${limit}s cut to the budget's ${left}s)" && limit=$left
  echo "=== $name ($(date +%T), limit ${limit}s)"
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$?"
  { echo "=== $name"; cat "$OUT/$name.log"; } >> "$OUT/logs.txt"
  grep -v "^I[0-9]\|^W[0-9]" "$OUT/$name.log" | tail -n 16
}

# --- The GPU-relevant tests, first: correctness before speed. --------------------------------
if want tests; then
  # xdist workers: 2 on the dry run's 2-core CPU, 4 on the GPU machine's 16 cores (compiles).
  log_run tests $([ "$DRY" = 1 ] && echo 3600 || echo 200) env JAX_DEFAULT_MATMUL_PRECISION=highest \
      python3 -m pytest -q -p no:cacheprovider -n $([ "$DRY" = 1 ] && echo 2 || echo 4) \
      --dist loadfile --durations=15 -rfE --junitxml="$OUT/tests.xml" "${GPU_TESTS[@]}" \
      -k "$GPU_TESTS_K"
fi

# --- The Pallas kernels alone. ---------------------------------------------------------------
if want kernel; then
  cat > "$OUT/kernel_check.py" <<'EOF'
"""Pallas block vs the unfused XLA block, vmapped over S seeds: errors and ms per fwd+bwd."""
import json, os, sys, time
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, os.getcwd())
from rl_align import models, pallas_fused as pf

dry = os.environ.get("DRY_RUN") == "1"
S, N, SIDE, F, D = (2, 8, 8, 16, 16) if dry else (64, 256, 32, 256, 64)
HO = SIDE - 2
rng = np.random.default_rng(0)
x = rng.standard_normal((N, SIDE, SIDE, 3), dtype=np.float32)
params = (rng.standard_normal((S, 3, 3, 3, F), dtype=np.float32) / np.sqrt(27),
          rng.standard_normal((S, F), dtype=np.float32) / 10,
          rng.standard_normal((S, HO * HO * F, D), dtype=np.float32) / np.sqrt(HO * HO * F))
cot = rng.standard_normal((N, D), dtype=np.float32)

def unfused(x, ck, cb, dk):
  h = jax.nn.relu(models.conv_im2col(x, ck) + cb)
  return h.reshape(x.shape[0], -1) @ dk

def step(block, dtype):
  """jit(vmap over seeds of the value and the parameter gradients, as in training)."""
  def one(ck, cb, dk):
    z, vjp = jax.vjp(lambda *p: block(x.astype(dtype), *p), *(p.astype(dtype) for p in (ck, cb, dk)))
    return (z,) + vjp(cot.astype(z.dtype))
  return jax.jit(jax.vmap(one))

def best_ms(fn, reps=5):
  jax.block_until_ready(fn(*params))
  ts = []
  for _ in range(reps):
    t = time.perf_counter(); jax.block_until_ready(fn(*params)); ts.append(time.perf_counter() - t)
  return 1e3 * min(ts)

out = {"S": S, "N": N, "side": SIDE, "F": F, "D": D, "backend": jax.default_backend(), "runs": []}
with jax.default_matmul_precision("highest"):
  ref = [np.asarray(a, np.float64) for a in step(unfused, jnp.float32)(*params)]
names = ("value", "conv kernel", "conv bias", "dense kernel")
plans = {"default": pf.Plan(), "block_n=32": pf.Plan(block_n=32), "block_n=128": pf.Plan(block_n=128),
         "block_p=16": pf.Plan(block_p=16), "block_f=32": pf.Plan(block_f=32)}
if dry:
  plans = {k: pf.Plan(v.block_n, v.block_p, v.block_f, backend="interpret") for k, v in list(plans.items())[:2]}
cases = [("xla_unfused", unfused, jnp.float32), ("xla_unfused", unfused, jnp.bfloat16)]
cases += [(f"pallas {k}", (lambda p: lambda *a: pf.conv_relu_dense(*a, p))(p), jnp.float32)
          for k, p in plans.items()]
cases += [("pallas default", lambda *a: pf.conv_relu_dense(*a, plans["default"]), jnp.bfloat16)]
for name, block, dtype in cases:
  row = {"name": name, "dtype": jnp.dtype(dtype).name}
  try:
    fn = step(block, dtype)
    got = [np.asarray(a, np.float64) for a in fn(*params)]
    row["max_rel_err"] = {n: float(np.abs(g - r).max() / np.abs(r).max())
                          for n, g, r in zip(names, got, ref)}
    row["ms_per_step_all_seeds"] = best_ms(fn)
  except Exception as e:  # a plan Triton cannot compile: record it, go on
    row["error"] = f"{type(e).__name__}: {str(e)[:800]}"
  out["runs"].append(row)
  print(json.dumps(row), flush=True)
json.dump(out, open(os.environ["OUT"] + "/kernel.json", "w"), indent=1)
EOF
  log_run kernel $([ "$DRY" = 1 ] && echo 300 || echo 120) python3 "$OUT/kernel_check.py"
fi

# --- The engine vs the naive loop, float32 and bfloat16, with the roofline. -------------------
if [ "$DRY" = 1 ]; then
  SIZE="--seeds=2 --steps=1 --repeats=1 --batch_size=8 --num_examples=32 --peak_size=256 --bandwidth_mb=16"
  TORCH=""; LIMIT=600; MB=4
else
  SIZE="--seeds=64 --repeats=3 --baseline_seeds=4 --peak_size=8192"
  TORCH=",torch --torch_device=cuda"; LIMIT=0; MB=16
fi
B="python3 -m benchmarks.train_throughput --dtypes=float32,bfloat16 $SIZE"
lim() { [ "$LIMIT" -gt 0 ] && echo "$LIMIT" || echo "$1"; }
want paper_cnn && log_run paper_cnn "$(lim 160)" $B --model=paper_cnn --steps=10 \
    --layout=auto,vmap:pallas --arms=engine,naive_jax$TORCH --json="$OUT/paper_cnn.json"
want small_cnn && log_run small_cnn "$(lim 100)" $B --model=small_cnn --steps=20 \
    --layout=auto,map,auto/$MB --arms=engine,naive_jax --json="$OUT/small_cnn.json"
want fig20_dense && log_run fig20_dense "$(lim 60)" $B --model=fig20_dense --steps=100 \
    --layout=auto --arms=engine,naive_jax --json="$OUT/fig20_dense.json"

# --- The lead's sweep benchmark, when it exists. ----------------------------------------------
if want sweep && [ -f benchmarks/sweep_throughput.py ]; then
  EPOCHS=$([ "$DRY" = 1 ] && echo 1 || echo 20)
  log_run sweep "$(lim 90)" python3 -m benchmarks.sweep_throughput --epochs="$EPOCHS" \
      --json="$OUT/sweep.json"
fi

# --- One summary table of every row: rate, ratio, fraction of the floor. ----------------------
python3 - <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import glob, json, os
for path in sorted(glob.glob(os.environ.get("OUT", "/tmp/gpu_bench") + "/*.json")):
  res = json.load(open(path))
  if "roofline" not in res:       # the sweep benchmark: its own table, in sweep.log
    continue
  lim = res["roofline"]["limits"]
  print(f"{res['model']}: {res['flops_per_model_step'] / 1e9:.2f} GFLOP/model-step; peak "
        + ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in lim["peak_flops_per_s"].items())
        + f"; copy {lim['bandwidth_bytes_per_s'] / 1e12:.3g} TB/s")
  for r in res["arms"]:
    f = r["roofline"]
    vs = r.get("vs_naive_jax")
    print(f"  {r['arm']:9s} S={r['seeds']:<3d} {r['layout'] or '-':16s} {r['dtype']:8s} "
          f"{r['model_steps_per_s']:10.1f} model-steps/s  vs naive {vs if vs is None else round(vs, 2)}"
          f"  floor {1e3 * f['floor_s']:.4f} ms ({f['bound']}), {100 * f['fraction_of_floor']:.1f}% of it")
EOF
