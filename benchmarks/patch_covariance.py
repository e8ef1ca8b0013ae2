r"""Patch covariance: rl_align.covariance.patch_covariance vs a naive sklearn + np.cov baseline.

    python -m benchmarks.patch_covariance --n=10000,50000 --k=3,5 --json=/tmp/patch_cov.json

Random float32 images [N, 32, 32, 3].  Each arm runs in its own child process, which reports its
wall time and its peak resident memory: VmHWM, reset (/proc/self/clear_refs) after imports and
data generation, so "net" = the arm's own peak above what it held before (interpreter, imports,
the images); "peak" includes them (ru_maxrss where the reset is unavailable).
  ours:  covariance.patch_covariance(x, k) (streamed, float64 totals; best of --repeats runs).
  naive: sklearn.feature_extraction.image.extract_patches_2d per image, np.concatenate, np.cov.
         It holds every patch (float32) plus np.cov's float64 copy, 12-15 bytes per
         patch coordinate: 50k images at k=5 would need ~35-45 GB.  Where the estimate exceeds
         --naive_max_gb it runs on the largest N that fits and its time and net memory are
         scaled linearly to N (marked "extrapolated_from").
The fp32 matmul peak (numpy, 4096^2, both cores) is measured in the same run; the Gram rate is
reported as nominal 2*P*d^2 flops per image (what an im2col Gram would execute) and as the flops
the chosen method actually executed, both per second of ours' end-to-end time.
"""

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import output

H = W = 32
C = 3
_NAIVE_BYTES_PER_COORD = 16  # measured 12-15.5: float32 patches + np.cov's float64 copy


def _images(n: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((n, H, W, C), dtype=np.float32)


def _status_bytes(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise KeyError(field)


def _reset_peak_rss() -> bool:
  """Resets this process's peak RSS (VmHWM) so that it measures the arm alone (Linux >= 4.0)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _peak_rss_bytes() -> int:
  try:
    return _status_bytes("VmHWM")
  except (OSError, KeyError):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _naive(x: np.ndarray, k: int) -> np.ndarray:
  from sklearn.feature_extraction import image  # pylint: disable=g-import-not-at-top

  patches = np.concatenate(
    [image.extract_patches_2d(im, (k, k)).reshape(-1, k * k * C) for im in x]
  )
  return np.cov(patches, rowvar=False)


def _ours(x: np.ndarray, k: int, batch_size: int) -> np.ndarray:
  from rl_align import covariance  # pylint: disable=g-import-not-at-top

  return covariance.patch_covariance(x, k, batch_size=batch_size)[1]


def child(arm: str, n: int, k: int, seed: int, repeats: int, batch_size: int, out: str) -> dict:
  """Runs one arm in this (child) process; returns time and memory, saves cov to `out`."""
  if arm == "ours":
    pass  # pylint: disable=g-import-not-at-top,unused-import
  else:
    pass  # pylint: disable=g-import-not-at-top,unused-import
  x = _images(n, seed)
  gc.collect()
  reset = _reset_peak_rss()
  before = _status_bytes("VmRSS") if reset else _peak_rss_bytes()
  times = []
  for _ in range(repeats if arm == "ours" else 1):
    t0 = time.perf_counter()
    cov = _ours(x, k, batch_size) if arm == "ours" else _naive(x, k)
    times.append(time.perf_counter() - t0)
  np.save(out, cov)
  peak = _peak_rss_bytes()
  return {
    "time_s": min(times),
    "times_s": times,
    "peak_rss_gb": peak / 1e9,
    "net_rss_gb": (peak - before) / 1e9,
    "before_rss_gb": before / 1e9,
    "peak_is_arm_only": reset,
  }


def _run_child(arm, n, k, args) -> tuple:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "cov.npy")
    cmd = [
      sys.executable,
      "-m",
      "benchmarks.patch_covariance",
      f"--_child={arm}",
      f"--n={n}",
      f"--k={k}",
      f"--seed={args.seed}",
      f"--repeats={args.repeats}",
      f"--batch_size={args.batch_size}",
      f"--_out={out}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
      raise RuntimeError(f"child {arm} n={n} k={k} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out)


def measure_peak_gflops(size: int = 4096, repeats: int = 3) -> float:
  """Best-of float32 numpy matmul rate (GFLOP/s) on this machine, all BLAS threads."""
  rng = np.random.default_rng(0)
  a = rng.standard_normal((size, size), dtype=np.float32)
  b = rng.standard_normal((size, size), dtype=np.float32)
  a @ b
  best = min(_timed(lambda: a @ b) for _ in range(repeats))
  return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def executed_flops_per_image(k: int, method: str) -> int:
  """Multiply-adds x 2 that `method` runs per image (band: row r vs rows r..r+k-1)."""
  if method == "band":
    return sum(2 * (W * C) * min(k, H - r) * (W * C) for r in range(H))
  return nominal_flops_per_image(k)


def nominal_flops_per_image(k: int) -> int:
  p, d = (H - k + 1) * (W - k + 1), k * k * C
  return 2 * p * d * d


def naive_n(ns, k: int, max_gb: float) -> int:
  """The largest N of `ns` whose naive run fits in max_gb, else the largest multiple of 500 that
  fits (0: none)."""
  per_image = (H - k + 1) * (W - k + 1) * k * k * C * _NAIVE_BYTES_PER_COORD
  fits = [n for n in ns if n * per_image <= max_gb * 1e9]
  return max(fits) if fits else int(max_gb * 1e9 // per_image // 500 * 500)


def bench_one(n: int, k: int, args, peak: float, naive_run) -> dict:
  """One (N, k) row; naive_run = (n_naive, result, cov) of the naive arm for this k, or None."""
  from rl_align import covariance  # pylint: disable=g-import-not-at-top

  ours, cov_ours = _run_child("ours", n, k, args)
  data_gb = n * H * W * C * 4 / 1e9
  row = {"n": n, "k": k, "d": k * k * C, "ours": ours}
  if naive_run:
    n_naive, naive, cov_naive = naive_run
    scale = n / n_naive
    row["naive"] = dict(naive, measured_n=n_naive)
    if n_naive != n:
      row["naive"].update(
        time_s=naive["time_s"] * scale,
        net_rss_gb=naive["net_rss_gb"] * scale,
        peak_rss_gb=naive["before_rss_gb"]
        - n_naive / n * data_gb
        + data_gb
        + naive["net_rss_gb"] * scale,
        extrapolated_from=n_naive,
        measured_time_s=naive["time_s"],
        measured_net_rss_gb=naive["net_rss_gb"],
      )
    else:
      row["max_rel_diff_vs_naive"] = float(
        np.abs(cov_ours - cov_naive).max() / np.abs(cov_naive).max()
      )
    row["speedup"] = row["naive"]["time_s"] / ours["time_s"]
    row["memory_ratio_net"] = row["naive"]["net_rss_gb"] / max(ours["net_rss_gb"], 1e-9)
  method = covariance.resolve_method("auto", (H, W, C), k)
  nominal = n * nominal_flops_per_image(k) / ours["time_s"] / 1e9
  executed = n * executed_flops_per_image(k, method) / ours["time_s"] / 1e9
  row.update(
    method=method,
    nominal_gflops=nominal,
    executed_gflops=executed,
    nominal_fraction_of_peak=nominal / peak,
    executed_fraction_of_peak=executed / peak,
  )
  return row


def _check_small(k: int, seed: int) -> float:
  """Relative max difference of ours vs naive on 300 images (both in this process)."""
  x = _images(300, seed + 1)
  ref = _naive(x, k)
  return float(np.abs(_ours(x, k, 128) - ref).max() / np.abs(ref).max())


def table(rows, peak) -> str:
  lines = [
    f"fp32 matmul peak measured in this run: {peak:.0f} GFLOP/s",
    "| N | k | ours s | ours peak RSS GB (net) | naive s | naive peak RSS GB (net) | "
    "speed-up | Gram GFLOP/s nominal (% peak) | executed (% peak) |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    o, nv = r["ours"], r.get("naive")
    note = (
      f" (extrapolated from N={nv['extrapolated_from']})"
      if nv and "extrapolated_from" in nv
      else ""
    )
    naive_t = f"{nv['time_s']:.2f}{note}" if nv else "skipped"
    naive_m = f"{nv['peak_rss_gb']:.2f} ({nv['net_rss_gb']:.2f})" if nv else "skipped"
    speed = f"{r['speedup']:.0f}x" if nv else "-"
    lines.append(
      f"| {r['n']} | {r['k']} | {o['time_s']:.3f} | {o['peak_rss_gb']:.2f} "
      f"({o['net_rss_gb']:.3f}) | {naive_t} | {naive_m} | {speed} | "
      f"{r['nominal_gflops']:.0f} ({100 * r['nominal_fraction_of_peak']:.0f}%) | "
      f"{r['executed_gflops']:.0f} ({100 * r['executed_fraction_of_peak']:.0f}%) |"
    )
  return "\n".join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--n", default="10000,50000", help="comma-separated image counts")
  p.add_argument("--k", default="3,5", help="comma-separated patch sizes")
  p.add_argument("--json", default="", help="write the results here")
  p.add_argument(
    "--naive_max_gb",
    type=float,
    default=6.0,
    help="largest estimated naive memory to run; beyond it scale from a smaller N",
  )
  p.add_argument("--repeats", type=int, default=2, help="best-of repeats of ours")
  p.add_argument("--batch_size", type=int, default=512)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--_child", default="", help=argparse.SUPPRESS)
  p.add_argument("--_out", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  arm, out_path = getattr(args, "_child"), getattr(args, "_out")
  if arm:
    res = child(arm, int(args.n), int(args.k), args.seed, args.repeats, args.batch_size, out_path)
    print(json.dumps(res))
    return res
  ns = [int(v) for v in args.n.split(",")]
  ks = [int(v) for v in args.k.split(",")]
  load = os.getloadavg()
  peak_before = measure_peak_gflops()
  checks = {f"k={k}": _check_small(k, args.seed) for k in ks}
  rows = []
  for k in ks:
    n_naive = naive_n(ns, k, args.naive_max_gb)
    naive_run = (n_naive, *_run_child("naive", n_naive, k, args)) if n_naive >= 500 else None
    rows += [bench_one(n, k, args, peak_before, naive_run) for n in ns]
  peak_after = measure_peak_gflops()
  peak = max(peak_before, peak_after)
  for r in rows:
    r["nominal_fraction_of_peak"] = r["nominal_gflops"] / peak
    r["executed_fraction_of_peak"] = r["executed_gflops"] / peak
  out = {
    "command": "python -m benchmarks.patch_covariance " + " ".join(sys.argv[1:]),
    "image_shape": [H, W, C],
    "dtype": "float32",
    "cpu_count": os.cpu_count(),
    "loadavg_at_start": load,
    "peak_gflops_fp32": peak,
    "peak_gflops_before_after": [peak_before, peak_after],
    "max_rel_diff_vs_naive_300_images": checks,
    "rows": rows,
  }
  print(table(rows, peak))
  print("ours vs naive on 300 images, max |diff| / max |cov|:", checks)
  output.emit(out, args.json, echo=False)
  return out


if __name__ == "__main__":
  main()
